"""File integrity and safe writes: sha256 checksums, atomic replacement, storage errors.

Used wherever a file must never be seen half-written (manifests, model cards, reports) or must be
verified before it is trusted (resumed tiles, checkpoints, STAC ``file:checksum``).

Temporary files of :func:`atomic_output` are named ``.<name>.<random>.partial<suffix>``; a process
killed mid-write leaves one behind, and :func:`remove_stale_partials` clears them (run folders do
it at start, under the run lock). :func:`storage_errors` turns the operating system's disk-full,
read-only and permission errors into :class:`StorageError` naming the path (and the space needed).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from eo_fusion.errors import EOFusionError

__all__ = [
    "PARTIAL_TAG",
    "StorageError",
    "atomic_output",
    "atomic_write_text",
    "remove_stale_partials",
    "sha256_file",
    "storage_errors",
]

#: Marks temporary files of atomic writes: ``.<name>.<random>.partial<suffix>``.
PARTIAL_TAG = ".partial"
# Also the ``.<name>.<random>.tmp[.ext]`` names of earlier versions.
_PARTIAL_RE = re.compile(r"^\..+\.(partial|tmp)(\.[A-Za-z0-9]+)*$")

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_READ_ONLY = {errno.EROFS}
_DENIED = {errno.EACCES, errno.EPERM}
STORAGE_ERRNOS = frozenset(_DISK_FULL | _READ_ONLY | _DENIED)


class StorageError(EOFusionError):
    """A file could not be written: the disk is full, read-only, or permission is denied."""


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _free_bytes(path: Path) -> int | None:
    for p in (path, *path.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(p).free
    return None


def storage_error(e: OSError, path: Path, needed_bytes: int | None = None) -> StorageError | None:
    """The :class:`StorageError` for a disk-full/read-only/permission ``OSError``, else ``None``.

    Args:
        e: the error.
        path: the file or folder being written (named in the message).
        needed_bytes: estimate of the bytes the operation still needs (disk-full messages).
    """
    where = Path(e.filename) if e.filename else Path(path)
    if e.errno in _DISK_FULL:
        free = _free_bytes(where)
        need = f"; about {_mib(needed_bytes)} needed" if needed_bytes else ""
        have = f", {_mib(free)} free" if free is not None else ""
        return StorageError(
            f"cannot write {where}: no space left on device{need}{have}",
            fix="free space on that file system or set output.dir to a larger disk, then rerun "
            "(finished tiles are kept)",
        )
    if e.errno in _READ_ONLY:
        return StorageError(
            f"cannot write {where}: the file system is read-only",
            fix="set output.dir to a writable folder (or remount it read-write)",
        )
    if e.errno in _DENIED:
        return StorageError(
            f"cannot write {where}: permission denied",
            fix=f"give this user write access to {where.parent} or set output.dir elsewhere",
        )
    return None


@contextlib.contextmanager
def storage_errors(path: Path, needed_bytes: int | None = None) -> Iterator[None]:
    """Turn disk-full, read-only and permission errors inside the block into StorageError."""
    try:
        yield
    except OSError as e:
        err = storage_error(e, Path(path), needed_bytes)
        if err is None:
            raise
        raise err from e


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete the temporary files killed atomic writes left under ``folder`` (recursively).

    Only call this while holding the folder's lock: a running writer's temporary looks the same.
    Returns the removed files.
    """
    removed = []
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if _PARTIAL_RE.match(name):
                p = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (memory does not grow with file size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_output(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file next to ``path`` that replaces ``path`` when the ``with`` block succeeds.

    The file is created empty in the same folder (same filesystem, so ``os.replace`` is atomic)
    as ``.<name>.<random>.partial<suffix>``; writers that infer the format from the name (GDAL,
    matplotlib) get it through ``suffix``. If the block raises, the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f"{PARTIAL_TAG}{suffix}", dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
