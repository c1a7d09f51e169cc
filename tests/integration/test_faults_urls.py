"""URL policy at every hop: host spellings, /vsi prefixes, file roots, API links and redirects.

The STAC API cases run against the fault server on 127.0.0.1 (a catalog declared local, so
the first URL is allowed); a link or redirect to another host name for the same server
(``localhost``) must be refused *before* the request is made, which the server's log shows.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pystac
import pytest

from eo_fusion.catalogs import safety
from eo_fusion.catalogs.providers import CatalogSpec, load_catalog_spec
from eo_fusion.catalogs.safety import URLPolicy, check_url, normalize_host, unwrap_vsi
from eo_fusion.catalogs.search import Catalog, open_catalog
from eo_fusion.errors import UnsafeURLError
from eo_fusion.testing.faults import Fault, serve_faults

PC = load_catalog_spec("planetary-computer").url_policy()
ES = load_catalog_spec("earth-search").url_policy()
LOCAL = URLPolicy.for_local()

CONFORMS = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"]


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("LOCALHOST.", "localhost"),
        ("[::FFFF:127.0.0.1]", "::ffff:7f00:1"), ("fe80::1%eth0", "fe80::1"),
        ("Blob.Core.Windows.Net.", "blob.core.windows.net"),
    ],
)  # fmt: skip
def test_host_spellings_normalised(host, canonical):
    assert normalize_host(host) == canonical


@pytest.mark.parametrize(
    "url",
    [
        "https://0x7f000001/x.tif", "https://0177.0.0.1/x.tif", "https://127.1/x.tif",
        "https://LOCALHOST./x.tif", "https://localhost../x.tif", "https://[::ffff:127.0.0.1]/x.tif",
        "https://[::ffff:a9fe:a9fe]/latest", "https://[64:ff9b::a9fe:a9fe]/latest",
        "https://[2002:a00:1::1]/x.tif", "https://[fe80::1%25eth0]/x.tif", "https://100.64.0.1/x",
        "https://[fd00:ec2::254]/latest", "https://0/x.tif", "https://224.0.0.1/x.tif",
    ],
)  # fmt: skip
def test_internal_spellings_refused(url):
    with pytest.raises(UnsafeURLError, match="loopback/private/link-local"):
        check_url(url, ES)


def test_names_are_resolved_before_use(monkeypatch):
    """A public-looking name that resolves to a private address is refused."""
    monkeypatch.setattr(safety, "resolve_host", lambda h: ["10.1.2.3"] if "intra" in h else [])
    with pytest.raises(UnsafeURLError, match=r"10\.1\.2\.3"):
        check_url("https://intra.blob.core.windows.net/c/x.tif", PC)
    assert check_url("https://acct.blob.core.windows.net/c/x.tif", PC)


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest",
            "http://metadata.google.internal/computeMetadata/v1/", "http://2852039166/latest",
            "/vsicurl/http://169.254.169.254/latest"],
)  # fmt: skip
def test_metadata_refused_even_for_local_catalogs(url):
    with pytest.raises(UnsafeURLError, match="metadata"):
        check_url(url, LOCAL)


@pytest.mark.parametrize(
    ("href", "inner"),
    [
        ("/vsicurl/https://h.example/a.tif", "https://h.example/a.tif"),
        ("/vsicurl?url=https%3A%2F%2Fh.example%2Fa.tif&use_head=no", "https://h.example/a.tif"),
        ("/vsis3/sentinel-cogs/x/B04.tif", "s3://sentinel-cogs/x/B04.tif"),
        ("/vsizip//vsicurl/https://h.example/a.zip/b.tif", "https://h.example/a.zip/b.tif"),
        ("/vsizip/{/data/a.zip}/b.tif", "/data/a.zip"),
        ("/vsisubfile/10_20,/vsicurl/https://h.example/a.tif", "https://h.example/a.tif"),
        ("/data/a.tif", "/data/a.tif"),
    ],
)
def test_vsi_prefixes_unwrapped(href, inner):
    assert unwrap_vsi(href) == inner


@pytest.mark.parametrize(
    ("href", "why"),
    [
        ("/vsicurl/http://sentinel2l2a01.blob.core.windows.net/x.tif", "scheme 'http'"),
        ("/vsicurl/https://10.0.0.1/x.tif", "loopback"),
        ("/vsizip//vsicurl/https://127.0.0.1/a.zip/b.tif", "loopback"),
        ("/vsicurl?url=https%3A%2F%2F127.0.0.1%2Fx.tif", "loopback"),
        ("/vsicurl/https://evil.example/x.tif", "not one of the catalog's hosts"),
        ("/vsimem/x.tif", "GDAL prefix"),
        ("/vsistdin/", "GDAL prefix"),
        ("/vsizip//etc/a.zip/x.tif", "scheme 'file'"),
        ("<VRTDataset><VRTRasterBand/></VRTDataset>", "inline GDAL dataset"),
    ],
)
def test_vsi_hrefs_checked_inside(href, why):
    with pytest.raises(UnsafeURLError, match=why):
        check_url(href, PC)


def _static_catalog(folder, hrefs):
    cat = pystac.Catalog("c", "test")
    for i, href in enumerate(hrefs):
        it = pystac.Item(f"i{i}", {"type": "Point", "coordinates": [10.0, 50.0]},
                         [10.0, 50.0, 10.0, 50.0], datetime(2020, 1, 1, tzinfo=UTC),
                         {"eo_fusion:modality": "dem"})  # fmt: skip
        it.add_asset("dem", pystac.Asset(href, roles=["data"], extra_fields={
            "eo:bands": [{"name": "elevation:dem"}]}))  # fmt: skip
        cat.add_item(it)
    cat.normalize_and_save(str(folder), catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"


def test_path_catalog_keeps_files_inside_its_folder(tmp_path):
    inside = tmp_path / "cat" / "data" / "dem.tif"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"")
    outside = tmp_path / "secret.tif"
    outside.write_bytes(b"")
    (tmp_path / "cat" / "data" / "link.tif").symlink_to(outside)
    ok = open_catalog(_static_catalog(tmp_path / "cat", [str(inside)])).search("dem")
    assert [n.id for n in ok.normalized] == ["i0"]
    for bad in (str(outside), f"file://{outside}", str(tmp_path / "cat" / "data" / "link.tif"),
                str(tmp_path / "cat" / "data" / ".." / ".." / "secret.tif")):  # fmt: skip
        res = open_catalog(_static_catalog(tmp_path / "cat", [bad])).search("dem")
        with pytest.raises(UnsafeURLError, match="outside the catalog's folders"):
            _ = res.normalized
    # Declared roots widen the folders (the fix the message names).
    res = open_catalog(_static_catalog(tmp_path / "cat", [str(outside)]), roots=[tmp_path])
    assert res.search("dem").normalized


def test_path_catalog_not_trusted_for_remote_hrefs(tmp_path):
    for href in ("http://127.0.0.1:9/x.tif", "https://127.0.0.1:9/x.tif",
                 "https://169.254.169.254/x.tif", "/vsicurl/https://10.0.0.1/x.tif"):  # fmt: skip
        res = open_catalog(_static_catalog(tmp_path / "c2", [href])).search("dem")
        with pytest.raises(UnsafeURLError):
            _ = res.normalized


# ------------------------------------------------------------------------------------------------
# STAC API links and redirects, against a real server
# ------------------------------------------------------------------------------------------------


def _item(n: int) -> dict:
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": f"item-{n}", "collection": "c",
        "geometry": {"type": "Point", "coordinates": [10.0, 50.0]},
        "bbox": [10.0, 50.0, 10.0, 50.0], "links": [], "assets": {},
        "properties": {"datetime": "2020-01-01T00:00:00Z"},
    }  # fmt: skip


def _api(srv, *, search_href="{base}/search", next_href=None):
    links = [
        {"rel": "self", "href": "{base}/"},
        {"rel": "root", "href": "{base}/"},
        {"rel": "search", "href": search_href, "method": "POST", "type": "application/geo+json"},
    ]
    srv.route("/", {"type": "Catalog", "id": "faulty", "description": "test",
                    "stac_version": "1.0.0", "conformsTo": CONFORMS, "links": links})  # fmt: skip
    links = [{"rel": "next", "href": next_href, "method": "GET"}] if next_href else []
    srv.route("/search", {"type": "FeatureCollection", "features": [_item(0), _item(1)],
                          "links": links})  # fmt: skip
    srv.route("/page2", {"type": "FeatureCollection", "features": [_item(2)], "links": []})
    srv.route("/elsewhere", {"type": "FeatureCollection", "features": [_item(9)], "links": []})


def _catalog(url, **kw):
    opts = {"timeout_s": 5.0, "retries": 1, "backoff_s": 0.01, "max_pages": 5}
    opts.update(kw)
    return Catalog(CatalogSpec(name="faulty", kind="stac-api", url=url, local=True, **opts))


def _paths(srv):
    return [r["path"] for r in srv.log()]


def test_api_links_followed_on_the_same_host(tmp_path):
    with serve_faults() as srv:
        _api(srv, next_href="{base}/page2")
        res = _catalog(srv.url).search(collections=["c"])
    assert [i.id for i in res.items] == ["item-0", "item-1", "item-2"]


@pytest.mark.parametrize("which", ["search", "next"])
def test_api_link_to_another_host_refused(which):
    with serve_faults() as srv:
        other = f"http://localhost:{srv.port}/elsewhere"
        _api(srv, **({"search_href": other} if which == "search" else {"next_href": other}))
        with pytest.raises(UnsafeURLError, match="not one of the catalog's hosts"):
            _catalog(srv.url).search(collections=["c"])
        assert "/elsewhere" not in _paths(srv)


def test_api_link_to_a_local_file_refused():
    with serve_faults() as srv:
        _api(srv, next_href="/etc/passwd")
        with pytest.raises(UnsafeURLError, match="scheme 'file'"):
            _catalog(srv.url).search(collections=["c"])


@pytest.mark.parametrize(
    ("location", "why"),
    [("http://localhost:{port}/elsewhere", "not one of the catalog's hosts"),
     ("http://169.254.169.254/latest/meta-data/", "metadata"),
     ("file:///etc/passwd", "scheme 'file'")],
)  # fmt: skip
def test_api_redirect_checked_before_it_is_followed(location, why):
    with serve_faults() as srv:
        _api(srv)
        loc = location.replace("{port}", str(srv.port))
        srv.fault("/search", Fault("redirect", status=307, location=loc))
        with pytest.raises(UnsafeURLError, match=why):
            _catalog(srv.url).search(collections=["c"])
        assert "/elsewhere" not in _paths(srv)


def test_api_redirect_on_the_same_host_followed():
    with serve_faults() as srv:
        _api(srv)
        srv.fault("/search", Fault("redirect", status=307, location="{base}/elsewhere"))
        res = _catalog(srv.url).search(collections=["c"])
    assert [i.id for i in res.items] == ["item-9"]


def test_asset_redirect_checked_before_gdal_follows_it(sample_dir):
    """GDAL follows redirects unasked; the reader follows them first, through the policy."""
    from eo_fusion.gdal import GDALOptions
    from eo_fusion.sources.remote import resolve_redirects

    with serve_faults(sample_dir) as srv:
        f = "/data/slovenia/DEM_slovenia_10m.tif"
        srv.fault("/a.tif", Fault("redirect", location="{base}" + f, times=-1))
        assert resolve_redirects("/vsicurl/" + srv.url + "/a.tif", GDALOptions()).endswith(f)
        srv.fault("/b.tif", Fault("redirect", location="http://169.254.169.254/x", times=-1))
        with pytest.raises(UnsafeURLError, match="metadata"):
            resolve_redirects("/vsicurl/" + srv.url + "/b.tif", GDALOptions())


def test_public_redirect_policy_refuses_private_hops():
    hop = URLPolicy.for_hops_from("https://sentinel-cogs.s3.us-west-2.amazonaws.com/x.tif")
    assert not hop.local
    with pytest.raises(UnsafeURLError, match="loopback"):
        hop.check_redirect("https://sentinel-cogs.s3.amazonaws.com/x.tif", "https://10.0.0.1/x")
    with pytest.raises(UnsafeURLError, match="leaves https"):
        hop.check_redirect("https://sentinel-cogs.s3.amazonaws.com/x.tif", "http://a.example/x")


def test_env_data_roots(tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere" / "x.tif"
    outside.parent.mkdir()
    outside.write_bytes(b"")
    cat = _static_catalog(tmp_path / "c3", [str(outside)])
    with pytest.raises(UnsafeURLError):
        _ = open_catalog(cat).search("dem").normalized
    monkeypatch.setenv("EO_FUSION_DATA_ROOTS", str(outside.parent) + os.pathsep)
    assert open_catalog(cat).search("dem").normalized
    assert json.loads(cat.read_text())["id"] == "c"


def test_connection_goes_to_the_checked_address(monkeypatch):
    """DNS rebinding: the name looked public when checked, points at loopback when connecting."""
    from eo_fusion.catalogs.http import PolicySession

    with serve_faults() as srv:
        srv.route("/x", {"ok": True})
        public_only = URLPolicy(frozenset({"http"}), (), False, ())
        monkeypatch.setattr(safety, "resolve_host", lambda h: ["93.184.216.34"])
        monkeypatch.setattr(safety, "resolve_now", lambda h: ["127.0.0.1"])
        session = PolicySession(public_only)
        with pytest.raises(UnsafeURLError, match=r"connection to .*127\.0\.0\.1"):
            session.get(f"http://rebind.example:{srv.port}/x", timeout=5)
        session.close()
        assert srv.requests("/x") == 0
        # Declared local: the same connection is allowed and goes to the checked address.
        local = PolicySession(URLPolicy.for_local())
        assert local.get(f"http://rebind.example:{srv.port}/x", timeout=5).json() == {"ok": True}
        local.close()


def test_static_catalog_links_checked_before_they_are_followed(tmp_path):
    """A catalog.json whose child link points at a server or a file outside its folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    child = pystac.Catalog("evil", "outside the catalog folder")
    child.normalize_and_save(str(outside), catalog_type=pystac.CatalogType.ABSOLUTE_PUBLISHED)
    with serve_faults() as srv:
        srv.route("/evil.json", (outside / "catalog.json").read_text())
        for href in (srv.url + "/evil.json", str(outside / "catalog.json")):
            links = [{"rel": "child", "href": href, "type": "application/json"}]
            doc = {"type": "Catalog", "id": "c", "stac_version": "1.0.0", "description": "t",
                   "links": links}  # fmt: skip
            folder = tmp_path / "cat"
            folder.mkdir(exist_ok=True)
            (folder / "catalog.json").write_text(json.dumps(doc))
            with pytest.raises(UnsafeURLError, match="link"):
                open_catalog(folder / "catalog.json").search()
        assert srv.requests("/evil.json") == 0
