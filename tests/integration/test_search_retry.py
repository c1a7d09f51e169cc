"""Network behaviour of STAC API searches against a real local server that misbehaves.

The server answers on 127.0.0.1 like a STAC API (landing page + POST /search) but can return
429/5xx, stall, or serve a ``next`` link that loops; nothing is mocked on the client side.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from eo_fusion.catalogs.fileserver import serve_handler
from eo_fusion.catalogs.providers import CatalogSpec
from eo_fusion.catalogs.search import Catalog
from eo_fusion.errors import SearchError

CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
]


def _item(n: int) -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": f"item-{n}",
        "collection": "c",
        "geometry": {"type": "Point", "coordinates": [10.0, 50.0]},
        "bbox": [10.0, 50.0, 10.0, 50.0],
        "properties": {"datetime": "2020-01-01T00:00:00Z", "eo:cloud_cover": n % 100},
        "links": [],
        "assets": {},
    }


class _State:
    def __init__(self, mode: str, failures: int = 0) -> None:
        self.mode, self.failures = mode, failures
        self.search_calls = 0
        self.lock = threading.Lock()


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            return

        def _json(self, status: int, doc: dict, headers: dict | None = None) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            base = f"http://{self.headers['Host']}"
            self._json(200, {
                "type": "Catalog", "id": "flaky", "description": "test API",
                "stac_version": "1.0.0", "conformsTo": CONFORMS,
                "links": [
                    {"rel": "self", "href": base + "/"},
                    {"rel": "root", "href": base + "/"},
                    {"rel": "search", "href": base + "/search", "method": "POST",
                     "type": "application/geo+json"},
                ],
            })  # fmt: skip

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                state.search_calls += 1
                call = state.search_calls
            base = f"http://{self.headers['Host']}"
            if state.mode == "flaky" and call <= state.failures:
                status = 429 if call % 2 else 503
                self._json(status, {"code": "busy"}, {"Retry-After": "0"})
                return
            if state.mode == "down":
                self._json(500, {"code": "broken"})
                return
            if state.mode == "stall":
                time.sleep(2.0)
            page = int(body.get("token", 0))
            feats = [_item(2 * page), _item(2 * page + 1)]
            links = []
            if state.mode == "loop":
                links = [{"rel": "next", "href": base + "/search", "method": "POST",
                          "body": {"token": 0}}]  # fmt: skip
                feats = [_item(7), _item(8)] if page else feats
            elif state.mode == "endless":
                links = [{"rel": "next", "href": base + "/search", "method": "POST",
                          "body": {"token": page + 1}}]  # fmt: skip
            self._json(200, {"type": "FeatureCollection", "features": feats, "links": links})

    return Handler


def _catalog(url: str, **kw: object) -> Catalog:
    opts = {"timeout_s": 5.0, "retries": 3, "backoff_s": 0.01, "max_pages": 5}
    opts.update(kw)
    return Catalog(CatalogSpec(name="flaky", kind="stac-api", url=url, local=True, **opts))


def test_retries_429_and_5xx_on_post():
    state = _State("flaky", failures=3)
    with serve_handler(lambda: _handler(state)) as (url, _):
        result = _catalog(url, retries=3).search(collections=["c"])
    assert [i.id for i in result.items] == ["item-0", "item-1"]
    assert state.search_calls == 4  # 3 refusals (429, 503, 429) + the answer


def test_gives_up_after_bounded_retries():
    state = _State("down")
    with serve_handler(lambda: _handler(state)) as (url, _):
        t0 = time.monotonic()
        with pytest.raises(SearchError, match="flaky") as err:
            _catalog(url, retries=2).search(collections=["c"])
        elapsed = time.monotonic() - t0
    assert state.search_calls == 3  # first try + 2 retries, no more
    assert "retries" in str(err.value)
    assert elapsed < 5


def test_stalled_server_times_out():
    state = _State("stall")
    with serve_handler(lambda: _handler(state)) as (url, _):
        t0 = time.monotonic()
        with pytest.raises(SearchError, match=r"ReadTimeout|timed out|Timeout"):
            _catalog(url, timeout_s=0.3, retries=1).search(collections=["c"])
        elapsed = time.monotonic() - t0
    assert state.search_calls == 2  # timed out twice (1 retry), then gave up
    assert elapsed < 2.0


def test_looping_next_link_is_detected():
    state = _State("loop")
    with (
        serve_handler(lambda: _handler(state)) as (url, _),
        pytest.raises(SearchError, match="paging loop"),
    ):
        _catalog(url, max_pages=50).search(collections=["c"])
    assert state.search_calls <= 3


def test_page_cap_and_max_items():
    state = _State("endless")
    with serve_handler(lambda: _handler(state)) as (url, _):
        capped = _catalog(url, max_pages=4).search(collections=["c"])
        assert capped.truncated and capped.pages == 4 and len(capped.items) == 8
        state.search_calls = 0
        few = _catalog(url, max_pages=50).search(collections=["c"], max_items=5)
        assert len(few.items) == 5 and not few.truncated and state.search_calls == 3
        # Cloud filter applied client-side (the API does not conform to Filter/Query).
        clear = _catalog(url, max_pages=3).search(collections=["c"], max_cloud=2)
        assert [i.id for i in clear.items] == ["item-0", "item-1", "item-2"]
