"""URL safety: which asset/catalog URLs may be fetched, and how URLs are shown to people.

* Only allowed schemes (``https``/``s3``/... per catalog; ``http`` and ``file`` only for local
  catalogs) and, for remote catalogs, only the catalog's declared hosts (suffix match on whole
  labels: ``blob.core.windows.net`` allows ``x.blob.core.windows.net``, not ``evilblob...``).
* Loopback, private, link-local, multicast and unspecified IP addresses (literal or the names
  ``localhost``/``*.localhost``) are refused unless the catalog is declared local; this stops a
  catalog from steering the reader at a cloud metadata endpoint (169.254.169.254) or an
  intranet service. Host names are not resolved here (DNS can change between check and use).
* :func:`redact_url` removes credentials and signing tokens (``sig``, ``se``, ``token``, AWS
  ``X-Amz-*``, ...) before a URL is printed or logged.
* :func:`safe_filename` builds file names from untrusted keys (asset keys, item ids).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from eo_fusion.errors import UnsafeURLError

#: Query parameters that carry credentials or signatures (compared lower-case).
SECRET_PARAMS = frozenset(
    {
        "sig", "se", "st", "sp", "sv", "sr", "skoid", "sktid", "skt", "ske", "sks", "skv", "spr",
        "token", "access_token", "api_key", "apikey", "key", "signature", "policy",
        "key-pair-id", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
        "x-goog-signature", "x-goog-credential", "code", "password", "secret",
    }
)  # fmt: skip
_REDACTED = "REDACTED"


@dataclass(frozen=True)
class URLPolicy:
    """What a catalog may point at.

    Attributes:
        allowed_schemes: URL schemes accepted for assets (plain paths count as ``file``).
        allowed_hosts: host names (or suffixes) accepted; empty = any public host.
        local: the catalog is declared local: loopback/private hosts, ``http`` and ``file`` ok.
    """

    allowed_schemes: frozenset[str] = frozenset({"https", "s3", "gs", "az"})
    allowed_hosts: tuple[str, ...] = ()
    local: bool = False

    @classmethod
    def for_local(cls) -> URLPolicy:
        return cls(frozenset({"file", "http", "https"}), (), True)


def _host_matches(host: str, allowed: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in allowed:
        p = pattern.lower().lstrip("*").lstrip(".").rstrip(".")
        if host == p or host.endswith("." + p):
            return True
    return False


def _is_internal(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".internal"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        # Integer/hex/octal spellings of IPv4 addresses (http://2130706433/) are internal too.
        return bool(re.fullmatch(r"(0x[0-9a-f]+|\d+)(\.(0x[0-9a-f]+|\d+)){0,3}", host))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
    )


def check_url(url: str, policy: URLPolicy, *, what: str = "asset") -> str:
    """Return ``url`` if ``policy`` allows it, else raise :class:`UnsafeURLError` naming it."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if not scheme or (len(scheme) == 1 and url[1:3] in (":\\", ":/")):  # Windows drive letter
        scheme = "file"
    shown = redact_url(url)
    if scheme not in policy.allowed_schemes:
        raise UnsafeURLError(
            f"{what} URL {shown}: scheme '{scheme}' is not allowed for this catalog",
            fix=f"use one of {sorted(policy.allowed_schemes)} or declare the catalog local",
        )
    if scheme == "file":
        return url
    host = parts.hostname or ""
    if not host:
        raise UnsafeURLError(f"{what} URL {shown} has no host", fix="give a full URL")
    if parts.username or parts.password:
        raise UnsafeURLError(
            f"{what} URL {shown} embeds credentials",
            fix="pass credentials through the environment, never inside URLs",
        )
    if not policy.local and _is_internal(host):
        raise UnsafeURLError(
            f"{what} URL {shown} points at a loopback/private/link-local address",
            fix="declare the catalog 'local: true' if you really serve it from this network",
        )
    remote_web = scheme in ("http", "https") and not policy.local
    if remote_web and policy.allowed_hosts and not _host_matches(host, policy.allowed_hosts):
        raise UnsafeURLError(
            f"{what} URL {shown}: host '{host}' is not one of the catalog's hosts",
            fix="add the host to 'allowed_hosts' in the catalog YAML if you trust it",
        )
    return url


def redact_url(url: str) -> str:
    """``url`` with user info and secret query values replaced by ``REDACTED``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{_REDACTED}@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{k}={_REDACTED if k.lower() in SECRET_PARAMS else urllib.parse.quote(v, safe='/:')}"
            for k, v in pairs
        )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_SECRET_IN_TEXT = re.compile(
    r"(?i)([?&](?:" + "|".join(re.escape(p) for p in sorted(SECRET_PARAMS)) + r")=)[^&\s\"']+"
)


def redact_text(text: str) -> str:
    """Redact signing tokens inside free text (log lines, error messages)."""
    return _SECRET_IN_TEXT.sub(lambda m: m.group(1) + _REDACTED, text)


def safe_filename(key: str, *, suffix: str = "", max_len: int = 80) -> str:
    """A file name derived from an untrusted key: ``[A-Za-z0-9._-]`` only, never ``.``/``..``,
    with a short hash so different keys never collide."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "x"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned[:max_len]}-{digest}{suffix}"
