"""Skipped items and empty-result diagnostics, against a real local STAC API and local catalogs.

The API (127.0.0.1, nothing mocked on the client side) lists two collections, filters POST
/search by the collections it is sent and records each request body, so the tests can see what
the client asked the server to filter. Its items are the hand-written provider items of
tests/fixtures/stac/synthetic_providers plus broken ones (unknown collection, null geometry,
asset without href).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from eo_fusion.catalogs.diagnostics import explain_empty
from eo_fusion.catalogs.fileserver import serve_handler
from eo_fusion.catalogs.providers import CatalogSpec
from eo_fusion.catalogs.query import SearchQuery
from eo_fusion.catalogs.results import EmptySearchError
from eo_fusion.catalogs.search import Catalog, open_catalog

FIX = Path(__file__).resolve().parents[1] / "fixtures/stac/synthetic_providers"
CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/collections",
]


def _fixture(name: str) -> dict:
    return json.loads((FIX / f"{name}.json").read_text())


def _features() -> list[dict]:
    landsat = _fixture("earth-search-v1__landsat-c2-l2")
    s2 = _fixture("earth-search-v1__sentinel-2-c1-l2a")
    unknown = copy.deepcopy(s2)
    unknown.update(id="mystery-1", collection="my-private-collection")
    unknown["properties"] = {"datetime": "2024-06-15T10:30:00Z"}  # nothing tells its modality
    null_geom = copy.deepcopy(landsat)
    null_geom.update(id="LC08_nogeom", geometry=None, bbox=None)
    no_href = copy.deepcopy(landsat)
    no_href["id"] = "LC08_nohref"
    del no_href["assets"]["swir22"]["href"]
    return [landsat, s2, unknown, null_geom, no_href]


def _collection(cid: str, base: str) -> dict:
    return {
        "type": "Collection", "id": cid, "stac_version": "1.0.0", "description": cid,
        "license": "proprietary", "links": [{"rel": "self", "href": f"{base}/collections/{cid}"}],
        "extent": {"spatial": {"bbox": [[8.0, 44.0, 17.0, 47.5]]},
                   "temporal": {"interval": [["2013-03-18T00:00:00Z", None]]}},
    }  # fmt: skip


class _State:
    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.lock = threading.Lock()


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    ids = ["landsat-c2-l2", "sentinel-2-c1-l2a", "sentinel-2-l2a"]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            return

        def _json(self, doc: dict, status: int = 200) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            base = f"http://{self.headers['Host']}"
            if self.path.rstrip("/") == "/collections":
                self._json({"collections": [_collection(c, base) for c in ids], "links": []})
                return
            if self.path.startswith("/collections/"):
                self._json(_collection(self.path.split("/")[2], base))
                return
            self._json({
                "type": "Catalog", "id": "api", "description": "test API",
                "stac_version": "1.0.0", "conformsTo": CONFORMS,
                "links": [
                    {"rel": "self", "href": base + "/"}, {"rel": "root", "href": base + "/"},
                    {"rel": "data", "href": base + "/collections"},
                    {"rel": "search", "href": base + "/search", "method": "POST",
                     "type": "application/geo+json"},
                ],
            })  # fmt: skip

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                state.bodies.append(body)
            wanted = set(body.get("collections") or [])
            feats = [f for f in _features() if not wanted or f["collection"] in wanted]
            self._json({"type": "FeatureCollection", "features": feats, "links": []})

    return Handler


def _api(url: str, **kw) -> Catalog:
    spec = CatalogSpec(name="api", kind="stac-api", url=url, local=True,
                       allowed_schemes=["https", "http", "s3"], retries=0, **kw)  # fmt: skip
    return Catalog(spec)


def test_url_catalog_sends_the_modality_collection_to_the_api():
    state = _State()
    with serve_handler(lambda: _handler(state)) as (url, _):
        result = open_catalog(url).search("landsat-c2-l2", bbox=(13, 45, 14, 46))
    assert state.bodies[-1]["collections"] == ["landsat-c2-l2"]  # server-side, not client-side
    assert [i.id for i in result.items] == ["LC08_L2SP_191028_20230716_02_T1", "LC08_nohref"]
    # the asset without href is dropped (and recorded), the rest of its item kept
    assert "landsat:OLI_B7" not in {
        k for n in result.normalized if n.id == "LC08_nohref" for k in n.bands
    }
    reasons = {(s.id, s.asset): s.reason for s in result.skipped}
    assert reasons[("LC08_nohref", "swir22")] == "asset has no 'href'"
    assert reasons[("LC08_nogeom", None)].startswith("null geometry")


def test_url_catalog_prefers_collection_1_for_s2():
    state = _State()
    with serve_handler(lambda: _handler(state)) as (url, _):
        open_catalog(url).search("s2-l2a", bbox=(13, 45, 14, 46))
    assert state.bodies[-1]["collections"] == ["sentinel-2-c1-l2a"]


def test_unknown_and_broken_items_never_abort_a_search(caplog):
    """A search over every collection (no modality): the Landsat item, which used to abort the
    search, is normalised; the item nothing can place is skipped with one warning naming it."""
    state = _State()
    with serve_handler(lambda: _handler(state)) as (url, _), caplog.at_level(logging.WARNING):
        result = _api(url).search(bbox=(9, 45, 14, 46))
        normalized = result.normalized
    assert {n.modality for n in normalized} == {"landsat-c2-l2", "s2-l2a"}
    skipped = {s.id: s.reason for s in result.skipped}
    assert "mystery-1" in skipped and "cannot tell its modality" in skipped["mystery-1"]
    assert sum("mystery-1" in r.message for r in caplog.records) == 1
    assert len(result.to_geodataframe()) == len(normalized)


def test_empty_api_search_names_the_cloud_filter_and_the_extent(caplog):
    state = _State()
    with serve_handler(lambda: _handler(state)) as (url, _):
        cat = _api(url, modalities={"landsat-c2-l2": ["landsat-c2-l2"]})
        with caplog.at_level(logging.WARNING):
            res = cat.search("landsat-c2-l2", bbox=(13, 45, 14, 46), max_cloud=1)
        # The cloud-limit probe searches again: the skipped item is still warned about once.
        assert sum("skipped item LC08_nogeom" in r.message for r in caplog.records) == 1
        causes = res.explain_empty()
        assert len(res) == 0
        assert any("cloud limit removed everything: 2 item(s)" in c for c in causes), causes
        with pytest.raises(EmptySearchError, match=r"landsat-c2-l2.*cloud limit") as e:
            res.require_items()
        assert e.value.exit_code == 1
        # AOI given lat,lon: outside the collection extent, its mirror inside.
        swapped = cat.search("landsat-c2-l2", bbox=(45, 13, 46, 14)).explain_empty()
        assert any("look swapped" in c for c in swapped), swapped
        far = cat.search("landsat-c2-l2", bbox=(-120, -40, -119, -39)).explain_empty()
        assert any("outside every collection's extent" in c for c in far), far


def test_query_causes_without_a_catalog():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    q = SearchQuery(bbox=(45.0, 100.0, 46.0, 101.0))
    assert "latitude 100..101 is outside ±90" in explain_empty(q, None, [], now=now)[0]
    rev = SearchQuery(datetime=(datetime(2021, 9, 1, tzinfo=UTC), datetime(2021, 6, 1, tzinfo=UTC)))
    assert "reversed" in explain_empty(rev, None, [], now=now)[0]
    future = SearchQuery(datetime=(datetime(2027, 1, 1, tzinfo=UTC), None))
    assert "future" in explain_empty(future, None, [], now=now)[0]


def test_local_catalog_reversed_dates_and_swapped_coordinates(caplog):
    cat = open_catalog("sample")
    with caplog.at_level(logging.WARNING):
        res = cat.search("s2-l1c", datetime="2015-09-30/2015-07-01")
    assert len(res) == 0 and "reversed" in res.explain_empty()[0]
    assert any("0 items" in r.message and "reversed" in r.message for r in caplog.records)
    some = cat.search("s2-l1c")
    assert len(some)
    lon, lat = some.normalized[0].bbox[:2]
    swapped = cat.search("s2-l1c", bbox=(lat, lon, lat + 0.01, lon + 0.01)).explain_empty()
    assert any("swapped" in c for c in swapped), swapped


def test_local_cloud_limit_counts_what_it_removed():
    cat = open_catalog("sample")
    n = len(cat.search("s2-l1c"))
    res = cat.search("s2-l1c", max_cloud=-1)
    assert len(res) == 0
    assert any(f"{n} item(s) match without max_cloud=-1%" in c for c in res.explain_empty())


def test_local_catalog_honours_allowed_schemes(tmp_path):
    from eo_fusion.errors import UnsafeURLError

    spec = CatalogSpec(name="sample-https", kind="static", local=True, allowed_schemes=["https"],
                       path=Path("catalogs/sample/stac/catalog.json").resolve())  # fmt: skip
    # The URL policy checks every hop, so the catalog's own file links are refused already.
    with pytest.raises(UnsafeURLError, match="scheme 'file'"):
        _ = Catalog(spec).search("dem").normalized
    # Without allowed_schemes in the YAML a local catalog reads local files.
    assert Catalog(spec.model_copy(update={"allowed_schemes": ["https", "s3"]})) is not None
    default = CatalogSpec(name="s", kind="static", local=True, path=spec.path)
    assert Catalog(default).search("dem").normalized
