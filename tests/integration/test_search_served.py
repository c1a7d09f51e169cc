"""Searches against the sample catalog served as a real STAC API (rustac) on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest
import rasterio

from eo_fusion.catalogs.search import open_catalog
from eo_fusion.catalogs.serve import serve_catalog
from eo_fusion.errors import UnsafeURLError


@pytest.fixture(scope="module")
def served(sample_dir):
    with serve_catalog(sample_dir / "stac") as srv:
        yield srv


def _ids(result):
    return [i.id for i in result.items]


def test_bbox_datetime_cloud(served, sample_dir):
    cat = served.catalog()
    slovenia = (14.55, 45.86, 14.57, 45.88)
    found = cat.search("s2-l1c", bbox=slovenia, datetime="2015-07-01/2015-09-30")
    assert _ids(found) == [f"slovenia-s2-l1c-2015{d}" for d in ("0711", "0731", "0820", "0830",
                                                                 "0909")]  # fmt: skip
    # The data README calls 07-31 partly cloudy and 08-20 cloudy: a 20 % cap removes them.
    clear = cat.search("s2-l1c", bbox=slovenia, datetime="2015-07-01/2015-09-30", max_cloud=20)
    assert _ids(clear) == ["slovenia-s2-l1c-20150711", "slovenia-s2-l1c-20150830",
                           "slovenia-s2-l1c-20150909"]  # fmt: skip
    # Same query on the files directly gives the same answer.
    assert _ids(clear) == _ids(
        open_catalog("sample").search(
            "s2-l1c", bbox=slovenia, datetime="2015-07-01/2015-09-30", max_cloud=20
        )
    )
    # A bbox elsewhere (North Dakota) finds no Slovenian scene but the NAIP quarter-quad.
    assert _ids(cat.search("s2-l1c", bbox=(-99.2, 47.0, -99.1, 47.1))) == []
    naip = cat.search("aerial", bbox=(-99.2, 47.0, -99.1, 47.1), datetime="2016")
    assert _ids(naip) == ["naip-m_4709963_se_14_1_20160816"]


def test_paging_and_max_items(served, sample_dir):
    stamps = json.loads((sample_dir / "data/slovenia/timestamps.json").read_text())
    spec = served.catalog().spec.model_copy(update={"page_size": 10})
    from eo_fusion.catalogs.search import Catalog

    result = Catalog(spec).search("ndvi")
    assert len(result) == len(stamps) == 68 and result.pages == 7
    assert len({i.id for i in result.items}) == 68
    got = sorted(n.datetime.date() for n in result.normalized)
    assert got == sorted(date.fromisoformat(s[:10]) for s in stamps)
    assert len(Catalog(spec).search("ndvi", max_items=15)) == 15


def test_assets_read_through_the_range_server(served, sample_dir):
    cat = served.catalog()
    n = cat.search("dem", bbox=(14.55, 45.86, 14.57, 45.88)).normalized[0]
    band = n.bands["elevation:dem"]
    assert band.href.startswith(served.files.url)
    with (
        rasterio.open(band.href) as remote,
        rasterio.open(sample_dir / "data/slovenia/DEM_slovenia_10m.tif") as local,
    ):
        np.testing.assert_array_equal(remote.read(1), local.read(1))
    assert served.files.log.bytes_sent(band.href) > 0


def test_loopback_assets_refused_for_a_remote_catalog(served):
    """The same items, attributed to a catalog not declared local, are refused by URL policy."""
    result = served.catalog().search("dem", max_items=1)
    result.catalog = result.catalog.model_copy(
        update={"local": False, "allowed_schemes": ["https", "http"]}
    )
    with pytest.raises(UnsafeURLError, match="loopback"):
        _ = result.normalized


def test_cli_search_table_and_output(served, tmp_path, capsys):
    from eo_fusion.cli import main

    out = tmp_path / "items.parquet"
    rc = main(["search", "--catalog", served.api_url, "--modality", "s2-l2a", "--max-items", "3",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "3 items" in text and "2017-06-13" in text and "B8A" in text
    assert len(open_catalog(out).search().items) == 3
