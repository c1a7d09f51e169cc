"""Input fingerprints: content, not paths (local files, HTTP HEAD, signed URLs, AOI bytes)."""

from __future__ import annotations

import json
import os

import pytest

from eo_fusion.catalogs.fileserver import serve_directory
from eo_fusion.catalogs.safety import URLPolicy
from eo_fusion.config import AOISpec
from eo_fusion.errors import UnsafeURLError
from eo_fusion.files import sha256_file
from eo_fusion.pipeline.fingerprint import aoi_print, asset_print, changes, digest


def test_local_asset_print_follows_content_not_mtime(tmp_path):
    f = tmp_path / "B04.tif"
    f.write_bytes(b"x" * 100)
    a = asset_print(str(f))
    assert a.kind == "local" and a.size == 100 and a.sha256 == sha256_file(f)
    os.utime(f, ns=(1, 1))  # touched, same bytes: the same content identity
    assert asset_print(str(f)).identity() == a.identity()
    st = f.stat()
    f.write_bytes(b"y" * 100)  # rewritten in place with size and mtime kept
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert asset_print(str(f)).sha256 != a.sha256
    assert asset_print(f"file://{f}").sha256 == sha256_file(f)
    missing = asset_print(str(tmp_path / "gone.tif"))
    assert missing.kind == "missing" and missing.note == "file not found"


def test_http_asset_print_uses_head_through_the_url_policy(tmp_path):
    f = tmp_path / "B04.tif"
    f.write_bytes(b"z" * 321)
    with serve_directory(tmp_path) as srv:
        url = srv.url_for("B04.tif")
        a = asset_print(url, policy=URLPolicy.for_local())
        assert a.kind == "http" and a.size == 321 and a.last_modified
        assert srv.log.requests(url, "HEAD") == 1 and srv.log.requests(url, "GET") == 0
        f.write_bytes(b"w" * 322)
        os.utime(f, (1_700_000_000, 1_700_000_000))
        b = asset_print(url, policy=URLPolicy.for_local())
        assert (b.size, b.last_modified) != (a.size, a.last_modified)
        # A catalog not declared local may not make the client probe loopback addresses.
        with pytest.raises(UnsafeURLError, match="loopback"):
            asset_print(url, policy=URLPolicy(frozenset({"http", "https"})))
        gone = asset_print(srv.url_for("nope.tif"), policy=URLPolicy.for_local())
        assert gone.kind == "href" and "HTTP 404" in gone.note


def test_signing_tokens_do_not_change_the_print():
    heads = []

    def head(url):
        heads.append(url)
        return {"ETag": '"abc"', "Content-Length": "10", "Last-Modified": "Mon, 01 Jun 2020"}

    pol = URLPolicy(allowed_hosts=("blob.core.windows.net",))
    a = asset_print("https://x.blob.core.windows.net/c/B04.tif?sv=1&sig=AAA", head=head, policy=pol)
    b = asset_print("https://x.blob.core.windows.net/c/B04.tif?sv=1&sig=BBB", head=head, policy=pol)
    assert a == b and a.etag == '"abc"' and "AAA" not in a.href
    assert heads[0].endswith("sig=AAA")  # the real URL is what is probed
    with pytest.raises(UnsafeURLError, match="not one of the catalog's hosts"):
        asset_print("https://evil.example.com/B04.tif", head=head, policy=pol)
    assert len(heads) == 2  # the refused host was never asked
    unprobed = asset_print("https://x.blob.core.windows.net/c/B04.tif", head=head)
    assert unprobed.kind == "href" and "no URL policy" in unprobed.note and len(heads) == 2
    s3 = asset_print("s3://bucket/B04.tif")
    assert s3.kind == "href" and s3.note


def test_aoi_print_is_the_file_content(tmp_path):
    p = tmp_path / "aoi.geojson"
    p.write_text(json.dumps({"type": "Point", "coordinates": [14.5, 45.9]}))
    a = aoi_print(AOISpec(geojson=p))
    assert a == {"source": str(p), "sha256": sha256_file(p)}
    p.write_text(json.dumps({"type": "Point", "coordinates": [14.5, 46.0]}))
    assert aoi_print(AOISpec(geojson=p))["sha256"] != a["sha256"]
    inline = aoi_print(AOISpec(bbox=(1, 2, 3, 4)))
    assert inline["source"] == "inline" and inline != aoi_print(AOISpec(bbox=(1, 2, 3, 5)))


def test_changes_names_what_changed():
    old = {"aoi": "a", "model": "m", "code": "1", "items": {"s2/X": "d1", "s2/Y": "d2"}}
    new = {"aoi": "b", "model": "m", "code": "2", "items": {"s2/X": "d9", "s2/Z": "d3"}}
    old_items = {"s2/X": {"id": "X", "item_sha256": "i", "assets": {"B04": {"etag": "1"}}}}
    new_items = {
        "s2/X": {"id": "X", "item_sha256": "i", "assets": {"B04": {"etag": "2"}}},
        "s2/Z": {"id": "Z", "item_sha256": "j", "assets": {}},
    }
    assert changes(old, new, old_items, new_items) == [
        "AOI content",
        "code version 1 → 2",
        "item X asset B04 etag",
        "item Y no longer read",
        "item Z new",
    ]
    assert changes(None, new, {}, new_items) == ["the earlier inputs are not recorded"]
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
