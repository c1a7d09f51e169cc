"""Benchmark adapters on tiny files written in the published PASTIS and FLAIR-HUB layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from odc.geo.geobox import GeoBox
from rasterio.transform import from_bounds

from eo_fusion.errors import BadInputError
from eo_fusion.models.config import DataSpec
from eo_fusion.models.predict import modality_vars
from eo_fusion.testing.fake_reader import write_test_raster
from eo_fusion.train.adapters import PASTIS_S2_KEYS, flair_hub_stacks, pastis_stacks
from eo_fusion.train.data import scene_from_stack
from eo_fusion.train.sources import load_scenes


@pytest.fixture()
def pastis_root(tmp_path):
    base = tmp_path / "PASTIS-R"
    for sub in ("DATA_S2", "DATA_S1A", "ANNOTATIONS"):
        (base / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    feats = []
    for i, (patch, fold) in enumerate(((10000, 1), (10001, 2))):
        s2 = rng.integers(1, 5000, size=(3, 10, 16, 16), dtype=np.int16)
        s2[1, :, :2, :2] = 0  # no data
        np.save(base / "DATA_S2" / f"S2_{patch}.npy", s2)
        np.save(
            base / "DATA_S1A" / f"S1A_{patch}.npy",
            rng.normal(-12, 3, (2, 3, 16, 16)).astype("float32"),
        )
        target = np.zeros((3, 16, 16), dtype=np.uint8)
        target[0] = rng.integers(0, 20, size=(16, 16))
        np.save(base / "ANNOTATIONS" / f"TARGET_{patch}.npy", target)
        x0 = 650000 + 1280 * i
        feats.append({
            "type": "Feature",
            "properties": {
                "ID_PATCH": patch, "Fold": fold, "TILE": "t31tfm",
                "dates-S2": {"0": 20180924, "1": 20181029, "2": 20181113},
                "dates-S1A": {"0": 20180920, "1": 20181002},
            },
            "geometry": {"type": "Polygon", "coordinates": [[
                [x0, 6800000], [x0 + 160, 6800000], [x0 + 160, 6800160], [x0, 6800160],
                [x0, 6800000],
            ]]},
        })  # fmt: skip
    (base / "metadata.geojson").write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2154"}},
        "features": feats,
    }))  # fmt: skip
    return tmp_path


def test_pastis_patches_become_stacks(pastis_root):
    stacks = list(pastis_stacks(pastis_root, s1=True))
    assert len(stacks) == 2
    ds = stacks[0]
    s2, valid = modality_vars(ds, "s2-l2a")
    assert not valid.values[1, :2, :2].any()
    assert s2.dims == ("time", "band", "y", "x")
    assert list(s2["band"].values) == list(PASTIS_S2_KEYS)
    assert str(s2["time"].values[1])[:10] == "2018-10-29"
    assert np.isnan(s2.values[1, :, :2, :2]).all()
    assert 0 < np.nanmax(s2.values) <= 0.5  # reflectance, not DN
    assert ds["s1-grd"].shape == (2, 2, 16, 16)
    raw = np.load(pastis_root / "PASTIS-R" / "ANNOTATIONS" / "TARGET_10000.npy")[0]
    assert np.array_equal(ds["labels"].values[0], raw)
    assert ds["x"].values[0] == pytest.approx(650005.0)
    only_fold2 = list(pastis_stacks(pastis_root, folds=[2]))
    assert [d.attrs["source_items"] for d in only_fold2] == [["PASTIS-10001"]]


def test_pastis_through_a_training_config(pastis_root):
    scenes = load_scenes(DataSpec(pastis={"root": pastis_root, "folds": [1]}), progress=False)
    assert len(scenes) == 1
    assert scenes[0].labels.shape == (16, 16)
    assert scenes[0].times["s2-l2a"].shape == (3,)


def _tif(path, data, bounds, nodata=None):
    _, h, w = data.shape
    write_test_raster(
        path, data, GeoBox((h, w), from_bounds(*bounds, w, h), "EPSG:2154"), nodata=nodata
    )


def test_flair_hub_folders_become_stacks(tmp_path):
    rng = np.random.default_rng(1)
    b = (700000.0, 6600000.0, 700006.4, 6600006.4)  # 32 px of 0.2 m
    roi = "UU-S2-4_1-1"
    _tif(tmp_path / "D004-2021_AERIAL_RGBI" / "UU" / f"AERIAL_RGBI_{roi}.tif",
         rng.integers(0, 255, (4, 32, 32), dtype=np.uint8), b)  # fmt: skip
    _tif(tmp_path / "D004-2021_DEM_ELEV" / "UU" / f"DEM_ELEV_{roi}.tif",
         rng.normal(100, 5, (2, 32, 32)).astype("float32"), b)  # fmt: skip
    s2 = rng.integers(1, 4000, (2 * 10, 4, 4)).astype("uint16")
    s2_path = tmp_path / "D004-2021_SENTINEL2_TS" / "UU" / f"SENTINEL2_TS_{roi}.tif"
    _tif(s2_path, s2, b, nodata=0)
    s2_path.with_name(s2_path.stem + "_dates.txt").write_text("20210405\n20210612\n")
    lab = rng.integers(1, 20, (1, 32, 32), dtype=np.uint8)
    _tif(tmp_path / "D004-2021_AERIAL_LABEL-COSIA" / "UU" / f"AERIAL_LABEL-COSIA_{roi}.tif", lab, b)
    (ds,) = list(flair_hub_stacks(tmp_path))
    assert ds["aerial"].shape == (4, 32, 32)
    assert float(ds["aerial"].max()) <= 1.0
    assert list(ds["dem:band"].values) == ["elevation:dsm", "elevation:dtm"]
    assert ds["s2-l2a"].shape == (2, 10, 32, 32)
    assert str(ds["s2-l2a:time"].values[1])[:10] == "2021-06-12"
    assert np.array_equal(ds["labels-landcover"].values[0], lab[0])
    sc = scene_from_stack(ds, "flair", labels="labels-landcover")
    assert set(sc.arrays) == {"aerial", "dem", "s2-l2a"}
    with pytest.raises(BadInputError, match="FLAIR-HUB"):
        list(flair_hub_stacks(tmp_path / "D004-2021_DEM_ELEV"))
