"""Sentinel-1 GRD amplitude DN -> sigma0 with the calibration annotation, or a refusal.

The annotation is a synthetic XML in the layout of ESA's ``calibration-*.xml`` (calibrationVector
elements with line, pixel and the sigmaNought/betaNought/gamma/dn LUTs, as read by
xarray-sentinel); the expected values are computed independently here with scipy's
RegularGridInterpolator on the same sparse grid.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from scipy.interpolate import RegularGridInterpolator

from eo_fusion.catalogs.local import local_item
from eo_fusion.catalogs.normalize import normalize_item
from eo_fusion.config import modality_spec
from eo_fusion.errors import ConfigError, ReadError
from eo_fusion.modalities import search_properties
from eo_fusion.sources.reader import RasterioReader
from eo_fusion.sources.s1 import load_s1
from eo_fusion.sources.s1_calibration import annotation_key, parse_calibration

GRID = GeoBox((30, 40), Affine(10, 0, 600_000, 0, -10, 5_000_300), "EPSG:32632")
GDAL = RasterioReader()
FIX = Path(__file__).resolve().parents[1] / "fixtures/stac/synthetic_providers"

LINES = [0, 12, 24, 36]  # the last vector lies beyond the 30 image lines, as in real products
PIXELS = [0, 10, 20, 30, 39]


def _sigma_lut(line: int, pixel: int) -> float:
    return 300.0 + 2.0 * pixel - 1.5 * line  # smooth in range and azimuth, like the real LUTs


def _annotation(path: Path) -> Path:
    vecs = []
    for line in LINES:
        sig = " ".join(f"{_sigma_lut(line, p):.6e}" for p in PIXELS)
        vecs.append(
            "<calibrationVector>"
            f"<azimuthTime>2024-06-03T05:33:5{line // 12}.000000</azimuthTime><line>{line}</line>"
            f'<pixel count="{len(PIXELS)}">{" ".join(map(str, PIXELS))}</pixel>'
            f'<sigmaNought count="{len(PIXELS)}">{sig}</sigmaNought>'
            f'<betaNought count="{len(PIXELS)}">{" ".join(["2.37e+02"] * len(PIXELS))}</betaNought>'
            f'<gamma count="{len(PIXELS)}">{sig}</gamma>'
            f'<dn count="{len(PIXELS)}">{" ".join(["2.37e+02"] * len(PIXELS))}</dn>'
            "</calibrationVector>"
        )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><calibration><adsHeader><polarisation>VV'
        "</polarisation></adsHeader><calibrationInformation><absoluteCalibrationConstant>1.0"
        "</absoluteCalibrationConstant></calibrationInformation>"
        f'<calibrationVectorList count="{len(LINES)}">{"".join(vecs)}</calibrationVectorList>'
        "</calibration>"
    )
    path.write_text(xml)
    return path


def _grd(tmp: Path, dn: np.ndarray, *, annotation: bool = True):
    vv = tmp / "iw-vv.tiff"
    with rasterio.open(
        vv, "w", driver="GTiff", count=1, height=30, width=40, dtype="uint16",
        crs=GRID.crs.to_wkt(), transform=GRID.transform, nodata=0,
    ) as ds:  # fmt: skip
        ds.write(dn.astype(np.uint16), 1)
    when = datetime(2024, 6, 3, 5, 33, tzinfo=UTC)
    props = {"sat:orbit_state": "descending", "sat:relative_orbit": 22}
    item = local_item("S1A_GRD", "s1-grd", {"s1:VV": vv}, when, units="amplitude", properties=props)
    other = {"schema-calibration-vv": str(_annotation(tmp / "calibration-iw-vv.xml"))}
    return dataclasses.replace(item, other_assets=other if annotation else {})


def test_sigma0_is_dn_squared_over_interpolated_lut(tmp_path: Path):
    rng = np.random.default_rng(0)
    dn = rng.integers(20, 900, size=(30, 40))
    dn[3, 4] = 0  # nodata
    item = _grd(tmp_path, dn)
    spec = modality_spec("s1-grd", {"options": {"units": "linear"}})
    res = load_s1([item], GRID, spec, GDAL)
    interp = RegularGridInterpolator(
        (LINES, PIXELS), np.array([[_sigma_lut(li, p) for p in PIXELS] for li in LINES])
    )
    rows, cols = np.meshgrid(np.arange(30), np.arange(40), indexing="ij")
    a = interp(np.stack([rows.ravel(), cols.ravel()], -1)).reshape(30, 40)
    expected = dn.astype(np.float64) ** 2 / a**2
    got = res.data[0]
    assert np.isnan(got[3, 4])
    ok = np.isfinite(got)
    np.testing.assert_allclose(got[ok], expected[ok], rtol=1e-5)
    assert res.attrs["backscatter"] == ["sigma0"]
    # The LUT at line 0, pixel 0 is 300: DN 300 -> sigma0 1 -> 0 dB.
    lut = parse_calibration((tmp_path / "calibration-iw-vv.xml").read_bytes())
    assert lut.at(np.array([0.0]), np.array([0.0]))[0, 0] == pytest.approx(300.0)


def test_dn_is_never_power(tmp_path: Path):
    """The issue's example: DN 100 is 40 dB of DN^2, not 20 dB (calibration: none)."""
    item = _grd(tmp_path, np.full((30, 40), 100), annotation=False)
    spec = modality_spec("s1-grd", {"options": {"calibration": "none"}})
    res = load_s1([item], GRID, spec, GDAL)
    np.testing.assert_allclose(res.data[0], 40.0, atol=1e-4)
    assert res.attrs["backscatter"] == ["uncalibrated DN^2"]


