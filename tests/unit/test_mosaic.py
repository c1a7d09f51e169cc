"""Planning, halo cropping, AOI/nodata handling and the window-by-window mosaic."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo import Geometry
from odc.geo.geobox import GeoBox

from eo_fusion.config import JobSpec
from eo_fusion.errors import ProductError, TileError
from eo_fusion.grid import make_tiles
from eo_fusion.pipeline.legend import NODATA_CLASS, ClassInfo
from eo_fusion.pipeline.mosaic import layers_for, mosaic_vrt
from eo_fusion.pipeline.plan import plan_tasks
from eo_fusion.pipeline.tiles import crop_core, finish_tile, write_tile
from eo_fusion.testing.synthetic import SyntheticPredictor

CRS = "EPSG:32633"
GRID = GeoBox((70, 90), Affine(10, 0, 465000, 0, -10, 5080000), CRS)
CLASSES = tuple(ClassInfo(v, f"c{v}", "#102030") for v in (1, 2, 3))


def _job(tmp_path, **grid):
    return JobSpec.model_validate(
        {
            "name": "t",
            "aoi": {"bbox": [465000, 5079300, 465900, 5080000], "crs": CRS},
            "grid": {"resolution": 10, "crs": CRS, **grid},
            "modalities": {},
            "output": {"dir": str(tmp_path)},
        }
    )


def _aoi(*box):
    from shapely.geometry import box as sbox

    return Geometry(sbox(*box), crs=CRS)


def test_plan_skips_tiles_outside_the_aoi_and_is_pure(tmp_path):
    job = _job(tmp_path, tile_size=32, halo=4)
    tiles = make_tiles(GRID, 32, 4)
    # AOI covers only the left 300 m (30 px): tiles in column 0 only.
    tasks = plan_tasks(job, tiles, {}, _aoi(465000, 5079300, 465300, 5080000))
    assert {t.tile_id for t in tasks} == {"r000_c000", "r001_c000", "r002_c000"}
    assert all(t.output_relpath == f"tiles/{t.tile_id}.tif" for t in tasks)
    assert tasks == plan_tasks(job, tiles, {}, _aoi(465000, 5079300, 465300, 5080000))


def test_crop_core_refuses_wrong_shape(tmp_path):
    job = _job(tmp_path, tile_size=32, halo=4)
    task = plan_tasks(job, make_tiles(GRID, 32, 4), {}, GRID.extent)[0]
    probs = np.zeros((3, 40, 40), np.float32)
    assert crop_core(probs, task).shape == (3, 32, 32)
    with pytest.raises(TileError, match=r"r000_c000.*padded"):
        crop_core(np.zeros((3, 32, 32), np.float32), task)


def test_finish_tile_masks_outside_aoi_and_invalid_input(tmp_path):
    job = _job(tmp_path, tile_size=32, halo=0)
    # AOI: the left half of the first tile only.
    task = plan_tasks(job, make_tiles(GRID, 32, 0), {}, _aoi(465000, 5079000, 465160, 5080000))[0]
    probs = np.zeros((3, 32, 32), np.float32)
    probs[2] = 0.7
    probs[0] = 0.3
    probs[:, 0, 0] = np.nan  # no valid input at one pixel
    out = finish_tile(probs, task, CLASSES)
    assert out.classes.dtype == np.uint8
    assert (out.classes[:, 16:] == NODATA_CLASS).all()  # outside the AOI
    assert out.classes[0, 0] == NODATA_CLASS
    assert (out.classes[1:, :16] == 3).all()  # argmax -> class value, not index
    assert out.confidence[5, 5] == 70 and out.confidence[0, 0] == NODATA_CLASS
    with pytest.raises(TileError, match="2 classes"):
        finish_tile(probs[:2], task, CLASSES)


@pytest.mark.parametrize(("tile_size", "halo"), [(32, 0), (25, 3)])
def test_mosaic_equals_whole_grid_prediction(tmp_path, tile_size, halo):
    """Per-tile files copied into their windows reproduce a one-piece prediction."""
    job = _job(tmp_path, tile_size=tile_size, halo=halo)
    tiles = make_tiles(GRID, tile_size, halo)
    tasks = plan_tasks(job, tiles, {}, GRID.extent)
    pred = SyntheticPredictor(n_classes=3, radius=0)
    windows = []
    for task in tasks:
        arrays = finish_tile(crop_core(pred.predict(task), task), task, pred.classes)
        path = tmp_path / task.output_relpath
        write_tile(path, arrays, task.tile.core)
        windows.append((task.tile.core_in_grid, path))
    dst = tmp_path / "mosaic.vrt"
    mosaic_vrt(dst, GRID, windows, layers_for(True, False, 3)[0])
    whole = plan_tasks(
        _job(tmp_path, tile_size=512, halo=0), make_tiles(GRID, 512, 0), {}, GRID.extent
    )[0]
    expected = finish_tile(pred.predict(whole), whole, pred.classes).classes
    with rasterio.open(dst) as src:
        got = src.read(1)
        assert src.transform == GRID.transform and src.crs == GRID.crs
    np.testing.assert_array_equal(got, expected)


def test_mosaic_writes_nodata_for_missing_tiles_and_checks_coverage(tmp_path):
    tiles = make_tiles(GRID, 32, 0)
    layer = layers_for(False, False, 3)[0]
    dst = tmp_path / "m.vrt"
    mosaic_vrt(dst, GRID, [(t.core_in_grid, None) for t in tiles], layer)
    with rasterio.open(dst) as src:
        assert (src.read(1) == NODATA_CLASS).all()
    with pytest.raises(ProductError, match="cover"):
        mosaic_vrt(dst, GRID, [(t.core_in_grid, None) for t in tiles[1:]], layer)


def test_mosaic_refuses_a_tile_file_of_the_wrong_size(tmp_path):
    tiles = make_tiles(GRID, 32, 0)
    layer = layers_for(False, False, 3)[0]
    wrong = tmp_path / "wrong.tif"
    profile = {"driver": "GTiff", "width": 31, "height": 32, "count": 1, "dtype": "uint8"}
    with rasterio.open(wrong, "w", **profile) as dst:
        dst.write(np.zeros((1, 32, 31), np.uint8))
    windows = [(t.core_in_grid, wrong if i == 1 else None) for i, t in enumerate(tiles)]
    with pytest.raises(ProductError, match=r"wrong.tif is 32×31, its window in the grid is 32×32"):
        mosaic_vrt(tmp_path / "m.vrt", GRID, windows, layer)
