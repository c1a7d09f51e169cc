"""Giving freed heap memory back to the operating system between the phases of a run.

glibc's ``malloc`` keeps memory that numpy, GDAL and torch free in its arenas, for the next
allocation of the same thread. A map job's tile threads free their tile's arrays at the end of
each tile, and the products (mosaic, COGs, quicklook) run in other threads with arenas of their
own, so without a trim the memory of the tile phase stayed resident through the products
(measured on a 4000² px job: ``malloc_trim`` after a tile gave back ~60 MB of 810 MB PSS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> bool:
    """Give the heap memory freed so far back to the OS (glibc ``malloc_trim(0)``).

    Costs a walk of the heap (milliseconds); call it between phases, not per allocation.
    Returns whether memory was released (``False`` also where the C library cannot).
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
