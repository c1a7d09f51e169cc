"""The range-capable HTTP file server, exercised by GDAL's /vsicurl like cloud storage would be."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from eo_fusion.catalogs.fileserver import serve_directory

NAIP = "data/naip/m_4709963_se_14_1_20200831.tif"  # a tiled COG (512 px blocks, overviews)


def test_gdal_window_read_over_http_fetches_only_a_fraction(sample_dir):
    local = sample_dir / NAIP
    size = local.stat().st_size
    with serve_directory(sample_dir) as srv:
        url = srv.url_for(NAIP)
        env = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_CACHE_SIZE": "0"}
        with rasterio.Env(**env), rasterio.open("/vsicurl/" + url) as ds:
            remote = ds.read(1, window=Window(0, 0, 64, 64))
        with rasterio.open(local) as ds:
            expected = ds.read(1, window=Window(0, 0, 64, 64))
        np.testing.assert_array_equal(remote, expected)
        sent = srv.log.bytes_sent(url)
        ranged = [r for r in srv.log.records if r.path.endswith(NAIP) and r.status == 206]
    assert ranged, "GDAL should have used range requests"
    assert 0 < sent < 0.5 * size, f"window read fetched {sent} of {size} bytes"


@pytest.mark.parametrize("in_process", [False, True], ids=["child-process", "in-process"])
def test_range_head_and_errors(sample_dir, in_process):
    local = sample_dir / NAIP
    data = local.read_bytes()
    with serve_directory(sample_dir, in_process=in_process) as srv:
        url = srv.url_for(NAIP)
        req = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
            assert resp.read() == data[10:20]
        req = urllib.request.Request(url, headers={"Range": "bytes=-5"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.read() == data[-5:]
        req = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.headers["Accept-Ranges"] == "bytes"
            assert int(resp.headers["Content-Length"]) == len(data)
        for bad in (srv.url + "/data/nope.tif", srv.url + "/../../etc/passwd"):
            try:
                urllib.request.urlopen(bad, timeout=5)
            except urllib.error.HTTPError as e:
                assert e.code == 404
            else:
                raise AssertionError(f"{bad} should be 404")
        req = urllib.request.Request(url, headers={"Range": f"bytes={len(data) + 5}-"})
        try:
            urllib.request.urlopen(req, timeout=5)
        except urllib.error.HTTPError as e:
            assert e.code == 416
        assert srv.log.requests(url, "HEAD") == 1
        assert srv.log.by_path()[f"/{NAIP}"][0] == 4
