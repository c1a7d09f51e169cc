"""The s2cloudless layer (``s2:CLP``) and mask against Sentinel Hub's own detector at 160 m.

Reference: tests/fixtures/s2cloudless/slovenia_160m.npz, made by tools/s2cloudless_fixture.py
(real Slovenia L1C scenes averaged to 160 m with rasterio, then ``S2PixelCloudDetector``'s
``get_cloud_probability_maps`` / ``get_cloud_masks`` with threshold 0.4, average_over 4,
dilation_size 2).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from odc.geo.geobox import GeoBox
from scipy import ndimage

from eo_fusion import api
from eo_fusion.catalogs.local import local_item
from eo_fusion.config import ModalitySpec
from eo_fusion.errors import BandError
from eo_fusion.grid import grid_from_aoi
from eo_fusion.modalities import S2Options
from eo_fusion.sources.common import read_item_bands
from eo_fusion.sources.reader import RasterioReader, ReadSpec
from eo_fusion.sources.s2cloud import S2CLOUDLESS_BANDS, cloud_grid, coarse_clouds
from eo_fusion.stack import build_stack, modality_array

ROOT = Path(__file__).resolve().parents[2]
SLO = ROOT / "catalogs" / "sample" / "data" / "slovenia"
FIX = np.load(ROOT / "tests" / "fixtures" / "s2cloudless" / "slovenia_160m.npz")
ORDER = [f"s2:{b}" for b in ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A")]
ORDER += [f"s2:{b}" for b in ("B09", "B10", "B11", "B12")]
GRID = grid_from_aoi(
    (465_200, 5_079_300, 466_150, 5_080_230), 10, crs="EPSG:32633", aoi_crs="EPSG:32633"
)
DATES = ("2015-07-31", "2015-07-11")
MODS = {"s2-l1c": ModalitySpec(mode="timeseries", bands=["s2:B04", "s2:B08", "s2:CLP"])}


def _item(date: str):
    path = SLO / f"S2_L1C_TOA_{date}_13bands.tif"
    files = {k: (path, i + 1) for i, k in enumerate(ORDER)}
    when = datetime.fromisoformat(date).replace(tzinfo=UTC)
    return local_item(f"slo-{date}", "s2-l1c", files, when, scale=1.0, nodata=-1.0)


def _spec(asset) -> ReadSpec:
    return ReadSpec(kind=asset.spec.kind)


def _ref_on_grid(name: str, order: int, gbox: GeoBox = GRID) -> np.ndarray:
    """The 160 m reference at every pixel centre of ``gbox``: bilinear (order 1) or the cloud
    pixel containing the centre (order 0)."""
    inv = ~Affine(*FIX["transform"])
    yy, xx = np.meshgrid(
        np.arange(gbox.shape.y) + 0.5, np.arange(gbox.shape.x) + 0.5, indexing="ij"
    )
    col, row = inv * (gbox.transform * (xx, yy))
    ref = FIX[name].astype(np.float64)
    if order == 0:
        return ref[np.floor(row).astype(int), np.floor(col).astype(int)]
    return ndimage.map_coordinates(ref, [row - 0.5, col - 0.5], order=1, mode="nearest")


@pytest.mark.parametrize("date", DATES)
def test_probability_and_mask_at_160m_equal_s2cloudless(date: str) -> None:
    cgrid = cloud_grid(GRID, 160.0, 9)
    assert list(cgrid.transform)[:6] == list(FIX["transform"])
    toa = read_item_bands(
        _item(date),
        S2CLOUDLESS_BANDS,
        cgrid,
        lambda a: ReadSpec(kind=a.spec.kind),
        RasterioReader(),
    )
    np.testing.assert_array_equal(toa, FIX[f"bands_{date}"])  # GDAL average, window or not
    ours = coarse_clouds(toa, cgrid, S2Options())
    ref = FIX[f"probability_{date}"]
    assert np.isfinite(ref).sum() == 49  # the 1 km scene covers 7 x 7 cloud pixels
    np.testing.assert_array_equal(ours.probability, ref)  # measured: bit for bit
    np.testing.assert_array_equal(ours.mask, FIX[f"mask_{date}"].astype(bool))


@pytest.mark.parametrize("date", DATES)
def test_stack_layer_is_the_reference_brought_to_the_grid(date: str) -> None:
    ds = build_stack(GRID, {"s2-l1c": [_item(date)]}, MODS)
    clp = modality_array(ds, "s2-l1c").sel(band="s2:CLP").values[0]
    ref = _ref_on_grid(f"probability_{date}", 1)
    assert np.isfinite(clp).all() and np.isfinite(ref).all()  # the grid lies inside the scene
    # float32 bilinear against scipy's float64 one: measured 1.0e-7 at most
    np.testing.assert_allclose(clp, ref, rtol=0, atol=1e-6)
    # The mask: each pixel takes the cloud pixel containing its centre (nearest); shadows are
    # dark (B08 < 0.15, B11 < 0.10) pixels within 30 px of a cloud, clouds off the grid included.
    cloud = _ref_on_grid(f"mask_{date}", 0) > 0
    wide = GeoBox(
        (GRID.shape.y + 60, GRID.shape.x + 60),
        GRID.transform * Affine.translation(-30, -30),
        GRID.crs,
    )
    near = ndimage.binary_dilation(_ref_on_grid(f"mask_{date}", 0, wide) > 0, iterations=30)
    nir, swir = read_item_bands(_item(date), ["s2:B08", "s2:B11"], GRID, _spec, RasterioReader())
    shadow = near[30:-30, 30:-30] & (nir < 0.15) & (swir < 0.10) & ~cloud
    valid = ds["s2-l1c:valid"].values[0]
    assert cloud.any() if date == "2015-07-31" else not cloud.any()
    np.testing.assert_array_equal(valid, ~cloud & ~shadow)
    b04 = modality_array(ds, "s2-l1c").sel(band="s2:B04").values[0]
    assert np.isfinite(b04[valid]).all() and np.isnan(b04[~valid]).all()


#: The same place on a LAEA grid: the scene's bands are averaged onto the 160 m LAEA cloud grid
#: across CRSs (exact footprints, eo_fusion.sources.footprint).
LAEA = grid_from_aoi((14.553, 45.867, 14.562, 45.874), 10, crs="EPSG:3035")


@pytest.mark.parametrize(
    ("grid", "chunk", "halo"),
    # Halo 0 is api.auto_halo's default for Sentinel-2 alone: the mask reads its own context.
    [(GRID, 16, 0), (GRID, 40, 3), (LAEA, 24, 5), (LAEA, 32, 0)],
    ids=["utm-16-0", "utm-40-3", "laea-24-5", "laea-32-0"],
)
def test_layer_and_mask_do_not_depend_on_tiling(grid: GeoBox, chunk: int, halo: int) -> None:
    items = {"s2-l1c": [_item(d) for d in ("2015-07-11", "2015-07-31", "2015-08-20")]}
    whole = build_stack(grid, items, MODS)
    lazy = api.stack(items, grid, MODS, chunk_size=chunk, halo=halo).compute(scheduler="sync")
    a, b = lazy["s2-l1c"].values, whole["s2-l1c"].values
    assert np.isfinite(b[:, 2]).mean() > 0.75
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(lazy["s2-l1c:valid"].values, whole["s2-l1c:valid"].values)


def test_clp_needs_the_model_bands() -> None:
    item = _item("2015-07-11")
    item.bands.pop("s2:B10")
    with pytest.raises(BandError, match=r"slo-2015-07-11 cannot give s2:CLP"):
        build_stack(GRID, {"s2-l1c": [item]}, MODS)
