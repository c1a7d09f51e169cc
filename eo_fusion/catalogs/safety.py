"""URL safety: one policy for every URL eo-fusion fetches, and how URLs are shown to people.

:class:`URLPolicy` decides whether a URL or path may be fetched. The same object checks the first
URL (catalog root, asset href), every HTTP redirect (:mod:`eo_fusion.catalogs.http` checks each
``Location`` before it is followed), every link a STAC API returns (``search``, ``next``,
``self``) and every asset href after GDAL ``/vsi…`` prefixes are unwrapped:

* Only allowed schemes (``https``/``s3``/... per catalog; ``http`` only for local catalogs) and,
  for remote catalogs, only the catalog's declared hosts (suffix match on whole labels:
  ``blob.core.windows.net`` allows ``x.blob.core.windows.net``, not ``evilblob...``).
* Host names are normalised first (case, trailing dots, the decimal/octal/hex/short IPv4
  spellings libc accepts such as ``2130706433`` or ``0x7f.1``, IPv6 with zone ids, and IPv4
  embedded in IPv6: mapped ``::ffff:a.b.c.d``, compatible, NAT64 ``64:ff9b::/96``, 6to4,
  Teredo) and names are resolved; if any address is loopback, private, link-local, shared
  (CGNAT), multicast, reserved or otherwise not globally routable, the URL is refused unless the
  catalog is declared local. Cloud metadata endpoints (169.254.169.254, fd00:ec2::254, ...) are
  refused even for local catalogs.
* Local files (plain paths, ``file://``) must lie inside the policy's roots after ``..`` and
  symbolic links are resolved. A catalog opened by file path is not declared local: its files
  must stay inside its own folder and its remote hrefs get the public rules.
* GDAL virtual file systems are unwrapped (``/vsicurl/URL``, ``/vsicurl?url=...``, ``/vsis3/``
  → ``s3://``, ``/vsigs/``, ``/vsiaz/``, archives ``/vsizip/``, ``/vsitar/``, ``/vsigzip/``
  around any of these, ``/vsisubfile/``) and the inner target is checked; any other ``/vsi``
  prefix (``/vsimem/``, ``/vsistdin/``, ``/vsicrypt/``...) and inline XML datasets are refused.

Names are resolved when checked; HTTP clients built on :mod:`eo_fusion.catalogs.http` resolve
again when they connect (:meth:`URLPolicy.connect_address`) and connect to the address they
checked, so DNS rebinding between check and use is caught there. GDAL does its own lookups
(see ``docs/security.md``).

* :func:`redact_url` removes credentials and signing tokens (``sig``, ``se``, ``token``, AWS
  ``X-Amz-*``, ...) before a URL is printed or logged.
* :func:`safe_filename` builds file names from untrusted keys (asset keys, item ids).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from eo_fusion.errors import UnsafeURLError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

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

#: Cloud instance-metadata endpoints: refused for every catalog, local or not (credentials live
#: there; no imagery does).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "169.254.169.253", "fd00:ec2::254",
              "100.100.100.200", "192.0.0.192")
)  # fmt: skip
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPAT = ipaddress.ip_network("::/96")
_IPV4_LIKE = re.compile(r"(0x[0-9a-f]*|\d+)(\.(0x[0-9a-f]*|\d+)){0,3}")

#: /vsi prefixes whose inner part is a URL or path that is checked in turn.
_VSI_NETWORK = {"vsicurl": "", "vsicurl_streaming": "", "vsiwebhdfs": ""}
_VSI_OBJECT_STORES = {
    "vsis3": "s3", "vsis3_streaming": "s3", "vsigs": "gs", "vsigs_streaming": "gs",
    "vsiaz": "az", "vsiaz_streaming": "az", "vsiadls": "az", "vsioss": "oss",
    "vsioss_streaming": "oss", "vsiswift": "swift", "vsiswift_streaming": "swift",
    "vsihdfs": "hdfs",
}  # fmt: skip
_VSI_ARCHIVES = frozenset({"vsizip", "vsitar", "vsigzip", "vsi7z", "vsirar"})
_MAX_VSI_DEPTH = 8


# ------------------------------------------------------------------------------------------------
# host names and addresses (pure, plus a cached resolver)
# ------------------------------------------------------------------------------------------------


def normalize_host(host: str) -> str:
    """Canonical spelling of a host: lower case, no brackets/trailing dots/zone id, IPv4 in
    dotted-quad form whatever spelling libc would accept (``2130706433``, ``0177.1``,
    ``0x7f.0.0.1`` → ``127.0.0.1``), IPv6 compressed."""
    h = host.strip().strip("[]").lower().rstrip(".")
    if "%" in h:  # IPv6 zone id (fe80::1%eth0) does not change the address class
        h = h.split("%", 1)[0]
    if _IPV4_LIKE.fullmatch(h):
        try:
            return socket.inet_ntoa(socket.inet_aton(h))
        except OSError:
            return h  # not an address libc accepts (e.g. 999.1.1.1): a (failing) name
    try:
        return ipaddress.ip_address(h).compressed
    except ValueError:
        pass
    try:  # IDNA: one spelling for internationalised names (and their punycode form)
        return h.encode("idna").decode("ascii")
    except UnicodeError:
        return h


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (ip in _V4_COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_internal_address(ip: IPAddress) -> bool:
    """True for anything not globally routable: loopback, private, link-local, shared (CGNAT),
    multicast, reserved, unspecified, documentation — also when embedded in an IPv6 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None and is_internal_address(inner):
            return True
    return (not ip.is_global) or ip.is_multicast


