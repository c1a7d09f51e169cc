"""Memory housekeeping between the phases of a run: freed heap back to the OS, the garbage
collector kept off long-lived imports.

glibc's ``malloc`` keeps memory that numpy, GDAL and torch free in its arenas, for the next
allocation of the same thread. A map job's tile threads free their tile's arrays at the end of
each tile, and the products (mosaic, COGs, quicklook) run in other threads with arenas of their
own, so without a trim the memory of the tile phase stayed resident through the products
(measured on a 4000² px job: ``malloc_trim`` after a tile gave back ~60 MB of 810 MB PSS).

Importing torch, xarray, dask and the model code makes ~375,000 objects that live as long as
the process. While they are created the cyclic collector runs full passes over the growing heap
(5 of them, 0.4–1.3 s of the 2.1–3.4 s these imports took here); afterwards every full pass
walks them again, holding the GIL that tile threads need. :func:`frozen_imports` avoids both.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable, Iterator


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


@contextlib.contextmanager
def frozen_imports() -> Iterator[None]:
    """Run the block (a process's long-lived imports) with the cyclic garbage collector off,
    then freeze every object made so far (``gc.freeze``: later collections skip them) and turn
    the collector back on as it was."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
