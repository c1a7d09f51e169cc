"""Fingerprints of what a run reads: the AOI, the items and their assets, the model, the code.

A resumed run reuses a tile only when its output verifies (sha256) **and** the fingerprint of
everything the tile reads is the one recorded when the tile was written. Paths are never trusted:
editing the AOI file, a catalog item or a checkpoint in place changes the fingerprint.

* **AOI**: sha256 of the GeoJSON file's bytes (or of the inline ``bbox``/``wkt`` and CRS).
* **Items**: sha256 of the normalised item (id, collection, time, footprint, properties, band
  assets with their hrefs, band indices, scale/offset/nodata: what the readers use) and, per
  asset file, ``size`` + ``mtime_ns`` + sha256 of the content for local files, or ``size`` +
  ``ETag`` + ``Last-Modified`` from one HEAD request for HTTP(S) assets (the URL is checked by the
  catalog's URL policy first; redirects are not followed). Signing tokens are removed from hrefs
  first (:func:`~eo_fusion.catalogs.safety.redact_url`), so a re-signed URL is the same asset.
  Assets that cannot be probed (``s3://``, a server without HEAD) count by href only, and say so.
* **Model**: the predictor's provenance (model card sha256, weights sha256, task).
* **Code**: :func:`~eo_fusion.pipeline.manifest.code_version`.

Everything here runs in the client during planning (I/O at this edge, once per asset per run);
the results are plain values that travel in the :class:`~eo_fusion.pipeline.plan.RunPlan`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import subprocess
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eo_fusion import __version__
from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.catalogs.safety import URLPolicy, check_url, redact_url
from eo_fusion.config import PROJECT_ROOT, AOISpec
from eo_fusion.errors import EOFusionError
from eo_fusion.files import sha256_file
from eo_fusion.logs import get_logger

log = get_logger(__name__)

#: Seconds a HEAD request for one asset may take.
HEAD_TIMEOUT_S = 20.0

__all__ = [
    "AssetPrint",
    "Head",
    "InputPrints",
    "ItemPrint",
    "aoi_print",
    "asset_print",
    "changes",
    "code_version",
    "digest",
    "input_prints",
    "item_print",
]


@functools.cache
def code_version() -> str:
    """Package version plus the git commit of the source tree when there is one.

    Read once per process: the code that runs is the code imported at start, whatever the
    checkout holds later (an edit while a notebook runs does not change the loaded modules).
    """
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if (PROJECT_ROOT / ".git").exists():
            rev = subprocess.run(
                ["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
            if rev:
                return f"{__version__}+g{rev}"
    return __version__


def digest(value: Any) -> str:
    """sha256 of a JSON-able value in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class AssetPrint:
    """What is known of one asset file.

    Attributes:
        href: the href without signing tokens or credentials.
        kind: ``local`` (size, mtime, content sha256), ``http`` (HEAD: size, ETag,
            Last-Modified), ``missing`` (a local file that does not exist) or ``href`` (only the
            href could be recorded; ``note`` says why).
        size: bytes (local size or ``Content-Length``).
        mtime_ns: local modification time (ns since the epoch).
        sha256: content hash (local files).
        etag: HTTP ``ETag``.
        last_modified: HTTP ``Last-Modified``.
        note: why the asset could not be probed further.
    """

    href: str
    kind: str
    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    note: str | None = None

    def identity(self) -> dict[str, Any]:
        """The fields that identify the content (``mtime`` left out when the sha256 is known:
        touching a file without changing it must not recompute tiles)."""
        d = {k: v for k, v in asdict(self).items() if v is not None and k != "note"}
        if self.sha256:
            d.pop("mtime_ns", None)
        return d


