"""The modality registry: lookups, roles, options defaults, and the job-time refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from eo_fusion import modalities as reg
from eo_fusion.catalogs.normalize import MODALITIES, guess_modality
from eo_fusion.config import JobSpec, ModalitySpec, load_job, modality_spec, spec_hash
from eo_fusion.errors import ConfigError
from eo_fusion.models.config import load_finetune_spec, load_pretrain_spec
from eo_fusion.stack import loader_for


def test_every_name_has_one_definition_and_normalisation_uses_them():
    names = [n for d in reg.REGISTRY for n in d.names]
    assert len(names) == len(set(names))
    assert set(MODALITIES) == set(names)
    assert {
        "s2-l2a", "s2-l1c", "s1-grd", "s1-rtc", "dem", "dsm", "dtm",
        "aerial", "lidar", "osm", "labels", "ndvi", "landsat-c2-l2",
    } == set(names)  # fmt: skip
    assert reg.get_modality("landsat-c2-l2").family == "landsat"
    assert reg.get_modality("s2-l1c").family == "s2"
    assert reg.get_modality("dtm").family == "elevation"
    assert reg.find_modality("landsat") is None


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown modality 's1grd' \(did you mean 's1-grd'\?\)"):
        reg.get_modality("s1grd")


def test_loaders_and_roles_come_from_the_registry():
    from eo_fusion.sources.elevation import load_elevation
    from eo_fusion.sources.raster import load_raster
    from eo_fusion.sources.s1 import load_s1
    from eo_fusion.sources.s2 import load_s2

    assert loader_for("s2-l2a") is load_s2 and loader_for("s1-rtc") is load_s1
    assert loader_for("lidar") is load_elevation and loader_for("ndvi") is load_raster
    with pytest.raises(ConfigError, match="unknown modality"):
        loader_for("sentinel2")
    roles = {n: reg.coreg_role(n) for n in reg.modality_names()}
    assert roles["s2-l1c"] == roles["aerial"] == "optical"
    assert roles["s1-grd"] == "sar" and roles["dem"] == roles["osm"] == "none"


def test_collection_hints_come_from_the_registry():
    import pystac

    for d in reg.REGISTRY:
        for prefix, name in d.collections:
            item = pystac.Item(
                f"x-{prefix}", None, None, pystac.utils.str_to_datetime("2020-01-01"), {}
            )
            item.collection_id = prefix
            assert guess_modality(item) == name


def test_options_defaults_live_in_the_models():
    s2 = reg.S2Options()
    assert (s2.cloud_threshold, s2.cloud_average_over, s2.cloud_dilation) == (0.4, 4, 2)
    assert (s2.shadow_search_px, s2.mask_snow, s2.min_valid_fraction) == (30, False, 0.0)
    s1 = reg.S1Options()
    assert (s1.units, s1.speckle, s1.speckle_window, s1.orbit, s1.coreg) == (
        "dB", "none", 5, "any", "auto",
    )  # fmt: skip
    assert reg.ElevationOptions().fill_distance_px == 100.0
    osm = reg.OSMOptions()
    assert osm.supersample == 4 and osm.widths.roads_major == 12.0 and osm.widths.waterway == 5.0
    assert reg.S2Options.applicable("s2-l2a") == ["coreg", "mask_snow", "min_valid_fraction"]
    assert "cloud_threshold" in reg.S2Options.applicable("s2-l1c")
    assert "mask_snow" not in reg.S2Options.applicable("s2-l1c")


def _job(modalities: dict) -> JobSpec:
    return JobSpec.model_validate(
        {"name": "t", "aoi": {"bbox": [0, 0, 1, 1]}, "modalities": modalities}
    )


def test_job_options_become_typed():
    job = _job({"s1-grd": {"options": {"speckle": "lee"}}, "s2-l1c": {}, "osm": {}})
    s1 = job.modalities["s1-grd"].options
    assert isinstance(s1, reg.S1Options) and s1.speckle == "lee" and s1.units == "dB"
    assert isinstance(job.modalities["s2-l1c"].options, reg.S2Options)
    assert isinstance(job.modalities["osm"].options, reg.OSMOptions)
    # What the user wrote is what is dumped and hashed (run ids do not depend on defaults).
    dumped = job.model_dump(mode="json")["modalities"]
    assert dumped["s1-grd"]["options"] == {"speckle": "lee"} and dumped["s2-l1c"]["options"] == {}
    same = _job({"s1-grd": {"options": {"speckle": "lee"}}, "s2-l1c": {}, "osm": {}})
    assert spec_hash(job) == spec_hash(same)
    assert spec_hash(job) != spec_hash(_job({"s1-grd": {}, "s2-l1c": {}, "osm": {}}))


@pytest.mark.parametrize(
    ("modalities", "expected"),
    [
        ({"s1-grd": {"options": {"speckel": "lee"}}}, ["'modalities.s1-grd.options.speckel'",
                                                      "did you mean 'speckle'", "units"]),
        ({"s2-l2a": {"options": {"speckle": "lee"}}}, ["does not apply to s2-l2a",
                                                      "option of s1-grd, s1-rtc", "mask_snow"]),
        ({"s2-l2a": {"options": {"cloud_threshold": 0.3}}}, ["option of s2-l1c"]),
        ({"s2-l1c": {"options": {"mask_snow": True}}}, ["option of s2-l2a"]),
        ({"dem": {"options": {"coreg": "off"}}}, ["'coreg' does not apply to dem"]),
        ({"s2-l1c": {"aggregate": "monthly"}}, ["needs mode: timeseries"]),
        ({"aerial": {"mode": "timeseries", "aggregate": "monthly"}}, ["aggregate does not apply"]),
        ({"dem": {"mode": "timeseries"}}, ["'modalities.dem.mode'", "valid modes: composite"]),
        ({"dem": {"max_cloud": 20}}, ["max_cloud does not apply to dem"]),
        ({"s2-l2": {}}, ["unknown modality 's2-l2'", "did you mean 's2-l2a'"]),
        ({"s2-l2a": {"bands": ["s1:VV"]}}, ["not s2 bands", "s2:B04"]),
        ({"osm": {"options": {"widths": {"roads_majr": 3}}}}, ["did you mean 'roads_major'"]),
        ({"s1-grd": {"options": {"speckle_window": 4}}}, ["even"]),
        ({"s2-l1c": {"options": {"cloud_threshold": 1.5}}}, ["cloud_threshold"]),
    ],
)  # fmt: skip
def test_job_refuses_options_that_do_not_apply(tmp_path: Path, modalities, expected):
    import yaml

    path = tmp_path / "job.yaml"
    path.write_text(
        yaml.safe_dump({"name": "t", "aoi": {"bbox": [0, 0, 1, 1]}, "modalities": modalities})
    )
    with pytest.raises(ConfigError) as exc:
        load_job(path)
    assert exc.value.exit_code == 2
    for text in expected:
        assert text in str(exc.value), str(exc.value)


def test_specs_built_in_code_get_the_same_checks():
    assert isinstance(modality_spec("dem").options, reg.ElevationOptions)
    typed = modality_spec("s1-grd", ModalitySpec(options={"units": "linear"}))
    assert isinstance(typed.options, reg.S1Options) and typed.options.units == "linear"
    with pytest.raises(ConfigError, match="did you mean 'units'"):
        modality_spec("s1-grd", {"options": {"unit": "linear"}})
    # A reader given a plain dict validates it as strictly.
    with pytest.raises(ConfigError, match="speckel"):
        reg.S1Options.of({"speckel": "lee"})
    assert reg.S1Options.of({"speckle": "lee"}).speckle == "lee"
    with pytest.raises(ConfigError, match="S2Options"):
        reg.S1Options.of(reg.S2Options())


def test_shipped_job_and_training_files_still_load(repo_root: Path):
    pipelines = repo_root / "pipelines"
    load_job(pipelines / "sample_landcover.yaml")
    load_job(pipelines / "crop_mapping.yaml")
    load_pretrain_spec(pipelines / "pretrain_sample.yaml")
    for name in ("finetune_crops_sample", "finetune_landcover_sample"):
        load_finetune_spec(pipelines / f"{name}.yaml")
