"""STAC searches against a misbehaving API: Retry-After, trickles (overall deadline), bad JSON
(permanent: not retried), paging loops, item cap."""

from __future__ import annotations

import time

import pytest

from eo_fusion.catalogs.providers import CatalogSpec
from eo_fusion.catalogs.search import Catalog
from eo_fusion.errors import SearchError
from eo_fusion.retry import classify
from eo_fusion.testing.faults import Fault, serve_faults

CONFORMS = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"]


def _item(n: int) -> dict:
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": f"item-{n}", "collection": "c",
        "geometry": {"type": "Point", "coordinates": [10.0, 50.0]},
        "bbox": [10.0, 50.0, 10.0, 50.0], "links": [], "assets": {},
        "properties": {"datetime": "2020-01-01T00:00:00Z"},
    }  # fmt: skip


def _api(srv, pages: int = 1, per_page: int = 2) -> None:
    srv.route("/", {"type": "Catalog", "id": "f", "description": "t", "stac_version": "1.0.0",
                    "conformsTo": CONFORMS,
                    "links": [{"rel": "self", "href": "{base}/"},
                              {"rel": "search", "href": "{base}/search", "method": "POST",
                               "type": "application/geo+json"}]})  # fmt: skip
    for p in range(pages):
        feats = [_item(p * per_page + k) for k in range(per_page)]
        links = [{"rel": "next", "href": f"{{base}}/p{p + 1}", "method": "GET"}]
        srv.route("/search" if p == 0 else f"/p{p}",
                  {"type": "FeatureCollection", "features": feats,
                   "links": links if p + 1 < pages else []})  # fmt: skip


def _catalog(url: str, **kw: object) -> Catalog:
    opts = {"timeout_s": 5.0, "retries": 2, "backoff_s": 0.01, "max_pages": 50}
    opts.update(kw)
    return Catalog(CatalogSpec(name="faulty", kind="stac-api", url=url, local=True, **opts))


def _posts(srv) -> int:
    return sum(1 for r in srv.log() if r["path"] == "/search" and r["method"] == "POST")


def test_retry_after_is_honoured():
    with serve_faults() as srv:
        _api(srv)
        srv.fault("/search", Fault("status", status=429, headers={"Retry-After": "1"}))
        t0 = time.monotonic()
        res = _catalog(srv.url).search(collections=["c"])
        waited = time.monotonic() - t0
        assert [i.id for i in res.items] == ["item-0", "item-1"] and _posts(srv) == 2
    assert waited >= 0.9  # the server asked for 1 s


def test_trickling_server_cannot_hold_a_search():
    """One byte per 0.1 s: each read returns well within the 5 s timeout, the deadline stops it."""
    with serve_faults() as srv:
        _api(srv)
        srv.fault("/search", Fault("trickle", seconds=0.1, times=-1))
        t0 = time.monotonic()
        with pytest.raises(SearchError, match=r"overall deadline of 1\.5 s") as err:
            _catalog(srv.url, search_deadline_s=1.5).search(collections=["c"])
        elapsed = time.monotonic() - t0
    assert elapsed < 3.0, elapsed
    assert "trickling" in str(err.value)


def test_stall_longer_than_the_deadline():
    with serve_faults() as srv:
        _api(srv)
        srv.fault("/search", Fault("stall", seconds=30, times=-1))
        t0 = time.monotonic()
        with pytest.raises(SearchError, match="deadline"):
            _catalog(srv.url, timeout_s=20.0, search_deadline_s=1.0).search(collections=["c"])
        assert time.monotonic() - t0 < 2.5


def test_bad_json_is_permanent_and_not_retried():
    with serve_faults() as srv:
        _api(srv)
        srv.fault("/search", Fault("bad_json", times=-1))
        with pytest.raises(SearchError, match="faulty") as err:
            _catalog(srv.url, retries=3).search(collections=["c"])
        assert _posts(srv) == 1  # a broken answer is not a reason to ask again
    assert "retry later" not in str(err.value)
    assert not classify(err.value).transient


def test_connection_reset_is_transient_and_retried():
    with serve_faults() as srv:
        _api(srv)
        srv.fault("/search", Fault("reset", times=1))
        res = _catalog(srv.url, retries=2).search(collections=["c"])
        assert len(res.items) == 2 and _posts(srv) >= 1


def test_item_cap_truncates_and_says_so(caplog):
    with serve_faults() as srv:
        _api(srv, pages=6, per_page=3)
        res = _catalog(srv.url, item_cap=7).search(collections=["c"])
    assert len(res.items) == 7 and res.truncated
    assert "item_cap" in caplog.text and "truncated" in repr(res)


def test_page_cap_truncates():
    with serve_faults() as srv:
        _api(srv, pages=6, per_page=2)
        res = _catalog(srv.url, max_pages=3).search(collections=["c"])
    assert res.pages == 3 and res.truncated and len(res.items) == 6


def test_paging_loop_detected():
    with serve_faults() as srv:
        _api(srv, pages=3)
        back = [{"rel": "next", "href": "{base}/p1", "method": "GET"}]
        srv.route("/p2", {"type": "FeatureCollection", "features": [_item(9)], "links": back})
        with pytest.raises(SearchError, match="paging loop"):
            _catalog(srv.url).search(collections=["c"])
