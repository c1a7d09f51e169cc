"""Resampling rules by band kind, and pixel tracing across CRSs (lon/lat, UTM, LAEA, feet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.testutils import gen_test_image_xy
from rasterio.enums import Resampling

from eo_fusion.bands import get_band
from eo_fusion.catalogs.items import BandAsset
from eo_fusion.grid import grid_from_aoi, horizontal_crs, vertical_datum
from eo_fusion.sources.reader import ReadSpec, read_assets
from eo_fusion.sources.resample import db_to_linear, linear_to_db, resampling_for
from eo_fusion.testing.fake_reader import write_test_raster


def _write(path: Path, arr: np.ndarray, gbox: GeoBox, nodata=None) -> str:
    return str(write_test_raster(path, arr, gbox, nodata=nodata))


def _asset(path: str, key: str, index: int = 1, **enc) -> BandAsset:
    return BandAsset(key, "test", path, index, get_band(key).with_encoding(**enc))


def test_rule_table() -> None:
    assert resampling_for("reflectance", 0.5) == Resampling.bilinear
    assert resampling_for("reflectance", 1.0) == Resampling.bilinear
    assert resampling_for("reflectance", 2.0) == Resampling.average
    assert resampling_for("categorical", 1.0) == Resampling.nearest
    assert resampling_for("categorical", 3.0) == Resampling.mode
    assert resampling_for("osm", 4.0) == Resampling.mode
    assert resampling_for("elevation", 0.25) == Resampling.bilinear
    assert resampling_for("elevation", 1.5) == Resampling.bilinear
    assert resampling_for("elevation", 2.0) == Resampling.average
    # Float rounding of a ratio computed from two transforms does not cross a threshold.
    assert resampling_for("categorical", 1.9999999999999996) == Resampling.mode
    assert resampling_for("elevation", 1.9999999999999996) == Resampling.average
    assert resampling_for("reflectance", 1.0000000000000002) == Resampling.bilinear
    assert resampling_for("sar", 2.0) == Resampling.average


GRID10 = GeoBox((40, 40), Affine(10, 0, 500_000, 0, -10, 5_000_400), "EPSG:32633")


def test_reflectance_average_when_downsampling(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    dn = rng.integers(1, 10000, size=(40, 40)).astype(np.uint16)
    path = _write(tmp_path / "b04.tif", dn, GRID10, nodata=0)
    coarse = GeoBox((10, 10), Affine(40, 0, 500_000, 0, -40, 5_000_400), "EPSG:32633")
    out = read_assets([_asset(path, "s2:B04")], coarse, ReadSpec("reflectance"))[0]
    expected = (dn.astype(np.float64) * 1e-4).reshape(10, 4, 10, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_categorical_mode_keeps_class_codes(tmp_path: Path) -> None:
    labels = np.zeros((40, 40), dtype=np.uint8)
    labels[:, :] = 3
    labels[:20, :20] = 7
    labels[0:2, 20:22] = 9  # minority (4 of 16) inside a 4x4 block of 3s: mode stays 3
    path = _write(tmp_path / "lab.tif", labels, GRID10, nodata=0)
    coarse = GeoBox((10, 10), Affine(40, 0, 500_000, 0, -40, 5_000_400), "EPSG:32633")
    out = read_assets([_asset(path, "label:landcover")], coarse, ReadSpec("categorical"))[0]
    assert set(np.unique(out)) <= {3.0, 7.0}
    assert (out[:5, :5] == 7).all() and (out[5:, :] == 3).all() and out[0, 5] == 3
    # Upsampling by a non-integer factor with nearest never invents classes either.
    fine = GeoBox((53, 53), Affine(7.5, 0, 500_000, 0, -7.5, 5_000_400), "EPSG:32633")
    out = read_assets([_asset(path, "label:landcover")], fine, ReadSpec("categorical"))[0]
    assert set(np.unique(out[np.isfinite(out)])) <= {3.0, 7.0, 9.0}


def test_sar_is_averaged_in_linear_power_not_db(tmp_path: Path) -> None:
    db = np.tile(np.array([[0.0, -20.0], [-10.0, -3.0]], dtype=np.float32), (20, 20))
    path = _write(tmp_path / "vv.tif", db, GRID10)
    coarse = GeoBox((20, 20), Affine(20, 0, 500_000, 0, -20, 5_000_400), "EPSG:32633")
    asset = BandAsset("s1:VV", "vv", path, 1, get_band("s1:VV").with_encoding(nodata=-9999))
    spec = ReadSpec("sar", sar_db_input=True, sar_db_output=True)
    out = read_assets([asset], coarse, spec)[0]
    expected = float(linear_to_db(np.mean(db_to_linear(np.array([0, -20, -10, -3.0])))))
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert abs(expected - np.mean([0, -20, -10, -3.0])) > 4  # the dB mean would be 4.3 dB off
    lin = read_assets([asset], coarse, ReadSpec("sar", sar_db_input=True))[0]
    np.testing.assert_allclose(lin, 10 ** (expected / 10), rtol=1e-4)


def test_nodata_becomes_nan_and_scale_offset_apply(tmp_path: Path) -> None:
    dn = np.full((40, 40), 2000, dtype=np.uint16)
    dn[:10, :10] = 0
    path = _write(tmp_path / "b02.tif", dn, GRID10, nodata=0)
    asset = _asset(path, "s2:B02", scale=1e-4, offset=-0.1)
    out = read_assets([asset], GRID10, ReadSpec("reflectance"))[0]
    assert np.isnan(out[:10, :10]).all()
    np.testing.assert_allclose(out[10:, 10:], 0.1, rtol=1e-6)


# --- pixel tracing ------------------------------------------------------------------------------
# Each case: (source CRS, source pixel size, target CRS, target pixel size, lon/lat of the area).
TRACES = [
    ("EPSG:4326", 0.0001, "EPSG:32633", 10.0, (14.55, 45.87)),
    ("EPSG:32633", 10.0, "EPSG:3035", 10.0, (14.55, 45.87)),
    ("EPSG:3035", 10.0, "EPSG:4326", 0.0001, (14.55, 45.87)),
    ("EPSG:4326", 0.0001, "EPSG:2263", 30.0, (-73.98, 40.75)),  # NY Long Island, US feet
    ("EPSG:2263", 30.0, "EPSG:32618", 10.0, (-73.98, 40.75)),
    ("EPSG:32618", 10.0, "EPSG:2263", 30.0, (-73.98, 40.75)),
]


@pytest.mark.parametrize("rule", [None, Resampling.bilinear], ids=["kind-rule", "bilinear"])
@pytest.mark.parametrize(("src_crs", "src_res", "dst_crs", "dst_res", "where"), TRACES)
def test_pixel_tracing_lands_within_a_tenth_of_a_pixel(
    tmp_path: Path, src_crs, src_res, dst_crs, dst_res, where, rule
) -> None:
    lon, lat = where
    aoi = (lon - 0.012, lat - 0.009, lon + 0.012, lat + 0.009)
    src = grid_from_aoi(aoi, src_res, crs=src_crs)
    img, denorm = gen_test_image_xy(src, "float64")
    path = _write(tmp_path / "xy.tif", img.astype(np.float64), src)
    inner = (lon - 0.008, lat - 0.006, lon + 0.008, lat + 0.006)
    dst = grid_from_aoi(inner, dst_res, crs=dst_crs)
    assets = [BandAsset("index:ndvi", "xy", path, i, get_band("index:ndvi")) for i in (1, 2)]
    out = read_assets(assets, dst, ReadSpec("index", resampling=rule))
    got_x, got_y = denorm(out.astype(np.float64))
    # Where each target pixel centre really is, in source CRS coordinates.
    yy, xx = np.meshgrid(np.arange(dst.shape.y) + 0.5, np.arange(dst.shape.x) + 0.5, indexing="ij")
    ex, ey = dst.transform @ (xx, yy)
    from pyproj import Transformer

    tr = Transformer.from_crs(CRS(dst_crs).proj, CRS(src_crs).proj, always_xy=True)
    ex, ey = tr.transform(ex, ey)
    ok = np.isfinite(got_x) & np.isfinite(got_y)
    assert ok.mean() > 0.95
    err_px = np.hypot((got_x - ex) / src_res, (got_y - ey) / src_res)[ok]
    print(f"pixel-trace {src_crs}->{dst_crs}: max error {err_px.max():.4f} px")
    assert err_px.max() < 0.1, f"max error {err_px.max():.3f} px"


# Compound CRSs (a horizontal CRS + a vertical datum): pixels are placed by the horizontal part.
TRACES_ALL = [
    *TRACES,
    ("EPSG:32633+3855", 10.0, "EPSG:3035", 10.0, (14.55, 45.87)),  # UTM + EGM2008 height
    ("EPSG:4326+3855", 0.0001, "EPSG:32633+3855", 10.0, (14.55, 45.87)),  # Copernicus DEM
    ("EPSG:32633", 10.0, "EPSG:32633", 10.0, (14.55, 45.87)),  # same CRS, sub-pixel offset
]
#: Each modality kind, with the band it reads and the rule its kind uses at ~1x.
KINDS = [
    ("index", "index:ndvi"),
    ("elevation", "elevation:dem"),
    ("sar", "s1:VV"),
    ("categorical", "label:landcover"),
]


def _trace_source(tmp_path: Path, src_crs: str, src_res: float, lon: float, lat: float):
    """An x/y ramp raster around (lon, lat); written with the full (maybe compound) CRS."""
    aoi = (lon - 0.012, lat - 0.009, lon + 0.012, lat + 0.009)
    src = grid_from_aoi(aoi, src_res, crs=src_crs)
    # Shift by 0.37 px so no target grid is aligned with it (odc-geo would paste grids within
    # 0.05 px by default: that was the 0.04 px elevation offset).
    src = GeoBox(src.shape, src.transform * Affine.translation(0.37, -0.21), src.crs)
    img, denorm = gen_test_image_xy(src, "float64")
    path = tmp_path / "xy.tif"
    with rasterio.open(
        path, "w", driver="GTiff", count=2, height=src.shape.y, width=src.shape.x,
        dtype="float64", crs=pyproj.CRS.from_user_input(src_crs).to_wkt(),
        transform=src.transform,
    ) as ds:  # fmt: skip
        ds.write(img)
    return str(path), denorm


@pytest.mark.parametrize(("kind", "key"), KINDS, ids=[k for k, _ in KINDS])
@pytest.mark.parametrize(("src_crs", "src_res", "dst_crs", "dst_res", "where"), TRACES_ALL)
def test_every_kind_lands_within_a_hundredth_of_a_pixel(
    tmp_path: Path, src_crs, src_res, dst_crs, dst_res, where, kind, key
) -> None:
    """Point-sampling rules (bilinear, nearest) trace each target pixel centre to its true
    source position: bilinear within 0.01 px; nearest picks the source pixel that contains the
    true position (within 0.01 px of its edge)."""
    lon, lat = where
    path, denorm = _trace_source(tmp_path, src_crs, src_res, lon, lat)
    dst = grid_from_aoi((lon - 0.008, lat - 0.006, lon + 0.008, lat + 0.006), dst_res, dst_crs)
    assert not dst.crs.proj.is_compound  # the grid takes the horizontal part
    rule = Resampling.nearest if kind == "categorical" else Resampling.bilinear
    assets = [BandAsset(key, "xy", path, i, get_band(key)) for i in (1, 2)]
    out = read_assets(assets, dst, ReadSpec(kind, resampling=rule))
    if kind == "categorical":
        # Class codes come back rounded: trace with the unrounded nearest pick instead.
        out = read_assets(assets, dst, ReadSpec("index", resampling=rule))
    got_x, got_y = denorm(out.astype(np.float64))
    yy, xx = np.meshgrid(np.arange(dst.shape.y) + 0.5, np.arange(dst.shape.x) + 0.5, indexing="ij")
    ex, ey = dst.transform @ (xx, yy)
    src_h = horizontal_crs(src_crs)
    tr = pyproj.Transformer.from_crs(dst.crs.proj, src_h.proj, always_xy=True)
    ex, ey = tr.transform(ex, ey)
    ok = np.isfinite(got_x) & np.isfinite(got_y)
    assert ok.mean() > 0.95
    dx, dy = np.abs(got_x - ex)[ok] / src_res, np.abs(got_y - ey)[ok] / src_res
    # nearest: how far beyond the half pixel of the chosen centre; bilinear: the distance
    err = max(dx.max(), dy.max()) - 0.5 if kind == "categorical" else np.hypot(dx, dy).max()
    print(f"trace {kind} {src_crs}->{dst_crs}: {err:.5f} px")
    assert err < 0.01, f"{kind} {src_crs}->{dst_crs}: {err:.4f} px"


@pytest.mark.parametrize("offset_px", [0.04, 0.001, 1e-4])
def test_a_nearly_aligned_source_is_resampled_not_pasted(tmp_path: Path, offset_px) -> None:
    """The same CRS and pixel size, 0.04 px apart: odc-geo's default tolerance pasted this
    (every value 0.04 px off, and the offset depended on the tile); now it is interpolated."""
    dst = GeoBox((30, 30), Affine(10, 0, 500_000, 0, -10, 5_000_300), "EPSG:32633")
    src = GeoBox((40, 40), Affine(10, 0, 499_950 + 10 * offset_px, 0, -10, 5_000_350), dst.crs)
    img, denorm = gen_test_image_xy(src, "float64")
    path = _write(tmp_path / "dem.tif", img, src)
    assets = [BandAsset("elevation:dem", "xy", path, i, get_band("elevation:dem")) for i in (1, 2)]
    got_x, _ = denorm(read_assets(assets, dst, ReadSpec("elevation")).astype(np.float64))
    want_x = dst.transform.c + (np.arange(30) + 0.5) * 10
    err = np.abs(got_x - want_x[None, :]).max() / 10
    assert err < 1e-5 + 1e-3 * offset_px, f"{err:.5f} px"


def test_compound_crs_vertical_datum_is_named_and_grid_is_horizontal() -> None:
    assert vertical_datum("EPSG:32633+3855") == "EGM2008 height"
    assert vertical_datum("EPSG:32633") is None
    assert horizontal_crs("EPSG:4326+3855").epsg == 4326
    g = grid_from_aoi((14.54, 45.86, 14.56, 45.88), 10, crs="EPSG:32633+3855")
    assert g.crs.epsg == 32633


@pytest.mark.parametrize(
    "dst",
    [
        GeoBox((100, 110), Affine(10, 0, 1040, 0, -10, 4900), "EPSG:32633"),  # 2x, aligned
        GeoBox((97, 101), Affine(7, 0, 1003, 0, -7, 4990), "EPSG:32633"),  # 20/7, offset
        GeoBox((130, 130), Affine(10, 0, 990, 0, -10, 5010), "EPSG:32633"),  # beyond the edges
    ],
)
@pytest.mark.parametrize("rule", [Resampling.bilinear, Resampling.nearest])
def test_axis_aligned_fast_path_matches_gdal(dst: GeoBox, rule: Resampling) -> None:
    from eo_fusion.sources.resample import axis_aligned_resample, warp

    rng = np.random.default_rng(0)
    src = rng.random((2, 60, 60)).astype(np.float32)
    src[1, 20:23, 30:33] = np.nan
    src_gbox = GeoBox((60, 60), Affine(20, 0, 1000, 0, -20, 5000), "EPSG:32633")
    fast = np.full((2, *dst.shape.yx), np.nan, dtype=np.float32)
    ref = fast.copy()
    assert axis_aligned_resample(src, src_gbox, fast, dst, rule)
    warp(src, src_gbox, ref, dst, rule)
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(ref))
    np.testing.assert_allclose(fast, ref, atol=1e-6)
