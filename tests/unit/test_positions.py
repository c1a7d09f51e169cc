"""Source positions from the PROJ lattice (within 1e-3 px of the exact transformation, with a
bound that holds), resampling plans equal to the per-pixel formula, and the open-file pool."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.errors
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling

from eo_fusion.grid import grid_from_aoi
from eo_fusion.sources import open_files, positions
from eo_fusion.sources.positions import (
    MAX_LATTICE_ERROR_PX,
    exact_positions,
    lattice,
    plan_for,
    reuse_plans,
    source_positions,
)
from eo_fusion.testing.fake_reader import write_test_raster

# (source CRS, source pixel, target CRS, target pixel, lon/lat): the pixel-tracing pairs, the
# benchmark's UTM -> Web Mercator, polar stereographic at 78 N and lon/lat at 85 N (where the
# lattice is not good enough and every cell falls back to exact PROJ).
PAIRS = [
    ("EPSG:32618", 20.0, "EPSG:3857", 10.0, (-75.5, 38.8)),
    ("EPSG:4326", 0.0001, "EPSG:32633", 10.0, (14.55, 45.87)),
    ("EPSG:32633", 10.0, "EPSG:3035", 10.0, (14.55, 45.87)),
    ("EPSG:3035", 10.0, "EPSG:4326", 0.0001, (14.55, 45.87)),
    ("EPSG:2263", 30.0, "EPSG:32618", 10.0, (-73.98, 40.75)),
    ("EPSG:32618", 10.0, "EPSG:2263", 30.0, (-73.98, 40.75)),
    ("EPSG:32633", 10.0, "EPSG:3413", 10.0, (14.55, 78.0)),
    ("EPSG:4326", 0.0001, "EPSG:3413", 10.0, (14.55, 85.0)),
]


def _grids(src_crs, src_res, dst_crs, dst_res, where, d=0.05):
    lon, lat = where
    src = grid_from_aoi((lon - d, lat - d, lon + d, lat + d), src_res, crs=src_crs)
    dst = grid_from_aoi((lon - d / 2, lat - d / 2, lon + d / 2, lat + d / 2), dst_res, dst_crs)
    return src, dst


def _unquantised(monkeypatch) -> None:
    monkeypatch.setattr(positions, "_quantise", lambda u: u - 0.5)


@pytest.mark.parametrize(("src_crs", "src_res", "dst_crs", "dst_res", "where"), PAIRS)
def test_lattice_positions_are_within_the_stated_bound_of_exact_proj(
    monkeypatch, src_crs, src_res, dst_crs, dst_res, where
) -> None:
    _unquantised(monkeypatch)  # compare before rounding to the 1.5e-5 px quantum
    src, dst = _grids(src_crs, src_res, dst_crs, dst_res, where)
    u, v = source_positions(src, dst)
    eu, ev = exact_positions(src, dst)
    err = np.hypot(u - eu, v - ev)
    lat = lattice(dst, src.crs)
    assert lat is not None
    bound_px = lat.bound * positions._inverse_norm(src.transform)
    per_pixel = np.minimum(bound_px, MAX_LATTICE_ERROR_PX)[lat.ay.cell[:, None], lat.ax.cell]
    used = bound_px[lat.ay.cell[:, None], lat.ax.cell] <= MAX_LATTICE_ERROR_PX
    print(f"{src_crs}->{dst_crs}: max error {err.max():.2e} px, lattice on {used.mean():.0%}")
    assert err.max() <= MAX_LATTICE_ERROR_PX
    assert np.all(err <= per_pixel + 1e-9)  # the bound holds pixel by pixel
    assert np.all(err[~used] < 1e-9)  # where the bound is too large: exact


def test_lattice_nodes_do_not_depend_on_the_tile() -> None:
    """Two tiles of one grid interpolate a shared pixel from the same nodes: same position."""
    src, dst = _grids(*PAIRS[0])
    a, b = dst[0:300, 0:300], dst[100:400, 137:437]
    ua, va = source_positions(src, a)
    ub, vb = source_positions(src, b)
    np.testing.assert_array_equal(ua[100:300, 137:300], ub[0:200, 0:163])
    np.testing.assert_array_equal(va[100:300, 137:300], vb[0:200, 0:163])


def _reference_bilinear(band, u, v):
    """The per-pixel formula (GDAL's semantics) the plans must reproduce bit for bit."""
    h, w = band.shape
    inside = np.isfinite(u) & np.isfinite(v) & (u > -0.5) & (u < w - 0.5) & (v > -0.5)
    inside &= v < h - 0.5
    u, v = np.where(inside, u, 0.0), np.where(inside, v, 0.0)

    def taps(p, n):
        i0 = np.clip(np.floor(p).astype(np.int64), 0, n - 1)
        f = (p - np.floor(p)).astype(np.float32)
        f[(p < 0) | (p > n - 1)] = 0
        return i0, f

    def mix(a, b, f):
        return np.where(f > 0, (1 - f) * a + f * b, a)

    u0, fu = taps(u, w)
    v0, fv = taps(v, h)
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    out = mix(mix(band[v0, u0], band[v0, u1], fu), mix(band[v1, u0], band[v1, u1], fu), fv)
    out[~inside] = np.nan
    return out


@pytest.mark.parametrize("rule", [Resampling.bilinear, Resampling.nearest])
def test_plan_equals_the_per_pixel_formula(rule) -> None:
    """Including NaN neighbours at weight 0, targets on source columns and beyond the edges."""
    src = GeoBox((40, 50), Affine(20, 0, 1000, 0, -20, 5000), "EPSG:32633")
    # Every other target centre lies on a source column/row (weight 0), some beyond the edges.
    dst = GeoBox((90, 110), Affine(10, 0, 985, 0, -10, 5015), "EPSG:32633")
    rng = np.random.default_rng(1)
    band = rng.random((2, 40, 50)).astype(np.float32)
    band[1, 10:13, 20:23] = np.nan
    band[0, :, 7] = np.nan  # a NaN column next to targets that lie exactly on column 6
    out = np.full((2, 90, 110), np.nan, np.float32)
    plan_for(src, dst, rule).apply(band, out)
    u, v = source_positions(src, dst)
    for i in range(2):
        if rule is Resampling.bilinear:
            want = _reference_bilinear(band[i], u, v)
        else:
            iu = np.clip(np.floor(u + 0.5).astype(np.int64), 0, 49)
            iv = np.clip(np.floor(v + 0.5).astype(np.int64), 0, 39)
            want = band[i][iv, iu]
            want[~((u > -0.5) & (u < 49.5) & (v > -0.5) & (v < 39.5))] = np.nan
        np.testing.assert_array_equal(out[i], want)
    assert np.isfinite(out[0]).mean() > 0.5
    if rule is Resampling.bilinear:
        on_col6 = np.isclose(u, 6.0) & (v > 0) & (v < 38)
        assert on_col6.any() and np.isfinite(out[0][on_col6]).all()  # NaN col 7 at weight 0


def test_plans_are_reused_only_inside_a_scope() -> None:
    src, dst = _grids(*PAIRS[0], d=0.01)
    assert plan_for(src, dst, Resampling.bilinear) is not plan_for(src, dst, Resampling.bilinear)
    with reuse_plans():
        first = plan_for(src, dst, Resampling.bilinear)
        with reuse_plans():  # a nested scope shares the outer one
            assert plan_for(src, dst, Resampling.bilinear) is first
        assert plan_for(src, dst, Resampling.nearest) is not first
    assert plan_for(src, dst, Resampling.bilinear) is not first


# --- the open-file pool -------------------------------------------------------------------------


def _raster(path: Path, value: float) -> str:
    gbox = GeoBox((8, 8), Affine(10, 0, 0, 0, -10, 80), "EPSG:32633")
    return str(write_test_raster(path, np.full((1, 8, 8), value, np.float32), gbox))


def test_a_rewritten_file_is_read_afresh(tmp_path: Path) -> None:
    path = _raster(tmp_path / "a.tif", 1.0)
    with open_files.open_dataset(path) as f:
        assert f.ds.read(1)[0, 0] == 1.0
    with open_files.open_dataset(path) as again:
        assert again is f  # pooled
    Path(path).unlink()
    _raster(Path(path), 2.0)
    with open_files.open_dataset(path) as g:
        assert g is not f and g.ds.read(1)[0, 0] == 2.0
    assert f.ds.closed  # the old version was closed
    open_files.release_files()
    assert g.ds.closed


def test_a_file_in_use_is_not_shared_and_a_busy_copy_is_closed(tmp_path: Path) -> None:
    path = _raster(tmp_path / "b.tif", 3.0)
    seen: list[open_files.OpenFile] = []
    with open_files.open_dataset(path) as mine:

        def other() -> None:
            with open_files.open_dataset(path) as theirs:
                seen.append(theirs)
                assert theirs.ds.read(1)[0, 0] == 3.0

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert seen[0] is not mine and seen[0].ds.closed  # a private copy, closed after use
        assert not mine.ds.closed
    open_files.forget(path)
    assert mine.ds.closed


def test_the_pool_is_bounded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(open_files, "MAX_OPEN_FILES", 3)
    opened = []
    for i in range(5):
        with open_files.open_dataset(_raster(tmp_path / f"c{i}.tif", float(i))) as f:
            opened.append(f)
    assert [f.ds.closed for f in opened] == [True, True, False, False, False]
    open_files.release_files()
    with rasterio.open(tmp_path / "c0.tif") as ds:  # files are intact
        assert ds.read(1)[0, 0] == 0.0


def test_a_failed_open_leaves_nothing_behind(tmp_path: Path) -> None:
    path = str(tmp_path / "later.tif")
    with pytest.raises(rasterio.errors.RasterioIOError), open_files.open_dataset(path):
        pass
    assert not any(k[0] == path for k in open_files._POOL)  # no pending entry left
    _raster(Path(path), 5.0)
    with open_files.open_dataset(path) as f:
        assert f.ds.read(1)[0, 0] == 5.0
    open_files.forget(path)
