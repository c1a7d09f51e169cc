from __future__ import annotations

from pathlib import Path

import pytest

from eo_fusion.config import JobSpec, load_job, spec_hash
from eo_fusion.errors import ConfigError

JOB = """
name: t
aoi: {bbox: [14.5, 45.8, 14.6, 45.9]}
modalities:
  s2-l1c: {max_cloud: 20}
output: {dir: results}
"""


def test_paths_resolve_relative_to_the_config_file(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "job.yaml"
    path.write_text(JOB)
    job = load_job(path)
    assert job.output.dir == tmp_path / "sub" / "results"


def test_misspelt_key_is_named_with_valid_keys(tmp_path: Path):
    path = tmp_path / "job.yaml"
    path.write_text(JOB.replace("max_cloud", "max_clouds"))
    with pytest.raises(ConfigError) as exc:
        load_job(path)
    msg = str(exc.value)
    assert "modalities.s2-l1c.max_clouds" in msg
    assert "did you mean 'max_cloud'" in msg
    assert "valid keys here:" in msg and "bands" in msg


def test_not_a_mapping(tmp_path: Path):
    path = tmp_path / "job.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_job(path)


def test_yaml_is_loaded_safely(tmp_path: Path):
    path = tmp_path / "job.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_job(path)


def test_aoi_needs_exactly_one_geometry(tmp_path: Path):
    path = tmp_path / "job.yaml"
    path.write_text(JOB.replace("{bbox: [14.5, 45.8, 14.6, 45.9]}", "{}"))
    with pytest.raises(ConfigError, match="exactly one of bbox"):
        load_job(path)


def test_spec_hash_changes_with_content(tmp_path: Path):
    a = JobSpec.model_validate({"name": "a", "aoi": {"bbox": [0, 0, 1, 1]}, "modalities": {}})
    b = JobSpec.model_validate({"name": "b", "aoi": {"bbox": [0, 0, 1, 1]}, "modalities": {}})
    assert spec_hash(a) != spec_hash(b)
    assert spec_hash(a) == spec_hash(a.model_copy())


def test_portable_dump_strips_the_project_root():
    from eo_fusion.config import PROJECT_ROOT, portable_dump

    job = JobSpec.model_validate(
        {"name": "a", "aoi": {"bbox": [0, 0, 1, 1]}, "modalities": {}},
        context={"base_dir": PROJECT_ROOT / "pipelines"},
    )
    assert str(job.output.dir).startswith(str(PROJECT_ROOT))
    assert portable_dump(job)["output"]["dir"] == "pipelines/out"