def test_refused_without_a_readable_annotation(tmp_path: Path):
    item = _grd(tmp_path, np.full((30, 40), 100), annotation=False)
    with pytest.raises(
        ReadError, match=r"item S1A_GRD asset 'iw-vv' \(amplitude DN\): no calibration"
    ):
        load_s1([item], GRID, modality_spec("s1-grd"), GDAL)
    remote = dataclasses.replace(
        item, other_assets={"schema-calibration-vv": "s3://sentinel-s1-l1c/x/calibration-iw-vv.xml"}
    )
    with pytest.raises(ReadError, match=r"schema-calibration-vv.*scheme 's3' is not fetched"):
        load_s1([remote], GRID, modality_spec("s1-grd"), GDAL)
    internal = dataclasses.replace(
        item, other_assets={"schema-calibration-vv": "https://169.254.169.254/calibration-vv.xml"}
    )
    with pytest.raises(ReadError, match="loopback/private"):
        load_s1([internal], GRID, modality_spec("s1-grd"), GDAL)
    broken = tmp_path / "broken-calibration-vv.xml"
    broken.write_text("<calibration><calibrationVectorList/></calibration>")
    bad = dataclasses.replace(item, other_assets={"schema-calibration-vv": str(broken)})
    with pytest.raises(ReadError, match="no calibrationVector"):
        load_s1([bad], GRID, modality_spec("s1-grd"), GDAL)


def test_provider_items_name_their_annotations():
    raw = json.loads((FIX / "planetary-computer__sentinel-1-grd.json").read_text())
    pc = normalize_item(raw)
    assert pc.bands["s1:VV"].spec.units == "amplitude"
    # The annotation is signed like the bands (PC blobs need a token); other metadata is not.
    signed = normalize_item(raw, sign=lambda h: h + "?sig=x")
    assert signed.other_assets["schema-calibration-vv"].endswith("?sig=x")
    assert not signed.other_assets["safe-manifest"].endswith("?sig=x")
    assert annotation_key(pc, pc.bands["s1:VV"]) == "schema-calibration-vv"
    assert annotation_key(pc, pc.bands["s1:VH"]) is None  # this item lists only the VV one
    cdse = normalize_item(json.loads((FIX / "cdse__sentinel-1-grd.json").read_text()))
    assert annotation_key(cdse, cdse.bands["s1:VH"]) == "schema-calibration-vh"
    assert cdse.properties["sat:orbit_state"] == "descending"
    assert cdse.properties["sat:relative_orbit"] == 22
    rtc = normalize_item(json.loads((FIX / "planetary-computer__sentinel-1-rtc.json").read_text()))
    assert rtc.modality == "s1-rtc" and rtc.bands["s1:VV"].spec.units == "linear"  # gamma0 power


