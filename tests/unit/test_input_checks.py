"""The truth about a tile's inputs: skipped items, cloudy dates, partial inputs, void values."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime

import numpy as np
import shapely.geometry
import xarray as xr

from eo_fusion.bands import get_band
from eo_fusion.catalogs.items import BandAsset, NormalizedItem
from eo_fusion.config import JobSpec
from eo_fusion.pipeline.input_checks import issues, tile_input_report
from eo_fusion.pipeline.plan import plan_run

CRS = "EPSG:32633"


def _item(item_id, modality, key, day, nodata=None):
    spec = get_band(key)
    if nodata is not None:
        spec = dataclasses.replace(spec, nodata=nodata)
    band = BandAsset(key=key, asset_key=key.split(":")[1], href=f"/nowhere/{item_id}.tif",
                     band_index=1, spec=spec)  # fmt: skip
    return NormalizedItem(
        id=item_id, collection="t", modality=modality,
        datetime=datetime(2020, 6, day, 10, tzinfo=UTC), bbox=(14.0, 45.0, 15.0, 46.0),
        geometry=shapely.geometry.mapping(shapely.geometry.box(14.0, 45.0, 15.0, 46.0)),
        bands={key: band},
    )  # fmt: skip


def _task(tmp_path):
    job = JobSpec.model_validate({
        "name": "checks", "aoi": {"bbox": [465000, 5079680, 465320, 5080000], "crs": CRS},
        "grid": {"resolution": 10, "crs": CRS, "tile_size": 32, "halo": 0},
        "modalities": {"s2-l2a": {}, "dem": {}}, "output": {"dir": str(tmp_path)},
    })  # fmt: skip
    items = {
        "s2-l2a": [_item("A", "s2-l2a", "s2:B04", 1), _item("C", "s2-l2a", "s2:B04", 5)],
        "dem": [_item("D", "dem", "elevation:dem", 1, nodata=-9999.0)],
    }
    (task,) = plan_run(job, date(2020, 6, 30), items).tasks
    return task


def test_report_finds_cloudy_dates_partial_pixels_and_voids(tmp_path):
    task = _task(tmp_path)
    h, w = task.tile.padded.shape.yx
    s2_valid = np.ones((h, w), bool)
    s2_valid[:, : w // 4] = False  # a quarter of the tile all cloud: only the DEM there
    dem = np.full((1, h, w), 300.0, np.float32)
    dem[0, :2, :5] = -32768.0  # voids the item does not declare (it says -9999)
    y, x = np.arange(h), np.arange(w)
    ds = xr.Dataset(
        {
            "s2-l2a": xr.DataArray(
                np.where(s2_valid, 0.1, np.nan)[None].astype(np.float32),
                dims=("s2-l2a:band", "y", "x"), coords={"s2-l2a:band": ["s2:B04"]},
                attrs={"source_items": ["A", "C"], "dates": ["2020-06-01T10:00:00+00:00"],
                       "valid_fraction": [0.75]},
            ),
            "s2-l2a:valid": xr.DataArray(s2_valid, dims=("y", "x")),
            "dem": xr.DataArray(dem, dims=("dem:band", "y", "x"),
                                coords={"dem:band": ["elevation:dem"]},
                                attrs={"source_items": []}),
            "dem:valid": xr.DataArray(np.ones((h, w), bool), dims=("y", "x")),
        },
        coords={"y": y, "x": x},
    )  # fmt: skip
    sy, sx = task.tile.core_in_padded
    mapped = np.ones((h, w), bool)[sy, sx]
    out = tile_input_report(task, ds).crop(sy, sx).summary(mapped)
    assert out["dates_without_clear"] == {"s2-l2a": ["2020-06-05"]}  # C's day was dropped
    assert out["items_skipped"] == {"dem": {"D": "the reader used none of its pixels"}}
    assert out["mapped_pixels"] == h * w and out["partial_pixels"] == h * (w // 4)
    assert out["partial_share"] == 0.25 and out["missing_pixels"] == {"s2-l2a": h * (w // 4)}
    assert out["nodata_mismatch"] == [
        {"modality": "dem", "band": "elevation:dem", "value": -32768.0, "pixels": 10,
         "declared": -9999.0}
    ]  # fmt: skip
    lines = issues(out)
    assert any("no clear pixels on 2020-06-05" in s for s in lines)
    assert any("(25.0%) from partial inputs (missing: s2-l2a" in s for s in lines)
    assert any("void value -32768, but the items declare nodata -9999" in s for s in lines)


def test_clean_inputs_have_no_issues(tmp_path):
    task = _task(tmp_path)
    h, w = task.tile.padded.shape.yx
    ds = xr.Dataset(
        {
            "s2-l2a": xr.DataArray(
                np.full((1, h, w), 0.1, np.float32), dims=("s2-l2a:band", "y", "x"),
                coords={"s2-l2a:band": ["s2:B04"]},
                attrs={"source_items": ["A", "C"],
                       "dates": ["2020-06-01T10:00:00+00:00", "2020-06-05T10:00:00+00:00"],
                       "valid_fraction": [1.0, 0.9]},
            ),
            "s2-l2a:valid": xr.DataArray(np.ones((h, w), bool), dims=("y", "x")),
            "dem": xr.DataArray(np.full((1, h, w), 300.0, np.float32),
                                dims=("dem:band", "y", "x"),
                                coords={"dem:band": ["elevation:dem"]},
                                attrs={"source_items": ["D"]}),
            "dem:valid": xr.DataArray(np.ones((h, w), bool), dims=("y", "x")),
        },
    )  # fmt: skip
    sy, sx = task.tile.core_in_padded
    out = tile_input_report(task, ds).crop(sy, sx).summary(np.ones((h, w), bool)[sy, sx])
    assert issues(out) == [] and out["partial_share"] == 0.0


def test_void_values_under_another_declared_nodata_are_found_through_the_reader(tmp_path):
    # A real DEM file whose voids are -32768 while its item declares -9999 (a common mix-up).
    import rasterio

    from eo_fusion.stack import build_stack

    task = _task(tmp_path)
    grid = task.tile.padded
    h, w = grid.shape.yx
    elev = np.full((h, w), 412.0, np.float32)
    elev[5:9, 10:20] = -32768.0  # 40 voids
    elev[0, 0] = -9999.0  # a declared-nodata pixel: becomes no data, not a problem
    path = tmp_path / "dem.tif"
    profile = {"driver": "GTiff", "width": w, "height": h, "count": 1, "dtype": "float32",
               "crs": CRS, "transform": grid.transform, "nodata": -9999.0}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(elev[None])
    item = dataclasses.replace(
        _item("D", "dem", "elevation:dem", 1, nodata=-9999.0),
        bands={"elevation:dem": dataclasses.replace(
            _item("D", "dem", "elevation:dem", 1, nodata=-9999.0).bands["elevation:dem"],
            href=str(path))},
    )  # fmt: skip
    task = dataclasses.replace(
        task, items={"dem": (item,)}, modalities={"dem": task.modalities["dem"]}
    )
    ds = build_stack(grid, {"dem": [item]}, {"dem": task.modalities["dem"]})
    sy, sx = task.tile.core_in_padded
    out = tile_input_report(task, ds).crop(sy, sx).summary(np.ones((h, w), bool)[sy, sx])
    assert out["nodata_mismatch"] == [
        {"modality": "dem", "band": "elevation:dem", "value": -32768.0, "pixels": 40,
         "declared": -9999.0}
    ]  # fmt: skip
    # The declared-nodata pixel (and the neighbours the reader's resampling reaches) count as
    # partial inputs, not as voids.
    assert 1 <= out["missing_pixels"]["dem"] <= 4