def is_metadata_address(ip: IPAddress) -> bool:
    """True for a cloud instance-metadata address (also embedded in IPv6)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None and inner in METADATA_ADDRESSES:
            return True
    return ip in METADATA_ADDRESSES


Resolver = Callable[[str], list[str]]
_RESOLVE_TTL_S = 60.0
_resolved: dict[str, tuple[float, list[str]]] = {}
_resolved_lock = threading.Lock()


def resolve_host(host: str) -> list[str]:
    """Addresses ``host`` resolves to now (cached for a minute); ``[]`` if it does not resolve
    (the connection would then fail too)."""
    now = time.monotonic()
    with _resolved_lock:
        hit = _resolved.get(host)
        if hit and now - hit[0] < _RESOLVE_TTL_S:
            return hit[1]
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        addrs = sorted({str(info[4][0]) for info in infos})
    except (OSError, UnicodeError):
        addrs = []
    with _resolved_lock:
        _resolved[host] = (now, addrs)
    return addrs


def host_addresses(host: str, resolver: Resolver | None = resolve_host) -> list[IPAddress]:
    """The addresses a (normalised) host stands for: itself if literal, else what it resolves to
    (nothing when ``resolver`` is None)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    if resolver is None:
        return []
    out: list[IPAddress] = []
    for a in resolver(host):
        try:
            out.append(ipaddress.ip_address(a.split("%", 1)[0]))
        except ValueError:
            continue
    return out


def _internal_name(host: str) -> bool:
    return host == "localhost" or host.endswith((".localhost", ".internal", ".local"))


# ------------------------------------------------------------------------------------------------
# GDAL /vsi prefixes
# ------------------------------------------------------------------------------------------------


def _split_vsi(href: str) -> tuple[str, str] | None:
    """``/vsiNAME/rest`` or ``/vsiNAME?opts`` -> (NAME, rest-with-separator); None if not /vsi."""
    m = re.match(r"^/(vsi[a-z0-9_]+)([/?].*)?$", href)
    if not m:
        return None
    return m.group(1), m.group(2) or ""


def _archive_inner(rest: str) -> str:
    # /vsizip/{/path/a.zip}/inner.tif or /vsizip//path/a.zip/inner.tif: the archive's own path is
    # what is fetched; members inside it are not separate resources.
    body = rest[1:] if rest.startswith("/") else rest
    if body.startswith("{") and "}" in body:
        return body[1 : body.index("}")]
    return body


def unwrap_vsi(href: str, *, what: str = "asset") -> str:
    """The URL or path a GDAL ``/vsi…`` filename really fetches (recursively), e.g.
    ``/vsizip//vsicurl/https://h/a.zip/b.tif`` → ``https://h/a.zip/b.tif`` (archive members
    included); plain hrefs are returned unchanged. Unknown or unsafe prefixes raise."""
    current = href
    for _ in range(_MAX_VSI_DEPTH):
        parts = _split_vsi(current)
        if parts is None:
            return current
        name, rest = parts
        if name in _VSI_NETWORK:
            if rest.startswith("?"):  # /vsicurl?url=...&use_head=no
                query = urllib.parse.parse_qs(rest[1:])
                current = (query.get("url") or [""])[0]
            else:
                current = rest[1:]
        elif name in _VSI_OBJECT_STORES:
            current = f"{_VSI_OBJECT_STORES[name]}://{rest.lstrip('/')}"
        elif name in _VSI_ARCHIVES:
            current = _archive_inner(rest)
        elif name == "vsisubfile":  # /vsisubfile/offset_size,path
            current = rest[1:].split(",", 1)[1] if "," in rest else ""
        else:
            raise UnsafeURLError(
                f"{what} href {redact_url(href)} uses the GDAL prefix '/{name}/', "
                "which catalog hrefs may not use",
                fix="point the asset at a plain URL or file (or /vsicurl/, /vsis3/, /vsizip/)",
            )
    raise UnsafeURLError(
        f"{what} href {redact_url(href)} nests more than {_MAX_VSI_DEPTH} GDAL prefixes",
        fix="point the asset at a plain URL or file",
    )