def test_orbit_options_are_search_filters_and_reader_filters(tmp_path: Path):
    assert search_properties("s1-grd", {"orbit": "ascending", "relative_orbit": 22}) == {
        "sat:orbit_state": "ascending", "sat:relative_orbit": 22,
    }  # fmt: skip
    assert search_properties("s2-l2a", {}) == {}
    item = _grd(tmp_path, np.full((30, 40), 300))
    spec = modality_spec("s1-grd", {"options": {"relative_orbit": 23}})
    with pytest.raises(Exception, match="no Sentinel-1 items"):
        load_s1([item], GRID, spec, GDAL)
    assert load_s1([item], GRID, modality_spec("s1-grd", {"options": {"relative_orbit": 22}}), GDAL)
    with pytest.raises(ConfigError, match="calibration"):
        modality_spec("s1-rtc", {"options": {"calibration": "none"}})


# ------------------------------------------------------------------------------------------------
# GCP-georeferenced files (radar geometry): warped with the GCPs, not an approximate affine
# ------------------------------------------------------------------------------------------------


def _gcp_file(path: Path, n_rows: int = 120, n_cols: int = 160, theta_deg: float = 12.0,
              res: float = 1000.0):  # fmt: skip
    """A file in "radar geometry": pixel (row, col) sits on a rotated UTM 32N grid (``res`` m;
    1 km: a 160 km x 120 km footprint, the size of an IW scene, so lon/lat curve), its
    georeferencing given only as a 7 x 9 grid of lon/lat GCPs. Band 1 holds the column number,
    band 2 the row: bilinear values tell exactly where in the source a target pixel was
    sampled."""
    from pyproj import Transformer
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    th = np.deg2rad(theta_deg)
    truth = Affine(
        res * np.cos(th), res * np.sin(th), 500_000, res * np.sin(th), -res * np.cos(th), 5_100_000
    )
    to_ll = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    gcps = []
    for r in np.linspace(0, n_rows, 7):
        for c in np.linspace(0, n_cols, 9):
            x, y = truth * (c, r)
            lon, lat = to_ll.transform(x, y)
            gcps.append(GroundControlPoint(row=r, col=c, x=lon, y=lat, z=0.0))
    rows, cols = np.mgrid[0:n_rows, 0:n_cols]
    with rasterio.open(path, "w", driver="GTiff", count=2, height=n_rows, width=n_cols,
                       dtype="float32") as ds:  # fmt: skip
        ds.write(cols.astype(np.float32), 1)
        ds.write(rows.astype(np.float32), 2)
        ds.gcps = (gcps, CRS.from_epsg(4326))
    return path, truth


def test_gcp_file_is_warped_with_its_gcps(tmp_path: Path):
    from eo_fusion.sources.reader import ReadSpec, read_assets

    path, truth = _gcp_file(tmp_path / "grd.tif")
    with rasterio.open(path) as ds:
        assert ds.transform.is_identity and len(ds.gcps[0]) == 63
    target = GeoBox((40, 50), Affine(1000, 0, 535_353.0, 0, -1000, 5_049_003.0), "EPSG:32632")
    item = local_item("S1_GCP", "s1-grd", {"s1:VV": (path, 1), "s1:VH": (path, 2)},
                      datetime(2024, 6, 3, tzinfo=UTC), units="linear",
                      crs="EPSG:4326")  # fmt: skip
    got_c, got_r = read_assets(
        [item.bands["s1:VV"], item.bands["s1:VH"]], target, ReadSpec(kind="sar")
    )
    # Where each target pixel centre lies in the source: the inverse of the true geometry.
    ty, tx = np.mgrid[0:40, 0:50] + 0.5
    x, y = target.transform * (tx, ty)
    c, r = ~truth * (x, y)
    ok = np.isfinite(got_c) & np.isfinite(got_r)
    assert ok.mean() > 0.95
    err = np.hypot(got_c - (c - 0.5), got_r - (r - 0.5))[ok]
    assert err.max() < 0.01, f"max tracing error {err.max():.4f} px"
    # The affine fitted to the same GCPs (what from_gcps, or an item's proj:transform, gives) is
    # off by far more than that over a scene: the exact GCP warp is what makes the difference.
    from pyproj import Transformer
    from rasterio.transform import from_gcps

    with rasterio.open(path) as ds:
        fit = from_gcps(ds.gcps[0])
    lon, lat = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True).transform(x, y)
    cf, rf = ~fit * (lon, lat)
    assert np.hypot(cf - c, rf - r).max() > 0.3  # 0.39 px here, 0.003 px for the GCP warp
