"""Serve a local catalog as a real STAC API plus a byte-range file server, both on 127.0.0.1.

``serve_catalog(path)`` starts:

1. the range-capable HTTP file server (:func:`eo_fusion.catalogs.fileserver.serve_directory`)
   over the folder that holds the catalog's assets;
2. ``rustac serve`` (a STAC API with an in-memory backend) loaded with the catalog's collections
   and items, every asset href rewritten to the file server's URL.

So the exact path used against cloud catalogs (pystac-client search, GDAL ``/vsicurl/`` range
reads) runs offline. Both servers stop when the context exits (or on Ctrl-C for the CLI).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pystac

from eo_fusion.catalogs.fileserver import FileServer, serve_directory, stop_process
from eo_fusion.catalogs.search import Catalog, open_catalog
from eo_fusion.errors import CatalogError

_STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServedCatalog:
    """Handles of a served catalog: the STAC API root URL and the asset file server."""

    api_url: str
    files: FileServer
    n_items: int
    collections: tuple[str, ...]

    def catalog(self) -> Catalog:
        """A :class:`Catalog` searching the served API (declared local: loopback allowed).

        Collections named after a modality (as the builder writes them) are mapped to it.
        """
        from eo_fusion.catalogs.normalize import MODALITIES

        cat = open_catalog(self.api_url)
        mods = {c: [c] for c in self.collections if c in MODALITIES}
        return Catalog(cat.spec.model_copy(update={"modalities": mods, "name": "served"}))


def _die_with_parent() -> None:
    """In the rustac child (Linux): get SIGTERM if the parent dies, so no server is orphaned."""
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rustac_command() -> list[str]:
    exe = Path(sys.executable).parent / "rustac"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("rustac")
    if found:
        return [found]
    return [sys.executable, "-m", "rustac"]


def _asset_root(items: list[pystac.Item], catalog_dir: Path) -> Path:
    paths = [catalog_dir]
    for it in items:
        for a in it.assets.values():
            href = a.get_absolute_href() or a.href
            if "://" not in href:
                paths.append(Path(href).resolve().parent)
    return Path(os.path.commonpath([str(p) for p in paths]))


def _export(
    items: list[pystac.Item],
    colls: list[pystac.Collection],
    root: Path,
    files: FileServer,
    out: Path,
) -> list[Path]:
    """Write collections + one FeatureCollection with hrefs on the file server; return paths."""
    written: list[Path] = []
    for c in colls:
        d = c.to_dict(include_self_link=False, transform_hrefs=False)
        d["links"] = []
        p = out / f"collection-{len(written):03d}.json"  # never named after untrusted ids
        p.write_text(json.dumps(d), encoding="utf-8")
        written.append(p)
    feats = []
    for it in items:
        d = it.to_dict(include_self_link=False, transform_hrefs=False)
        d["links"] = []
        for key, a in it.assets.items():
            href = a.get_absolute_href() or a.href
            if "://" not in href:
                rel = Path(href).resolve().relative_to(root)
                d["assets"][key]["href"] = files.url_for(rel.as_posix())
        feats.append(d)
    p = out / "items.json"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": feats}), encoding="utf-8")
    return [*written, p]


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace")[-500:] if proc.stdout else ""
            raise CatalogError(
                f"rustac serve exited with code {proc.returncode}: {out}",
                fix="check that the rustac package is installed (pip install rustac)",
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise CatalogError(
        f"the STAC API at {url} did not start within {timeout_s:g} s",
        fix="retry; if it persists run `rustac serve` by hand to see its error",
    )


@contextlib.contextmanager
def serve_catalog(path: str | Path, *, port: int | None = None) -> Iterator[ServedCatalog]:
    """Serve a static catalog (``catalog.json`` or its folder) as a STAC API on 127.0.0.1.

    Args:
        path: catalog.json, a folder containing one, or a stac-geoparquet file.
        port: API port (default: a free one). The file server always takes a free port.
    """
    cat = open_catalog(path)
    if cat.spec.kind == "stac-api":
        raise CatalogError(f"{path} is a STAC API already", fix="give a local catalog folder")
    items = cat.all_items()
    catalog_path = Path(cat.spec.path or path).resolve()
    colls = _collections(catalog_path, items)
    root = _asset_root(items, catalog_path.parent)
    with (
        serve_directory(root) as files,
        tempfile.TemporaryDirectory(prefix="eo-fusion-api-") as tmp,
    ):
        hrefs = _export(items, colls, root, files, Path(tmp))
        api_port = port or _free_port()
        url = f"http://127.0.0.1:{api_port}"
        cmd = [*_rustac_command(), "serve", "--addr", f"127.0.0.1:{api_port}"]
        cmd += [str(h) for h in hrefs]
        if not colls:
            cmd.append("--create-collections")
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            _wait_until_up(url + "/", proc, _STARTUP_TIMEOUT_S)
            yield ServedCatalog(
                api_url=url,
                files=files,
                n_items=len(items),
                collections=tuple(sorted(c.id for c in colls)),
            )
        finally:
            stop_process(proc)
            if proc.stdout:
                proc.stdout.close()


def _collections(catalog_path: Path, items: list[pystac.Item]) -> list[pystac.Collection]:
    if catalog_path.suffix == ".json" and catalog_path.is_file():
        root = pystac.read_file(str(catalog_path))
        if isinstance(root, pystac.Catalog):
            return list(root.get_all_collections())
    # Geoparquet / ItemCollection: one minimal collection per collection id.
    by_id: dict[str, list[pystac.Item]] = {}
    for it in items:
        by_id.setdefault(it.collection_id or "items", []).append(it)
    return [
        pystac.Collection(cid, f"{cid} items", pystac.Extent.from_items(its))
        for cid, its in sorted(by_id.items())
    ]