# ------------------------------------------------------------------------------------------------
# the policy
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class URLPolicy:
    """What a catalog (and anything it links to) may point at.

    Attributes:
        allowed_schemes: URL schemes accepted (plain paths count as ``file``).
        allowed_hosts: host names (or suffixes) accepted for http(s); empty = any public host.
        local: the catalog is declared local: loopback/private hosts and ``http`` are ok.
        roots: folders local files must lie in (after ``..`` and symlinks are resolved);
            ``None`` = anywhere (only for an explicitly local policy), ``()`` = no local files.
        resolve: resolve host names and check every address (off only for offline tests).
    """

    allowed_schemes: frozenset[str] = frozenset({"https", "s3", "gs", "az"})
    allowed_hosts: tuple[str, ...] = ()
    local: bool = False
    roots: tuple[str, ...] | None = ()
    resolve: bool = True

    @classmethod
    def for_local(cls, roots: Iterable[str | os.PathLike[str]] | None = None) -> URLPolicy:
        """A declared-local policy: loopback/private hosts, ``http`` and files (inside ``roots``
        when given, anywhere when not)."""
        rt = None if roots is None else tuple(os.path.realpath(r) for r in roots)
        return cls(frozenset({"file", "http", "https"}), (), True, rt)

    @classmethod
    def for_hops_from(cls, url: str) -> URLPolicy:
        """The policy for where ``url`` may redirect when no catalog policy is at hand (a read of
        a bare href): a public URL may only lead to public https/http hosts; an internal one
        (a local file server) may stay internal. Metadata endpoints are refused either way."""
        host = normalize_host(urllib.parse.urlsplit(url).hostname or "")
        internal = _internal_name(host) or any(is_internal_address(a) for a in host_addresses(host))
        return cls(frozenset({"http", "https"}), (), internal, ())

    def check(self, url: str, *, what: str = "asset") -> str:
        """Return ``url`` if allowed (the original spelling), else raise
        :class:`UnsafeURLError` naming it and the fix."""
        target = unwrap_vsi(url, what=what) if url.startswith("/vsi") else url
        if target.lstrip().startswith("<"):
            raise UnsafeURLError(
                f"{what} href is an inline GDAL dataset (XML), not a URL or path",
                fix="point the asset at a file or URL",
            )
        scheme = _scheme_of(target)
        shown = redact_url(url)
        if scheme not in self.allowed_schemes:
            raise UnsafeURLError(
                f"{what} URL {shown}: scheme '{scheme}' is not allowed for this catalog",
                fix=f"use one of {sorted(self.allowed_schemes)} or declare the catalog local",
            )
        if scheme == "file":
            self._check_file(target, shown, what)
        else:
            self._check_host(target, scheme, shown, what)
        return url

    def check_redirect(self, from_url: str, location: str, *, what: str = "redirect") -> str:
        """The absolute target of a redirect from ``from_url``, if the policy allows it; an
        https → http downgrade is refused unless the policy is local."""
        target = urllib.parse.urljoin(from_url, location)
        was = urllib.parse.urlsplit(from_url).scheme.lower()
        now = urllib.parse.urlsplit(target).scheme.lower()
        if was == "https" and now != "https" and not self.local:
            raise UnsafeURLError(
                f"{what} from {redact_url(from_url)} to {redact_url(target)} leaves https",
                fix="ask the provider to keep redirects on https",
            )
        self.check(target, what=f"{what} from {redact_url(from_url)} to")
        return target

    def _check_file(self, target: str, shown: str, what: str) -> None:
        if self.roots is None:
            return
        path = _local_path(target)
        real = os.path.realpath(path)
        for root in self.roots:
            if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
                return
        where = ", ".join(self.roots) if self.roots else "(none: this catalog may not use files)"
        raise UnsafeURLError(
            f"{what} path {shown} resolves to {real}, outside the catalog's folders {where}",
            fix="keep assets inside the catalog folder, or list their folder under 'roots' in "
            "the catalog YAML (or EO_FUSION_DATA_ROOTS)",
        )

    def _check_host(self, target: str, scheme: str, shown: str, what: str) -> None:
        parts = urllib.parse.urlsplit(target)
        try:
            raw_host = parts.hostname or ""
        except ValueError:
            raw_host = ""
        if not raw_host:
            raise UnsafeURLError(f"{what} URL {shown} has no host", fix="give a full URL")
        if parts.username or parts.password:
            raise UnsafeURLError(
                f"{what} URL {shown} embeds credentials",
                fix="pass credentials through the environment, never inside URLs",
            )
        host = normalize_host(raw_host)
        web = scheme in ("http", "https")
        addrs = host_addresses(host, resolve_host if (self.resolve and web) else None)
        self.check_addresses(host, addrs, shown=shown, what=what)
        if web and self.allowed_hosts and not _host_matches(host, self.allowed_hosts):
            raise UnsafeURLError(
                f"{what} URL {shown}: host '{host}' is not one of the catalog's hosts",
                fix="add the host to 'allowed_hosts' in the catalog YAML if you trust it",
            )

    def check_addresses(
        self, host: str, addrs: Iterable[IPAddress], *, shown: str, what: str
    ) -> None:
        """Refuse ``host`` if it or any of its ``addrs`` is internal (unless the policy is local)
        or a cloud metadata endpoint (always)."""
        addrs = list(addrs)
        metadata = host in METADATA_NAMES or any(is_metadata_address(a) for a in addrs)
        internal = metadata or _internal_name(host) or any(is_internal_address(a) for a in addrs)
        if internal and (metadata or not self.local):
            shown_addrs = f" = {', '.join(map(str, addrs))}" if addrs else ""
            raise UnsafeURLError(
                f"{what} URL {shown} points at a loopback/private/link-local address "
                f"({host}{shown_addrs}{'; a cloud metadata endpoint' if metadata else ''})",
                fix="never point a catalog at instance metadata"
                if metadata
                else "declare the catalog 'local: true' if you really serve it from this network",
            )

    def connect_address(self, host: str, port: int) -> str:
        """The address to connect to for ``host``, resolved *now* and checked (every address),
        so what is connected to is what was checked (no DNS rebinding between check and use).
        ``host`` itself when it does not resolve (the connection then fails as usual)."""
        name = normalize_host(host)
        addrs = host_addresses(name, resolve_now)
        self.check_addresses(name, addrs, shown=f"{host}:{port}", what="connection to")
        return str(addrs[0]) if addrs else host


