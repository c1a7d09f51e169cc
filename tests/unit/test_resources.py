"""Shipped files: catalogs, model and starter jobs come from the package, and `eo-fusion init`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eo_fusion.catalogs.providers import catalog_names, load_catalog_spec
from eo_fusion.cli import main
from eo_fusion.config import load_job
from eo_fusion.errors import EXIT_BAD_INPUT, BadInputError
from eo_fusion.grid import aoi_geometry
from eo_fusion.resources import BUNDLED_MODEL_DIR, CATALOGS_DIR, JOBS_DIR, copy_starter_jobs


def test_shipped_folders_are_inside_the_package():
    import eo_fusion

    package = Path(eo_fusion.__file__).parent
    for folder in (CATALOGS_DIR, BUNDLED_MODEL_DIR, JOBS_DIR):
        assert folder.parent == package / "data" and folder.is_dir(), folder
    assert (BUNDLED_MODEL_DIR / "model_card.json").is_file()


def test_catalogs_data_is_the_top_level_catalogs_folder(repo_root):
    # One copy of the definitions and the sample catalog: the package's view of catalogs/.
    assert CATALOGS_DIR.resolve() == (repo_root / "catalogs").resolve()
    assert catalog_names() == sorted(p.stem for p in (repo_root / "catalogs").glob("*.yaml"))
    spec = load_catalog_spec("sample")
    assert spec.path == (repo_root / "catalogs" / "sample" / "stac" / "catalog.json").resolve()


def test_starter_job_is_the_demo_job_with_an_inline_aoi(repo_root):
    """`eo-fusion init`'s job maps what `make demo` maps: only where the AOI and output are
    written differs (the starter job needs no file beside it)."""
    demo = load_job(repo_root / "pipelines" / "sample_landcover.yaml")
    starter = load_job(JOBS_DIR / "sample_landcover.yaml")
    a = aoi_geometry(demo.aoi.geojson)
    b = aoi_geometry(starter.aoi.bbox, starter.aoi.crs)
    assert a.crs == b.crs and a.geom.equals(b.geom), "the starter AOI must be the demo AOI"
    assert starter.output.dir == JOBS_DIR / "out" / "sample-landcover"
    same = {"aoi", "output"}
    assert starter.model_dump(exclude=same) == demo.model_dump(exclude=same)
    assert starter.output.model_dump(exclude={"dir"}) == demo.output.model_dump(exclude={"dir"})


def test_init_writes_the_starter_jobs_and_never_overwrites(tmp_path, capsys):
    target = tmp_path / "maps"
    assert main(["init", str(target)]) == 0
    job = target / "sample_landcover.yaml"
    assert job.read_bytes() == (JOBS_DIR / "sample_landcover.yaml").read_bytes()
    assert load_job(job).output.dir == target / "out" / "sample-landcover"
    assert f"eo-fusion map {job}" in capsys.readouterr().err

    job.write_text("# edited by the user\n")
    assert main(["init", str(target)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "sample_landcover.yaml already exist" in err and "--force" in err
    assert job.read_text() == "# edited by the user\n"
    assert main(["init", str(target), "--force"]) == 0
    assert yaml.safe_load(job.read_text())["catalog"] == "sample"


def test_init_refuses_a_file_as_folder(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(BadInputError, match="is a file, not a folder"):
        copy_starter_jobs(tmp_path / "f")


def test_catalog_list_names_every_catalog(capsys):
    assert main(["catalog", "list"]) == 0
    out = capsys.readouterr().out
    for name in catalog_names():
        assert name in out
