"""COG products (strict validation, legend, RAT, mode overviews) and STAC metadata."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.enums import ColorInterp

from eo_fusion.errors import ProductError
from eo_fusion.pipeline.legend import ClassInfo
from eo_fusion.pipeline.products import read_rat, validate_cog, write_cog
from eo_fusion.pipeline.stac_products import (
    ProductFile,
    build_collection,
    build_items,
    machine_name,
    save_collection,
    validate_stac,
    validate_stac_files,
)

GRID = GeoBox((256, 192), Affine(10, 0, 465000, 0, -10, 5080000), "EPSG:32633")
CLASSES = (
    ClassInfo(1, "Cultivated land", "#ffff00"),
    ClassInfo(3, "Forest", "#054907"),
    ClassInfo(7, "Water & wetlands", "#0000ff"),
)


def _classes_raster(path):
    # 2x2 blocks of [1, 1, 1, 7]: the mode is 1, an average would invent class 2 or 3.
    block = np.array([[1, 1], [1, 7]], np.uint8)
    data = np.tile(block, (GRID.shape.y // 2, GRID.shape.x // 2))
    data[:8, :8] = 255  # nodata corner
    profile = {
        "driver": "GTiff", "width": GRID.shape.x, "height": GRID.shape.y, "count": 1,
        "dtype": "uint8", "crs": GRID.crs.to_wkt(), "transform": GRID.transform, "nodata": 255,
        "tiled": True, "blockxsize": 64, "blockysize": 64,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return data


def test_class_cog_is_valid_with_legend_rat_and_mode_overviews(tmp_path):
    src = tmp_path / "mosaic.tif"
    data = _classes_raster(src)
    dst = write_cog(src, tmp_path / "map.tif", kind="classes", classes=CLASSES, blocksize=64,
                    tags={"EO_FUSION_RUN_ID": "r1"})  # fmt: skip
    assert validate_cog(dst) == (True, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "map.tif",
        "map.tif.aux.xml",
        "mosaic.tif",
    ]  # no temp files left
    with rasterio.open(dst) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
        assert ds.colorinterp[0] == ColorInterp.palette
        cmap = ds.colormap(1)
        assert cmap[3][:3] == (5, 73, 7) and cmap[255][3] == 0
        tags = ds.tags(1)
        assert json.loads(tags["CLASS_NAMES"]) == ["Cultivated land", "Forest", "Water & wetlands"]
        assert json.loads(tags["CLASS_VALUES"]) == [1, 3, 7]
        assert ds.tags()["EO_FUSION_RUN_ID"] == "r1"
        assert ds.tags()["OVERVIEW_RESAMPLING"] == "MODE"
        assert ds.overviews(1) == [2, 4]
        np.testing.assert_array_equal(ds.read(1), data)
    with rasterio.open(dst, OVERVIEW_LEVEL=0) as ov:
        level0 = ov.read(1)
    assert set(np.unique(level0)) == {1, 255}  # mode of [1, 1, 1, 7]; never an invented class
    rows = read_rat(tmp_path / "map.tif.aux.xml")
    assert [(r["Value"], r["Class_Name"]) for r in rows] == [
        ("1", "Cultivated land"), ("3", "Forest"), ("7", "Water & wetlands")
    ]  # fmt: skip
    assert rows[1]["Red"] == "5" and rows[1]["Green"] == "73"


def test_failed_validation_leaves_previous_product_untouched(tmp_path):
    src = tmp_path / "mosaic.tif"
    _classes_raster(src)
    dst = tmp_path / "map.tif"
    dst.write_bytes(b"previous product")
    with pytest.raises(ProductError, match="unknown product kind"):
        write_cog(src, dst, kind="bogus", classes=CLASSES)
    assert dst.read_bytes() == b"previous product"


def _items(tmp_path):
    src = tmp_path / "mosaic.tif"
    _classes_raster(src)
    cog = write_cog(src, tmp_path / "map_classes.tif", kind="classes", classes=CLASSES,
                    blocksize=64)  # fmt: skip
    prov = {"input_items": {"s2-l1c": ["a", "b"]}, "model_card_sha256": "0" * 64,
            "code_version": "0.1.0", "job_config_hash": "f" * 64}  # fmt: skip
    items = build_items(
        [ProductFile("classes", cog)],
        run_id="job-123",
        grid=GRID,
        footprint=GRID.extent,
        window=(datetime(2015, 7, 1, tzinfo=UTC), datetime(2015, 9, 30, tzinfo=UTC)),
        classes=CLASSES,
        provenance=prov,
        base_dir=tmp_path,
    )
    return cog, items


def test_stac_item_has_extensions_checksum_and_provenance(tmp_path):
    cog, items = _items(tmp_path)
    doc = items[0].to_dict()
    uris = validate_stac(doc)
    assert any("projection" in u for u in uris) and any("classification" in u for u in uris)
    props = doc["properties"]
    assert props["proj:code"] == "EPSG:32633" and props["proj:shape"] == [256, 192]
    assert props["proj:transform"] == [10.0, 0.0, 465000.0, 0.0, -10.0, 5080000.0]
    assert props["eo_fusion:input_items"] == {"s2-l1c": ["a", "b"]}
    assert props["eo_fusion:job_config_hash"] == "f" * 64
    asset = doc["assets"]["data"]
    assert asset["file:checksum"] == "1220" + hashlib.sha256(cog.read_bytes()).hexdigest()
    assert asset["raster:bands"][0]["nodata"] == 255
    names = [c["name"] for c in asset["classification:classes"]]
    assert names == ["Cultivated_land", "Forest", "Water_wetlands", "nodata"]
    assert asset["classification:classes"][-1]["nodata"] is True


@pytest.mark.parametrize(
    ("path", "value", "schema"),
    [
        (("assets", "data", "classification:classes", 0, "color_hint"), "#ff0000",
         "classification"),
        (("properties", "proj:shape"), [256], "projection"),
        (("assets", "data", "raster:bands", 0, "data_type"), "byte", "raster"),
        (("assets", "data", "file:checksum"), "not-hex", "file"),
        (("properties", "datetime"), "yesterday", "item.json"),
    ],
)  # fmt: skip
def test_stac_schema_validation_catches_errors(tmp_path, path, value, schema):
    _, items = _items(tmp_path)
    doc = copy.deepcopy(items[0].to_dict())
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ProductError, match=schema):
        validate_stac(doc)


def test_collection_is_saved_self_contained_and_valid(tmp_path):
    _, items = _items(tmp_path)
    collection = build_collection(items, run_id="job-123", description="test run")
    paths = save_collection(collection, tmp_path / "stac")
    validate_stac_files(paths)
    item_doc = json.loads(paths[1].read_text())
    href = item_doc["assets"]["data"]["href"]
    assert not href.startswith("/") and (paths[1].parent / href).resolve() == (
        tmp_path / "map_classes.tif"
    )


def test_machine_names():
    assert machine_name("Water & wetlands") == "Water_wetlands"
    assert machine_name("  ") == "class"
