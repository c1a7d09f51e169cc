"""File integrity and safe writes: sha256 checksums and atomic replacement.

Used wherever a file must never be seen half-written (manifests, model cards, reports) or must be
verified before it is trusted (resumed tiles, checkpoints, STAC ``file:checksum``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output", "atomic_write_text", "sha256_file"]


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
    as ``.<name>.<random><suffix>``; writers that infer the format from the name (GDAL,
    matplotlib) get it through ``suffix``. If the block raises, the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
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
