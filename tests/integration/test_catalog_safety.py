"""URL safety: schemes, hosts, internal addresses, redaction, file names from untrusted keys."""

from __future__ import annotations

import logging

import pytest

from eo_fusion.catalogs.providers import load_catalog_spec
from eo_fusion.catalogs.safety import (
    URLPolicy,
    check_url,
    redact_text,
    redact_url,
    safe_filename,
)
from eo_fusion.errors import UnsafeURLError

PC = load_catalog_spec("planetary-computer").url_policy()
ES = load_catalog_spec("earth-search").url_policy()


@pytest.mark.parametrize(
    "url",
    [
        "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/x/B04.tif?sv=1&sig=abc",
        "https://planetarycomputer.microsoft.com/api/stac/v1/search",
    ],
)
def test_catalog_hosts_allowed(url):
    assert check_url(url, PC) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "scheme 'http'"),
        ("https://169.254.169.254/latest/meta-data/", "loopback/private/link-local"),
        ("https://127.0.0.1:8080/x.tif", "loopback/private/link-local"),
        ("https://[::1]/x.tif", "loopback/private/link-local"),
        ("https://10.0.0.7/x.tif", "loopback/private/link-local"),
        ("https://2130706433/x.tif", "loopback/private/link-local"),
        ("https://localhost/x.tif", "loopback/private/link-local"),
        ("https://evilblob.core.windows.net.attacker.io/x.tif", "not one of the catalog's hosts"),
        ("https://user:pw@blob.core.windows.net/x.tif", "embeds credentials"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://blob.core.windows.net/x.tif", "scheme 'ftp'"),
    ],
)
def test_unsafe_urls_refused(url, why):
    with pytest.raises(UnsafeURLError, match=why) as err:
        check_url(url, PC)
    assert "pw" not in str(err.value)


def test_s3_and_local_policies():
    assert check_url("s3://sentinel-cogs/x/B04.tif", ES)
    local = URLPolicy.for_local()
    for url in ("http://127.0.0.1:8000/a.tif", "/data/a.tif", "file:///data/a.tif"):
        assert check_url(url, local) == url
    with pytest.raises(UnsafeURLError):
        check_url("ftp://127.0.0.1/a.tif", local)


def test_tokens_redacted_in_urls_and_text():
    url = "https://acct.blob.core.windows.net/c/B04.tif?st=2024&se=2024-01-02&sp=r&sig=SECRET%2B"
    shown = redact_url(url)
    assert "SECRET" not in shown and "2024-01-02" not in shown
    assert shown.startswith("https://acct.blob.core.windows.net/c/B04.tif?")
    assert "sig=REDACTED" in shown
    text = f"failed to read {url} and https://x.s3.amazonaws.com/a?X-Amz-Signature=abc&token=t0k"
    clean = redact_text(text)
    assert "SECRET" not in clean and "abc" not in clean and "t0k" not in clean
    assert redact_url("https://u:p@host/x") == "https://REDACTED@host/x"


def test_unsafe_url_error_message_is_redacted(caplog):
    url = "https://10.1.2.3/B04.tif?sig=TOPSECRET"
    with caplog.at_level(logging.DEBUG), pytest.raises(UnsafeURLError) as err:
        check_url(url, PC, what="item x asset 'B04'")
    assert "TOPSECRET" not in str(err.value) and "item x asset 'B04'" in str(err.value)
    assert "TOPSECRET" not in caplog.text


@pytest.mark.parametrize("key", ["../../etc/passwd", "B04", "a/b\\c", "..", "", "x" * 500])
def test_safe_filename(key):
    name = safe_filename(key, suffix=".tif")
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert name.endswith(".tif") and len(name) < 110
    assert safe_filename(key) != safe_filename(key + "_")  # distinct keys, distinct names


def test_signing_only_for_planetary_computer():
    import sys

    from eo_fusion.catalogs.search import _signer

    sign = _signer(load_catalog_spec("planetary-computer"))
    assert sign is sys.modules["planetary_computer"].sign
    for name in ("earth-search", "cdse", "sample", "local", "local-api"):
        assert _signer(load_catalog_spec(name)) is None


def test_every_catalog_yaml_is_valid_and_maps_core_modalities():
    from eo_fusion.catalogs.providers import catalog_names

    names = catalog_names()
    assert {"earth-search", "planetary-computer", "cdse", "sample", "local", "local-api"} <= set(
        names
    )
    for name in names:
        spec = load_catalog_spec(name)
        assert spec.collections_for("dem")
        if spec.kind == "stac-api" and not spec.local:
            assert spec.url.startswith("https://") and spec.allowed_hosts
            assert spec.collections_for("s2-l2a") and spec.collections_for("s1-grd")
