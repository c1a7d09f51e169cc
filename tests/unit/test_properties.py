"""Property tests on the reader seam (hypothesis, stackstac style): random grids, CRSs
(geographic, UTM, LAEA, US feet), resolutions, tile sizes and halos.

* tiling covers a grid exactly once, whatever the CRS, resolution, tile size and halo;
* a read through :class:`FakeReader` equals GDAL's warp of the whole source array with the rule
  the documented table gives (an independent copy of the table is kept here);
* the rasterio reader on a GeoTIFF holding the fake's pixels equals the fake;
* a lazy stack equals an eager build whatever the chunk size and halo, and equals the reference;
* building the lazy graph reads no pixels.

Pixels of the fake encode their own source coordinates (ramps) plus a non-linear texture that
tells resampling rules apart (see :mod:`eo_fusion.testing.fake_reader`).
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio.warp
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from rasterio.enums import Resampling

from eo_fusion import api
from eo_fusion.config import ModalitySpec
from eo_fusion.grid import make_tiles
from eo_fusion.sources.reader import RasterioReader, ReadSpec
from eo_fusion.sources.resample import PASTE_TTOL_PX
from eo_fusion.stack import build_stack
from eo_fusion.testing.fake_reader import FakeReader, fake_pixels, write_test_raster

#: (lon, lat) and the CRSs tried there: geographic, UTM, LAEA (EPSG:3035 Europe; a WGS84 LAEA
#: centred on New York, as EPSG:9311 is on NAD27, whose datum shift needs grids that are not
#: installed) and a foot-based CRS (EPSG:2263, New York Long Island, US survey feet).
NY_LAEA = "+proj=laea +lat_0=40 +lon_0=-74 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
SITES = {
    "slovenia": ((14.55, 45.87), ("EPSG:4326", "EPSG:32633", "EPSG:3035")),
    "new-york": ((-73.98, 40.75), ("EPSG:4326", "EPSG:32618", NY_LAEA, "EPSG:2263")),
}
#: Target/source pixel-size factors, kept away from the rule thresholds (1 and 2) even for
#: lon/lat pixels, whose width in metres is cos(lat) ≈ 0.7-0.76 of their height.
UP = (0.4, 0.6)
DOWN = (3.5, 4.5)
#: Metres per CRS unit (approximate for degrees: only used to size grids).
UNIT_M = {"metre": 1.0, "US survey foot": 1200 / 3937, "degree": 111_320.0}


def _unit_m(crs: CRS) -> float:
    return UNIT_M["degree"] if crs.geographic else UNIT_M[crs.units[0]]


def _expected_rule(kind: str, factor: float) -> Resampling:
    """The documented rule table (docs/stacks.md), written out independently of the code; a
    factor equal to a threshold up to float rounding (stack cases use exactly 2) counts as equal."""
    eps = 1e-6
    if kind == "categorical":
        return Resampling.nearest if factor < 2 - eps else Resampling.mode
    if kind == "elevation":
        return Resampling.bilinear if factor < 2 - eps else Resampling.average
    return Resampling.bilinear if factor <= 1 + eps else Resampling.average


def _grid(crs: str, lonlat, res_m: float, shape: tuple[int, int], offset_px: float) -> GeoBox:
    """A north-up grid of ``shape`` centred on ``lonlat``, ``res_m`` metres per pixel, origin
    moved by ``offset_px`` of a pixel (keeps pixel centres off the source pixel edges)."""
    res = res_m / _unit_m(CRS(crs))
    cx, cy = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(*lonlat)
    x0 = cx - (shape[1] / 2 - offset_px) * res
    y0 = cy + (shape[0] / 2 - offset_px) * res
    return GeoBox(shape, Affine(res, 0, x0, 0, -res, y0), crs)


@st.composite
def read_cases(draw):
    """A source grid, a target grid inside it and a band kind."""
    site = draw(st.sampled_from(sorted(SITES)))
    lonlat, crss = SITES[site]
    src_crs, dst_crs = draw(st.sampled_from(crss)), draw(st.sampled_from(crss))
    res_m = draw(st.floats(5, 30))
    n = draw(st.integers(30, 70))
    factor = draw(st.sampled_from(UP + DOWN))
    src = _grid(src_crs, lonlat, res_m, (n, n + draw(st.integers(0, 9))), 0.0)
    m = max(2, round(0.45 * n / factor))
    dst = _grid(dst_crs, lonlat, res_m * factor, (m, m + 1), draw(st.integers(1, 96)) / 97)
    kind = draw(st.sampled_from(["reflectance", "elevation", "categorical"]))
    return src, dst, kind, factor


def _reference(
    src: GeoBox, dst: GeoBox, band: int, rule: Resampling, nodata: float | None = None
) -> np.ndarray:
    """GDAL's warp of the WHOLE fake source (no window, no fast path) with ``rule``; stored
    ``nodata`` values count as no data."""
    out = np.full(dst.shape.yx, np.nan, dtype=np.float32)
    extra = {"XSCALE": 1, "YSCALE": 1} if rule is Resampling.bilinear else {}
    pixels = fake_pixels(src, band)
    if nodata is not None:
        pixels[pixels == nodata] = np.nan
    rasterio.warp.reproject(
        pixels,
        out,
        src_transform=src.transform,
        src_crs=src.crs.to_wkt(),
        dst_transform=dst.transform,
        dst_crs=dst.crs.to_wkt(),
        src_nodata=np.nan,
        dst_nodata=np.nan,
        resampling=rule,
        tolerance=0.0,
        **extra,
    )
    return np.round(out) if rule in (Resampling.nearest, Resampling.mode) else out


def _assert_matches(got: np.ndarray, ref: np.ndarray, categorical: bool, what: str) -> None:
    if categorical:
        # A class code at a near-tie (or a no-data code next to it) may fall either way; a
        # wrong rule (nearest for mode, or the reverse) changes most codes of the texture.
        same = (got == ref) | (np.isnan(got) & np.isnan(ref))
        assert same.mean() >= 0.95, f"{what}: {same.mean():.3f} of class codes agree"
        return
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{what}: no-data")
    ok = np.isfinite(ref)
    # 0.05 of the texture (steps of up to 16 per pixel) is a few thousandths of a pixel:
    # GDAL warps in float32 on windows that differ; a wrong rule moves values by units.
    np.testing.assert_allclose(got[ok], ref[ok], rtol=0, atol=0.05, err_msg=what)


# --- tiling -------------------------------------------------------------------------------------


def _same_grid(a: GeoBox, b: GeoBox) -> bool:
    """Same shape and CRS, transforms equal to a millionth of a pixel (float rounding of the
    origin when a grid is sliced or padded is not a tiling error)."""
    tol = 1e-6 * abs(a.transform.a)
    close = np.allclose(list(a.transform)[:6], list(b.transform)[:6], rtol=0, atol=tol)
    return a.shape == b.shape and a.crs == b.crs and bool(close)


@st.composite
def tilings(draw):
    """A grid in any of the CRSs, and a tile size / halo giving at most 8 x 8 tiles."""
    site = draw(st.sampled_from(sorted(SITES)))
    lonlat, crss = SITES[site]
    h, w = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    grid = _grid(draw(st.sampled_from(crss)), lonlat, draw(st.floats(0.3, 500)), (h, w), 0.0)
    tile = draw(st.integers(max(1, -(-max(h, w) // 8)), 96))
    return grid, tile, draw(st.integers(0, 24))


@settings(max_examples=120)
@given(case=tilings())
def test_tiles_cover_any_grid_exactly_once(case) -> None:
    g, tile, halo = case
    tiles = make_tiles(g, tile, halo)
    count = np.zeros(g.shape.yx, dtype=np.int32)
    for t in tiles:
        sy, sx = t.core_in_grid
        count[sy, sx] += 1
        assert _same_grid(g[sy, sx], t.core)
        assert t.core.shape.y <= tile and t.core.shape.x <= tile
        assert _same_grid(t.padded, g[sy, sx].pad(halo))
        assert _same_grid(t.padded[t.core_in_padded], t.core)
    assert (count == 1).all(), "a pixel is in no tile or in several"
    assert [(t.row, t.col) for t in tiles] == sorted((t.row, t.col) for t in tiles)


# --- one read -----------------------------------------------------------------------------------


@settings(max_examples=100)
@given(case=read_cases())
def test_fake_read_equals_gdal_warp_with_the_documented_rule(case) -> None:
    src, dst, kind, factor = case
    reader = FakeReader()
    key = {"categorical": "label:landcover", "elevation": "elevation:dem"}.get(kind, "index:ndvi")
    item = reader.item("src", "any", [key, key, key], datetime(2021, 6, 1, tzinfo=UTC), src)
    asset = item.bands[key]
    rule = _expected_rule(kind, factor)
    for band in (1, 2, 3):
        a = type(asset)(asset.key, asset.asset_key, asset.href, band, asset.spec)
        got = reader.read([a], dst, ReadSpec(kind))[0]
        ref = _reference(src, dst, band, rule, asset.spec.nodata)
        _assert_matches(got, ref, kind == "categorical", f"{kind} x{factor} band {band}")


@settings(max_examples=40)
@given(case=read_cases(), scale=st.sampled_from([1.0, 1e-4]), offset=st.sampled_from([0.0, -0.1]))
def test_rasterio_reader_equals_the_fake_on_its_pixels(case, scale, offset) -> None:
    src, dst, kind, _ = case
    fake = FakeReader()
    keys = ["index:ndvi"] * 3
    item = fake.item("src", "any", keys, datetime(2021, 6, 1, tzinfo=UTC), src)
    base = item.bands["index:ndvi"]
    spec = base.spec.with_encoding(scale=scale, offset=offset, nodata=0.0)  # texture has zeros
    with tempfile.TemporaryDirectory() as tmp:
        pixels = np.stack([fake_pixels(src, b) for b in (1, 2, 3)])
        path = str(write_test_raster(Path(tmp) / "src.tif", pixels, src))
        on_disk = [type(base)(base.key, "a", path, b, spec) for b in (1, 2, 3)]
        in_memory = [type(base)(base.key, "a", base.href, b, spec) for b in (1, 2, 3)]
        got = RasterioReader().read(on_disk, dst, ReadSpec(kind))
    want = fake.read(in_memory, dst, ReadSpec(kind))
    np.testing.assert_array_equal(got, want)


# --- whole stacks -------------------------------------------------------------------------------

T0 = datetime(2021, 6, 1, 10, 30, tzinfo=UTC)
T1 = datetime(2021, 6, 11, 10, 30, tzinfo=UTC)


@st.composite
def stack_cases(draw):
    """A target grid, a FakeReader with items of three modalities on other grids, chunking."""
    site = draw(st.sampled_from(sorted(SITES)))
    lonlat, crss = SITES[site]
    res_m = draw(st.floats(8, 20))
    shape = (draw(st.integers(8, 40)), draw(st.integers(8, 40)))
    grid = _grid(draw(st.sampled_from(crss)), lonlat, res_m, shape, draw(st.integers(1, 96)) / 97)
    reader = FakeReader()

    def source(tag: str):
        f = draw(st.sampled_from((0.5, 0.7, 1.0, 3.0)))
        crs = draw(st.sampled_from(crss))
        n = round(1.6 * max(shape) / f) + 8
        return _grid(crs, lonlat, res_m * f, (n, n), draw(st.integers(1, 96)) / 97)

    items = {
        "ndvi": [reader.item("ndvi", "ndvi", ["index:ndvi"], T0, source("ndvi"), [3])],
        "labels": [reader.item("lab", "labels", ["label:landcover"], T0, source("lab"), [3])],
        "s2-l2a": [
            reader.item(f"s2-{i}", "s2-l2a", ["s2:B04", "s2:SCL"], t, source(f"s2-{i}"), [1, 3])
            for i, t in enumerate((T0, T1))
        ],
    }
    chunk = draw(st.integers(-(-max(shape) // 4), 48))  # at most 4 x 4 chunks
    halo = draw(st.integers(0, 6))
    return grid, reader, items, chunk, halo


MODS = {"ndvi": ModalitySpec(), "labels": ModalitySpec(), "s2-l2a": ModalitySpec()}


def _misalignment_px(a: GeoBox, b: GeoBox) -> float:
    """How far (in pixels) the pixel edges of two grids of one resolution are apart."""
    res = abs(a.transform.a)
    dx = (a.transform.c - b.transform.c) / res
    dy = (a.transform.f - b.transform.f) / res
    return max(abs(dx - round(dx)), abs(dy - round(dy)))


def _assert_same_stack_variable(lazy, eager, name: str) -> None:
    """Equal on ≥ 99 % of pixels: GDAL's warp rounding differs with the window warped (~1e-4
    px), so continuous values agree within 1e-3 of their range and a class code or mask at a
    near-tie may fall either way (and with it an S2 composite value). A tile off by one pixel
    moves the ramps by a whole unit on every pixel of the tile."""
    a, b = lazy[name].values, eager[name].values
    both = np.isfinite(a) & np.isfinite(b)
    assert (np.isnan(a) == np.isnan(b)).mean() >= 0.99, f"{name}: no-data"
    if not both.any():
        return
    if name == "labels":
        close = a[both] == b[both]
    else:
        close = np.abs(a[both] - b[both]) <= 1e-3 * float(np.ptp(b[both])) + 1e-7
    assert close.mean() >= 0.99, f"{name}: {close.mean():.3f} of pixels agree"
    same = lazy[f"{name}:valid"].values == eager[f"{name}:valid"].values
    assert same.mean() >= 0.99, f"{name}:valid"


@settings(max_examples=20)
@given(case=stack_cases())
def test_lazy_stack_does_not_depend_on_chunking_and_equals_the_reference(case) -> None:
    grid, reader, items, chunk, halo = case
    lazy = api.stack(items, grid, MODS, chunk_size=chunk, halo=halo, reader=reader)
    lazy = lazy.compute(scheduler="sync")
    eager = build_stack(grid, items, MODS, reader=reader)
    for name in MODS:
        _assert_same_stack_variable(lazy, eager, name)
    # A one-item composite of a single-band raster is exactly the read: GDAL's reference.
    ndvi_src = reader.sources["fake://ndvi"]
    lab_src = reader.sources["fake://lab"]
    for name, src, kind in (("ndvi", ndvi_src, "index"), ("labels", lab_src, "categorical")):
        factor = abs(grid.resolution.x) * _unit_m(grid.crs)
        factor /= abs(src.resolution.x) * _unit_m(src.crs)
        if grid.crs != src.crs:
            continue  # across CRSs the single-read property above holds the reference check
        rule = _expected_rule(kind, factor)
        tie = abs(factor - 1) < 1e-9 and abs(_misalignment_px(grid, src) - 0.5) < 1e-3
        if kind == "categorical" and tie:
            # Grids of odd and even width centred on one point: every target centre lies on a
            # source pixel edge, and nearest may take either neighbour (lazy == eager still holds).
            continue
        aligned = _misalignment_px(grid, src) < PASTE_TTOL_PX
        if grid.crs == src.crs and abs(factor - 1) < 1e-9 and aligned:
            rule = Resampling.nearest  # the same grid (to 1e-6 px) is pasted, not warped
        nodata = next(iter(items[name][0].bands.values())).spec.nodata
        ref = _reference(src, grid, 3, rule, nodata)
        _assert_matches(eager[name].values[0], ref, kind == "categorical", name)


def test_building_a_lazy_stack_reads_no_pixels() -> None:
    lonlat, _ = SITES["slovenia"]
    grid = _grid("EPSG:32633", lonlat, 10.0, (40, 50), 0.3)
    reader = FakeReader()
    items = {
        "s2-l2a": [reader.item("s2", "s2-l2a", ["s2:B04", "s2:SCL"], T0, grid.pad(8), [1, 3])],
        "s1-grd": [reader.item("s1", "s1-grd", ["s1:VV", "s1:VH"], T1, grid.pad(8))],
        "dem": [reader.item("dem", "dem", ["elevation:dem"], T0, grid.pad(8))],
    }
    lazy = api.stack(items, grid, chunk_size=16, halo=2, reader=reader)
    assert reader.reads == 0
    assert set(lazy.data_vars) >= {"s2-l2a", "s1-grd", "dem"}
    bands = sorted(str(b) for b in lazy["dem:band"].values)
    assert bands == ["elevation:aspect", "elevation:dem", "elevation:slope"]
    values = lazy["s1-grd"].values  # 12 tiles x (S2 bands, S2 SCL, S1, DEM): one build per tile
    assert reader.reads == 48 and np.isfinite(values).any()


def test_layout_keeps_dates_that_pixel_filters_might_drop() -> None:
    lonlat, _ = SITES["slovenia"]
    grid = _grid("EPSG:32633", lonlat, 10.0, (20, 20), 0.3)
    reader = FakeReader()
    items = {
        "s2-l2a": [
            reader.item(f"s2-{i}", "s2-l2a", ["s2:B04", "s2:SCL"], t, grid.pad(4), [1, 3])
            for i, t in enumerate((T0, T1))
        ]
    }
    mods = {"s2-l2a": ModalitySpec(mode="timeseries", options={"min_valid_fraction": 0.99})}
    lazy = api.stack(items, grid, mods, chunk_size=10, reader=reader)
    assert reader.reads == 0 and lazy.sizes["s2-l2a:time"] == 2
    # The texture SCL masks most pixels: every chunk drops both dates, which stay NaN.
    assert np.isnan(lazy["s2-l2a"].values).all()


def test_fake_reader_names_an_unregistered_file() -> None:
    from eo_fusion.errors import ReadError

    grid = _grid("EPSG:32633", SITES["slovenia"][0], 10.0, (4, 4), 0.3)
    reader = FakeReader()
    a = reader.item("a", "ndvi", ["index:ndvi"], T0, grid).bands["index:ndvi"]
    lost = type(a)(a.key, a.asset_key, "fake://nowhere", 1, a.spec)
    with pytest.raises(ReadError, match="nowhere"):
        reader.read([lost], grid, ReadSpec())


def test_aligned_downsampling_reads_a_margin_so_tiles_do_not_change_edges() -> None:
    # A source at half the target's pixel size whose edges are 0.04 target px off (within the
    # 0.05 px "aligned" tolerance) is still averaged: the target's edge pixels overlap source
    # pixels just outside the exact window, so a build on the grid equals a build on a padded
    # grid cropped back (what a lazy chunk does) and GDAL's warp of the whole source.
    lonlat, _ = SITES["slovenia"]
    grid = _grid("EPSG:32633", lonlat, 8.7, (14, 10), 0.3)
    t = grid.transform
    src_t = Affine(t.a / 2, 0, t.c - 19.96 * t.a, 0, t.e / 2, t.f - 19.96 * t.e)
    src = GeoBox((60, 60), src_t, grid.crs)
    reader = FakeReader()
    items = {"ndvi": [reader.item("ndvi", "ndvi", ["index:ndvi"], T0, src, [3])]}
    mods = {"ndvi": ModalitySpec()}
    eager = build_stack(grid, items, mods, reader=reader)["ndvi"].values[0]
    padded = build_stack(grid.pad(3), items, mods, reader=reader)["ndvi"].values[0, 3:-3, 3:-3]
    np.testing.assert_array_equal(eager, padded)
    ref = _reference(src, grid, 3, Resampling.average)
    np.testing.assert_allclose(eager, ref, rtol=0, atol=0.05)