def resolve_now(host: str) -> list[str]:
    """Addresses of ``host`` from a fresh lookup (no cache), ``[]`` if it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _scheme_of(url: str) -> str:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if not scheme or (len(scheme) == 1 and url[1:3] in (":\\", ":/")):  # Windows drive letter
        return "file"
    return scheme


def _local_path(target: str) -> str:
    if target.lower().startswith("file:"):
        parts = urllib.parse.urlsplit(target)
        return urllib.parse.unquote(parts.path)
    return target


def _host_matches(host: str, allowed: Iterable[str]) -> bool:
    for pattern in allowed:
        p = normalize_host(pattern.lstrip("*").lstrip("."))
        if host == p or host.endswith("." + p):
            return True
    return False


def check_url(url: str, policy: URLPolicy, *, what: str = "asset") -> str:
    """Return ``url`` if ``policy`` allows it, else raise :class:`UnsafeURLError` naming it."""
    return policy.check(url, what=what)


def catalog_roots(catalog_file: str | os.PathLike[str]) -> tuple[str, ...]:
    """Default roots of a catalog on disk: its folder, or the folder above when the catalog sits
    in a ``stac/`` folder beside its data (the layout ``eo-fusion catalog`` and the sample use),
    plus the folders in ``EO_FUSION_DATA_ROOTS`` (``os.pathsep``-separated)."""
    folder = Path(catalog_file).resolve().parent
    if folder.name == "stac":
        folder = folder.parent
    extra = [p for p in os.environ.get("EO_FUSION_DATA_ROOTS", "").split(os.pathsep) if p]
    return tuple(os.path.realpath(str(p)) for p in (folder, *extra))


# ------------------------------------------------------------------------------------------------
# showing URLs to people
# ------------------------------------------------------------------------------------------------


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
