"""Pixel reads against a misbehaving file server: cut transfers healed by a fresh fetch (GDAL's
cache cleared), permanent failures not retried, trickles abandoned, oversized reads refused."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox

from eo_fusion.bands import get_band
from eo_fusion.catalogs.items import BandAsset
from eo_fusion.errors import ReadError
from eo_fusion.gdal import GDALOptions
from eo_fusion.sources.reader import ReadSpec, read_assets, release_files
from eo_fusion.testing.faults import Fault, serve_faults

DEM = "data/slovenia/DEM_slovenia_10m.tif"
FAST = GDALOptions(http_max_retry=0, http_retry_delay_s=0.05, http_timeout_s=10)


def _asset(href: str) -> BandAsset:
    return BandAsset("elevation:dem", "dem", href, 1, get_band("elevation:dem"))


def _grid(sample_dir) -> GeoBox:
    with rasterio.open(sample_dir / DEM) as ds:
        return GeoBox(ds.shape, ds.transform, ds.crs.to_wkt())


def _read(url: str, gbox: GeoBox, gdal: GDALOptions = FAST) -> np.ndarray:
    return read_assets([_asset(url)], gbox, ReadSpec(kind="elevation"), gdal=gdal)


def _gets(srv, path: str) -> int:
    return sum(1 for r in srv.log() if r["path"] == "/" + path and r["method"] == "GET")


def test_cut_transfer_is_refetched_not_served_from_cache(sample_dir):
    """A range response cut at 200 bytes makes GDAL 3.10 open the file with zeros and no
    georeferencing; the read notices, clears GDAL's cache for the file and fetches it again."""
    gbox = _grid(sample_dir)
    expected = _read(str(sample_dir / DEM), gbox)
    with serve_faults(sample_dir) as srv:
        srv.fault("/" + DEM, Fault("truncate", keep_bytes=200))
        got = _read(srv.url_for(DEM), gbox)
        assert _gets(srv, DEM) >= 2  # the first (cut) answer and a fresh fetch
    np.testing.assert_array_equal(got, expected)
    assert np.isfinite(got).mean() > 0.99


def test_truncated_file_is_permanent(sample_dir, tmp_path):
    """A file that is itself truncated fails the same way after one fresh fetch: one retry, not
    the full budget, and the message says the file is damaged."""
    data = (sample_dir / DEM).read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[:300])
    with serve_faults(tmp_path) as srv:
        with pytest.raises(ReadError, match="truncated or corrupt") as err:
            _read(srv.url_for("cut.tif"), _grid(sample_dir), FAST)
        assert "the file itself is damaged" in str(err.value)
        first = _gets(srv, "cut.tif")
        srv.clear()
        with pytest.raises(ReadError):
            _read(srv.url_for("cut.tif"), _grid(sample_dir), GDALOptions(read_attempts=10))
        assert _gets(srv, "cut.tif") <= first + 1  # not retried ten times


def test_not_a_raster_and_missing_are_not_retried(sample_dir, tmp_path):
    (tmp_path / "junk.tif").write_bytes(b"this is not a tiff " * 100)
    with serve_faults(tmp_path) as srv:
        with pytest.raises(ReadError, match="not retried") as err:
            _read(srv.url_for("junk.tif"), _grid(sample_dir), GDALOptions(read_attempts=5))
        assert "junk.tif" in str(err.value) and _gets(srv, "junk.tif") <= 1
        with pytest.raises(ReadError, match=r"http 404, \(not retried\)") as err:
            _read(srv.url_for("gone.tif"), _grid(sample_dir), GDALOptions(read_attempts=5))
        assert "gone.tif" in str(err.value) and "refresh the catalog items" in str(err.value)
        assert sum(1 for r in srv.log() if "gone.tif" in r["path"]) <= 3  # HEADs, no retry loop


def test_server_errors_are_retried_then_reported(sample_dir):
    gbox = _grid(sample_dir)
    with serve_faults(sample_dir) as srv:
        srv.fault("/" + DEM, Fault("status", status=503, times=2))
        got = _read(srv.url_for(DEM), gbox, GDALOptions(http_max_retry=0, read_attempts=4,
                                                         http_retry_delay_s=0.05))  # fmt: skip
        assert np.isfinite(got).mean() > 0.99
        srv.fault("/" + DEM, Fault("status", status=503, times=-1))
        release_files()  # else the open file and its cached blocks answer without the server
        with pytest.raises(ReadError, match="after retries") as err:
            _read(srv.url_for(DEM), gbox, GDALOptions(http_max_retry=0, read_attempts=2,
                                                      http_retry_delay_s=0.05))  # fmt: skip
    assert DEM in str(err.value)


def test_server_ignoring_ranges_is_a_permanent_error(sample_dir):
    """GDAL gives up on a (non-tiny) file whose server answers range requests with 200."""
    naip = "data/naip/m_4709963_se_14_1_20200831.tif"
    with rasterio.open(sample_dir / naip) as ds:
        gbox = GeoBox(ds.shape, ds.transform, ds.crs.to_wkt())[0:64, 0:64]
    with serve_faults(sample_dir) as srv:
        srv.fault("/" + naip, Fault("ignore_range", times=-1))
        asset = BandAsset("aerial:red", "image", srv.url_for(naip), 1, get_band("aerial:red"))
        with pytest.raises(ReadError, match=r"server ignores byte ranges, \(not retried\)") as e:
            read_assets([asset], gbox, ReadSpec(), gdal=GDALOptions(read_attempts=5))
        assert "range-capable server" in str(e.value) and _gets(srv, naip) == 1


def test_trickling_file_server_is_abandoned(sample_dir):
    gbox = _grid(sample_dir)
    slow = GDALOptions(http_max_retry=0, read_attempts=1, low_speed_limit_bps=1000,
                       low_speed_time_s=1)  # fmt: skip
    with serve_faults(sample_dir) as srv:
        srv.fault("/" + DEM, Fault("trickle", seconds=0.05, times=-1))
        t0 = time.monotonic()
        with pytest.raises(ReadError):
            _read(srv.url_for(DEM), gbox, slow)
        assert time.monotonic() - t0 < 8


def test_huge_read_refused_before_decoding(tmp_path):
    """A 100000 x 100000 TIFF (sparse: a few kB on disk) read whole onto a coarse grid."""
    path = tmp_path / "huge.tif"
    tf = Affine(1.0, 0, 500_000, 0, -1.0, 5_100_000)
    with rasterio.open(path, "w", driver="GTiff", width=100_000, height=100_000, count=1,
                       dtype="float32", crs="EPSG:32633", transform=tf, tiled=True,
                       compress="deflate", SPARSE_OK="TRUE", BIGTIFF="YES"):  # fmt: skip
        pass
    assert path.stat().st_size < 50_000_000
    coarse = GeoBox((100, 100), Affine(1000.0, 0, 500_000, 0, -1000.0, 5_100_000), "EPSG:32633")
    t0 = time.monotonic()
    with pytest.raises(ReadError, match="exceeds the read budget") as err:
        _read(str(path), coarse, GDALOptions())
    assert "huge.tif" in str(err.value) and "'dem'" in str(err.value)
    assert "overviews" in str(err.value) and time.monotonic() - t0 < 5
    # A smaller budget refuses a normal read too: the budget is configurable.
    with pytest.raises(ReadError, match="read budget"):
        _read(str(path), coarse.zoom_to(shape=(10, 10)), GDALOptions(max_read_pixels=1000))
