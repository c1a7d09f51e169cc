"""Read budgets and read health: refuse a read that is too big *before* GDAL decodes it, and
notice when GDAL silently read less than it asked for.

* :func:`check_read_budget` compares a window read (pixels and decoded bytes, all bands) with
  :class:`~eo_fusion.gdal.GDALOptions` ``max_read_pixels``/``max_read_bytes``; a 100000 × 100000
  TIFF read whole (no overviews, coarse target) is refused naming the asset, not decoded into
  hundreds of GiB.
* :func:`watch_gdal_io` collects GDAL's "IO error during reading" warnings raised in this thread
  during a read. GDAL (3.10) accepts a range response that was cut short, logs those warnings,
  drops the tags it could not read and returns zeros or an ungeoreferenced dataset: without this
  watch a truncated transfer becomes wrong pixels with exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import numpy as np

from eo_fusion.errors import ReadError
from eo_fusion.retry import IncompleteReadError

__all__ = ["GDALIOProblems", "ReadBudgetError", "check_read_budget", "watch_gdal_io"]

_GDAL_LOGGER = "rasterio._env"
# Only wording that means "fewer bytes than asked for" (libtiff "IO error during reading",
# "Read error at row", GDAL "short read"); structural libtiff warnings about valid files do not
# count.
_IO_WORDS = ("io error", "read error", "short read", "unexpected end of file", "premature end")


def check_read_budget(
    *,
    what: str,
    width: int,
    height: int,
    bands: int,
    dtype: str | np.dtype,
    max_pixels: int,
    max_bytes: int,
) -> None:
    """Raise :class:`ReadError` naming ``what`` if a ``width`` × ``height`` × ``bands`` read
    exceeds ``max_pixels`` (all bands) or ``max_bytes`` (stored dtype plus the float32 copy the
    reader makes)."""
    pixels = int(width) * int(height) * max(1, int(bands))
    nbytes = pixels * (np.dtype(dtype).itemsize + 4)
    if pixels > max_pixels or nbytes > max_bytes:
        raise ReadBudgetError(
            f"{what}: a read of {width} x {height} px x {bands} band(s) ({pixels:,} px, "
            f"{nbytes / 2**30:.1f} GiB decoded) exceeds the read budget "
            f"({max_pixels:,} px, {max_bytes / 2**30:.1f} GiB)",
            fix="add overviews to the file (gdaladdo) or use a coarser/smaller tile; if the read "
            "is intended raise GDALOptions max_read_pixels/max_read_bytes",
        )


class ReadBudgetError(ReadError):
    """A read is larger than the configured pixel/byte budget (never retried)."""


class GDALIOProblems(list[str]):
    """GDAL IO warnings seen in one read (a list of messages)."""


class _Collector(logging.Handler):
    def __init__(self, thread: int, sink: GDALIOProblems) -> None:
        super().__init__(level=logging.WARNING)
        self.thread, self.sink = thread, sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return  # another dask thread's read
        text = record.getMessage()
        if any(w in text.lower() for w in _IO_WORDS):
            self.sink.append(text)


@contextlib.contextmanager
def watch_gdal_io(what: str) -> Iterator[GDALIOProblems]:
    """Collect GDAL IO warnings of this thread; raise :class:`IncompleteReadError` (naming
    ``what``) at the
    end of the block if there were any (also when the block itself failed)."""
    problems = GDALIOProblems()
    handler = _Collector(threading.get_ident(), problems)
    logger = logging.getLogger(_GDAL_LOGGER)
    logger.addHandler(handler)
    failure: BaseException | None = None
    try:
        yield problems
    except BaseException as e:
        failure = e
    finally:
        logger.removeHandler(handler)
    if problems:
        raise IncompleteReadError(
            f"{what}: GDAL read less than it asked for ({problems[0]}): truncated or corrupt data",
            fix="retried with GDAL's cache cleared; if it persists the file itself is damaged: "
            "re-download or rebuild it",
        ) from failure
    if failure is not None:
        raise failure
