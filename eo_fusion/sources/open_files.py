"""Raster files kept open between reads, shared by the threads of a process.

Reopening a file for every tile cost more than reading it (profiled: 480 opens, 1.4 s of a
16-tile map-job stack), and a closed dataset drops GDAL's cache of its decoded blocks, so
neighbouring tiles decoded the blocks they share again (2.1 s more). :func:`open_dataset` hands
out a pooled dataset, one thread at a time (a GDAL dataset must not be used by two threads at
once); a thread that finds it in use waits up to :data:`WAIT_FOR_BUSY_S` for it, then opens its
own copy for that read and closes it afterwards (no block stays cached twice); a file being
opened is waited for in the same way. The pool keeps :data:`MAX_OPEN_FILES` files (least
recently used closed first); decoded blocks are bounded by GDAL's cache
(``GDALOptions.cache_max_bytes``).

A local file rewritten since it was opened (other mtime, size or inode) is opened afresh;
remote files are cached by GDAL's ``/vsicurl/`` anyway. A failed read drops the file
(:func:`forget`), so a retry opens it anew. A forked child starts with an empty pool.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, cast

import rasterio
from odc.geo.geobox import GeoBox
from rasterio.errors import NotGeoreferencedWarning

__all__ = ["MAX_OPEN_FILES", "OpenFile", "forget", "open_dataset", "release_files"]

#: Files the pool keeps open per process.
MAX_OPEN_FILES = 128


@dataclass
class OpenFile:
    """One open dataset and what was derived from it once (``grids``: source grid per asset
    georeferencing, see ``reader.source_geobox``)."""

    ds: rasterio.DatasetReader
    grids: dict[Any, GeoBox] = field(default_factory=dict)
    #: What else readers derive once per open file (e.g. its GCP georeferencing).
    derived: dict[str, Any] = field(default_factory=dict)
    busy: bool = False


_Key = tuple[str, int | None, Any]
_POOL: OrderedDict[_Key, OpenFile] = OrderedDict()
_LOCK = threading.Lock()
_FREED = threading.Condition(_LOCK)

#: Seconds a thread waits for a pooled file another thread is reading before it opens its own
#: copy. Dask threads stacking neighbouring chunks read the same files in the same order: a
#: short wait puts them one file apart instead of decoding (and downloading) every block twice.
WAIT_FOR_BUSY_S = 0.2
os.register_at_fork(after_in_child=_POOL.clear)

_GEOTIFF = (".tif", ".tiff")


def _sidecar_env(path: str) -> AbstractContextManager[Any]:
    """Let GDAL list the folder of a *local* non-GeoTIFF file, so it finds a world file
    (``.wld``/``.jgw``) next to it; remote files keep directory listing off (see GDALOptions)."""
    local = not path.startswith("/vsi")
    if local and not path.lower().endswith(_GEOTIFF):
        return rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="FALSE")
    return nullcontext()


def _open(path: str, overview_level: int | None) -> rasterio.DatasetReader:
    kwargs = {} if overview_level is None else {"overview_level": overview_level}
    with _sidecar_env(path):
        if path.lower().endswith(_GEOTIFF):
            return rasterio.open(path, **kwargs)
        # A JPEG/PNG georeferenced only by its asset (remote world file, STAC proj:transform)
        # makes rasterio warn "not georeferenced"; source_geobox then takes the asset's
        # transform. Only these rare formats pay for catch_warnings (not thread-safe < 3.14).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path, **kwargs)


def _signature(path: str) -> Any:
    """What tells a rewritten local file from the one opened before (remote: nothing)."""
    if path.startswith("/vsi"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None  # the open reports it
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _take(key: _Key) -> OpenFile | None:
    """The pooled file of ``key`` marked busy, or None (absent, in use or closed). Drops older
    versions of the file. Call with the lock held."""
    for old in [k for k in _POOL if k[:2] == key[:2] and k != key]:
        _drop(old)
    entry = _POOL.get(key)
    if entry is None or entry.busy:
        return None
    if entry.ds.closed:
        del _POOL[key]
        return None
    entry.busy = True
    _POOL.move_to_end(key)
    return entry


def _drop(key: _Key) -> None:
    """Remove ``key`` from the pool; closed now if idle, else when its reader is done."""
    entry = _POOL.pop(key)
    if not entry.busy:
        entry.ds.close()


@contextmanager
def open_dataset(path: str, overview_level: int | None = None) -> Iterator[OpenFile]:
    """An open dataset of ``path`` (GDAL path; ``overview_level`` as ``rasterio.open``'s) for
    this thread's exclusive use inside the block."""
    key = (path, overview_level, _signature(path))
    with _FREED:
        entry = _take(key)
        if entry is None and key in _POOL:  # in use: wait a moment rather than open a copy
            _FREED.wait_for(lambda: key not in _POOL or not _POOL[key].busy, WAIT_FOR_BUSY_S)
            entry = _take(key)
        pending = None
        if entry is None and key not in _POOL:  # others wait for this open, not open it too
            pending = _POOL[key] = OpenFile(cast(Any, None), busy=True)
    if entry is None:
        entry = _open_for(key, path, overview_level, pending)
    try:
        yield entry
    finally:
        with _FREED:
            entry.busy = False
            if _POOL.get(key) is not entry:
                entry.ds.close()  # a private copy, or dropped while in use
            _evict()
            _FREED.notify_all()


def _open_for(key: _Key, path: str, level: int | None, pending: OpenFile | None) -> OpenFile:
    """Open the file: into the pool's ``pending`` entry, or as a private copy (None)."""
    try:
        ds = _open(path, level)
    except BaseException:
        if pending is not None:
            with _FREED:
                if _POOL.get(key) is pending:
                    del _POOL[key]
                _FREED.notify_all()
        raise
    if pending is None:
        return OpenFile(ds, busy=True)
    pending.ds = ds
    return pending


def _evict() -> None:
    idle = [k for k, e in _POOL.items() if not e.busy]
    for k in idle[: max(0, len(_POOL) - MAX_OPEN_FILES)]:
        _drop(k)


def forget(path: str) -> None:
    """Close every pooled dataset of ``path`` (the next read opens it afresh)."""
    with _LOCK:
        for key in [k for k in _POOL if k[0] == path]:
            _drop(key)


def release_files() -> None:
    """Close every pooled dataset (files in use are closed when their read ends)."""
    with _LOCK:
        for key in list(_POOL):
            _drop(key)