@dataclass(frozen=True)
class ItemPrint:
    """One item as read: its normalised content hash and one print per asset file.

    Attributes:
        id: STAC item id.
        modality: the modality it was searched for.
        item_sha256: sha256 of the normalised item (see module doc).
        assets: asset key -> print (one per file; bands sharing a file share the print).
    """

    id: str
    modality: str
    item_sha256: str
    assets: Mapping[str, AssetPrint] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """sha256 of the item hash and every asset's identity."""
        return digest(
            {
                "item": self.item_sha256,
                "assets": {k: a.identity() for k, a in sorted(self.assets.items())},
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the manifest, report and STAC provenance."""
        return {
            "id": self.id,
            "modality": self.modality,
            "item_sha256": self.item_sha256,
            "digest": self.digest,
            "assets": {k: {kk: vv for kk, vv in asdict(a).items() if vv is not None}
                       for k, a in sorted(self.assets.items())},
        }  # fmt: skip


@dataclass(frozen=True)
class InputPrints:
    """The fingerprints a run plan carries.

    Attributes:
        aoi: ``{"source": file path or "inline", "sha256": ...}``.
        model: the predictor's provenance (model card sha256, weights sha256, task, ...).
        code_version: package version plus git commit.
        items: modality -> item id -> print.
    """

    aoi: Mapping[str, str]
    model: Mapping[str, Any]
    code_version: str
    items: Mapping[str, Mapping[str, ItemPrint]]

    def tile_parts(self, items: Mapping[str, Sequence[NormalizedItem]]) -> dict[str, Any]:
        """The fingerprint components of a tile reading ``items`` (modality -> items)."""
        return {
            "aoi": self.aoi["sha256"],
            "model": digest(dict(self.model)),
            "code": self.code_version,
            "items": {
                f"{m}/{it.id}": self.items[m][it.id].digest
                for m, its in sorted(items.items())
                for it in its
            },
        }

    @property
    def run_digest(self) -> str:
        """sha256 of every input of the run (the run's content identity)."""
        return digest(
            {
                "aoi": self.aoi["sha256"],
                "model": digest(dict(self.model)),
                "code": self.code_version,
                "items": {
                    f"{m}/{i}": p.digest
                    for m, ps in sorted(self.items.items())
                    for i, p in ps.items()
                },
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form (manifest provenance, report, STAC ``eo_fusion:inputs``)."""
        return {
            "digest": self.run_digest,
            "aoi": dict(self.aoi),
            "model": dict(self.model),
            "code_version": self.code_version,
            "items": {
                m: {i: p.to_dict() for i, p in sorted(ps.items())}
                for m, ps in sorted(self.items.items())
            },
        }


def aoi_print(spec: AOISpec) -> dict[str, str]:
    """Fingerprint of the AOI: the GeoJSON file's bytes, or the inline geometry and CRS.

    Raises:
        EOFusionError: the GeoJSON file cannot be read (names it).
    """
    if spec.geojson is not None:
        path = Path(spec.geojson)
        try:
            return {"source": str(path), "sha256": sha256_file(path)}
        except OSError as e:
            raise EOFusionError(
                f"AOI file {path} cannot be read ({e.strerror or e})",
                fix="check aoi.geojson in the job file",
            ) from e
    inline = {"bbox": spec.bbox, "wkt": spec.wkt, "crs": spec.crs}
    return {"source": "inline", "sha256": digest(inline)}


def _item_content(item: NormalizedItem) -> dict[str, Any]:
    bands = {
        k: {
            "asset": b.asset_key,
            "href": redact_url(b.href),
            "band_index": b.band_index,
            "spec": asdict(b.spec),
            "crs": b.crs,
            "transform": b.transform,
            "shape": b.shape,
        }
        for k, b in sorted(item.bands.items())
    }
    return {
        "id": item.id,
        "collection": item.collection,
        "modality": item.modality,
        "datetime": item.datetime.isoformat(),
        "bbox": list(item.bbox),
        "geometry": item.geometry,
        "properties": item.properties,
        "bands": bands,
        "other_assets": {k: redact_url(v) for k, v in sorted(item.other_assets.items())},
    }


def _local_path(href: str) -> Path | None:
    parts = urllib.parse.urlsplit(href)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    if not parts.scheme or (len(parts.scheme) == 1 and href[1:3] in (":\\", ":/")):
        return Path(href)
    return None


def _local_print(href: str, path: Path, hashes: dict[tuple[str, int, int], str]) -> AssetPrint:
    try:
        st = path.stat()
    except FileNotFoundError:
        return AssetPrint(href=href, kind="missing", note="file not found")
    except OSError as e:
        return AssetPrint(href=href, kind="href", note=f"cannot stat: {e.strerror or e}")
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in hashes:  # one read per file per process, however many bands it holds
        hashes[key] = sha256_file(path)
    return AssetPrint(
        href=href, kind="local", size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=hashes[key]
    )


def head_request(url: str, policy: URLPolicy) -> Mapping[str, str]:
    """Headers of one HEAD request through ``policy`` (redirects not followed; raises on errors).

    The request goes through :class:`~eo_fusion.catalogs.http.PolicySession`, whose connection is
    made only to an address the policy allows, resolved when connecting: a host name cannot be
    re-pointed at a refused address between the policy check and the probe.
    """
    from eo_fusion.catalogs.http import PolicySession  # requests: only when an asset is remote

    with PolicySession(policy, what="asset fingerprint", max_redirects=0) as session:
        resp = session.head(url, allow_redirects=False, timeout=HEAD_TIMEOUT_S)
    if resp.status_code >= 300:
        raise OSError(f"HEAD returned HTTP {resp.status_code}")
    return resp.headers


Head = Callable[[str], Mapping[str, str]]


def _http_print(href: str, url: str, policy: URLPolicy | None, head: Head | None) -> AssetPrint:
    if policy is None:  # never probe a URL no policy has been asked about
        return AssetPrint(href=href, kind="href", note="not probed: no URL policy given")
    try:
        check_url(url, policy, what="asset")
        headers = head(url) if head is not None else head_request(url, policy)
    except EOFusionError:
        raise
    except Exception as e:  # an asset we cannot probe still counts by its href
        return AssetPrint(href=href, kind="href", note=f"HEAD failed: {type(e).__name__}: {e}")
    size = headers.get("Content-Length")
    return AssetPrint(
        href=href,
        kind="http",
        size=int(size) if size and size.isdigit() else None,
        etag=headers.get("ETag"),
        last_modified=headers.get("Last-Modified"),
    )


def asset_print(
    url: str,
    *,
    policy: URLPolicy | None = None,
    head: Head | None = None,
    hashes: dict[tuple[str, int, int], str] | None = None,
) -> AssetPrint:
    """Fingerprint of one asset file (local: size, mtime, sha256; HTTP(S): one HEAD).

    HTTP(S) URLs are probed only with a ``policy`` (the catalog's), which must allow them.

    Raises:
        UnsafeURLError: ``policy`` refuses the URL.
    """
    href = redact_url(url)
    local = _local_path(url)
    if local is not None:
        return _local_print(href, local, {} if hashes is None else hashes)
    if urllib.parse.urlsplit(url).scheme.lower() in ("http", "https"):
        return _http_print(href, url, policy, head)
    return AssetPrint(href=href, kind="href", note="no content probe for this scheme")


def item_print(
    item: NormalizedItem,
    modality: str,
    *,
    policy: URLPolicy | None = None,
    head: Head | None = None,
    hashes: dict[tuple[str, int, int], str] | None = None,
) -> ItemPrint:
    """Fingerprint of one item and of every file its band assets point at."""
    hashes = {} if hashes is None else hashes
    files: dict[str, str] = {}
    for b in item.bands.values():
        files.setdefault(b.asset_key, b.href)
    assets = {
        key: asset_print(href, policy=policy, head=head, hashes=hashes)
        for key, href in sorted(files.items())
    }
    return ItemPrint(
        id=item.id, modality=modality, item_sha256=digest(_item_content(item)), assets=assets
    )


def input_prints(
    aoi: AOISpec,
    items: Mapping[str, Sequence[NormalizedItem]],
    *,
    model: Mapping[str, Any],
    code_version: str,
    policy: URLPolicy | None = None,
    head: Head | None = None,
) -> InputPrints:
    """Fingerprints of the AOI, every item (read by some tile), the model and the code."""
    hashes: dict[tuple[str, int, int], str] = {}
    prints = {
        m: {it.id: item_print(it, m, policy=policy, head=head, hashes=hashes) for it in its}
        for m, its in items.items()
    }
    probed = [a for ps in prints.values() for p in ps.values() for a in p.assets.values()]
    weak = [a for a in probed if a.kind in ("href", "missing")]
    if weak:
        log.warning(
            "%d of %d asset file(s) fingerprinted by href only (e.g. %s: %s)",
            len(weak),
            len(probed),
            weak[0].href,
            weak[0].note,
        )
    return InputPrints(
        aoi=aoi_print(aoi), model=dict(model), code_version=code_version, items=prints
    )


def _asset_change(key: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    fields = ("sha256", "etag", "last_modified", "size", "href", "kind")
    diff = [f for f in fields if old.get(f) != new.get(f)]
    return f"asset {key} {'/'.join(diff[:2]) or 'content'}"


def _item_change(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    name = f"item {new['id']}"
    if old is None:
        return f"{name} new"
    if old.get("item_sha256") != new.get("item_sha256"):
        return f"{name} metadata"
    olda, newa = old.get("assets", {}), new.get("assets", {})
    diffs = [
        _asset_change(k, olda.get(k, {}), newa.get(k, {}))
        for k in sorted(set(olda) | set(newa))
        if olda.get(k) != newa.get(k)
    ]
    return f"{name} {', '.join(diffs) or 'assets'}"


def changes(
    old_parts: Mapping[str, Any] | None,
    new_parts: Mapping[str, Any],
    old_items: Mapping[str, Mapping[str, Any]],
    new_items: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """What changed between a tile's recorded fingerprint parts and its new ones, in words.

    Args:
        old_parts, new_parts: :meth:`InputPrints.tile_parts` of the earlier attempt and now.
        old_items, new_items: ``"<modality>/<item id>"`` -> :meth:`ItemPrint.to_dict`, from the
            earlier manifest's provenance and from the plan (explain asset-level changes).
    """
    if not old_parts:
        return ["the earlier inputs are not recorded"]
    out = []
    if old_parts.get("aoi") != new_parts["aoi"]:
        out.append("AOI content")
    if old_parts.get("model") != new_parts["model"]:
        out.append("model")
    if old_parts.get("code") != new_parts["code"]:
        out.append(f"code version {old_parts.get('code')} → {new_parts['code']}")
    old_i, new_i = old_parts.get("items", {}), new_parts["items"]
    for key in sorted(set(old_i) | set(new_i)):
        if key not in new_i:
            out.append(f"item {key.split('/', 1)[1]} no longer read")
        elif old_i.get(key) != new_i[key]:
            out.append(_item_change(old_items.get(key) if key in old_i else None, new_items[key]))
    return out


def flat_items(prints: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """``{"<modality>/<id>": item dict}`` from ``InputPrints.to_dict()["items"]``."""
    return {f"{m}/{i}": p for m, ps in prints.items() for i, p in ps.items()}
