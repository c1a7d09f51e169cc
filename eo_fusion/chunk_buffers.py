"""Lazy arrays whose chunks are written straight into the computed result.

``dask.compute`` on an ordinary dask array keeps every chunk until the last one is done and then
concatenates them into a new array: for a moment the process holds the whole output twice. When
a lazy stack variable (:func:`eo_fusion.api.stack`) is computed whole in this process, its
chunks are built into their places in one whole-grid buffer instead, and that buffer is the
result: the output is held once, as in the eager build.

How a compute goes:

* :meth:`BufferedArray.__dask_postcompute__` (dask calls it when a compute of the whole array
  starts) asks for a buffer: it marks the array's token as wanted in this process;
* one task per compute creates an :class:`OutputBuffer` per variable, writing in place when its
  token is wanted here (and taking that request);
* each chunk task writes its values with :meth:`OutputBuffer.write`, which allocates the whole
  array on the first write (``np.empty``: pages are committed only where chunks land) and
  returns a view of the chunk's place;
* :func:`finalize` returns the buffer when every chunk is a view of the same one, covering it;
  otherwise it falls back to dask's concatenation.

Everything else keeps dask's ordinary behaviour, chunk by chunk: writing to Zarr (``da.store``),
operations on the array (``isel``, arithmetic: their results are plain dask arrays), and
computes whose tasks run in other processes (distributed workers, where no token is wanted).
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
from dask.array.core import finalize as concatenating_finalize
from dask.core import flatten

#: Tokens of buffered arrays whose compute in this process asked for a buffer (if two threads
#: compute one array at once, the first to start takes it; the other concatenates).
_WANTED: set[str] = set()
_LOCK = threading.Lock()


class OutputBuffer:
    """A whole array of ``shape`` and ``dtype`` that chunk tasks write into (``in_place``), or,
    when not in place, a source of each chunk's own contiguous copy (dask's usual chunks).

    Pickles without its data and never in place: another process does not assemble the result.
    """

    def __init__(self, shape: Sequence[int], dtype: Any, *, in_place: bool) -> None:
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.in_place = in_place
        self._array: np.ndarray | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"shape": self.shape, "dtype": self.dtype}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["shape"], state["dtype"], in_place=False)  # type: ignore[misc]

    def write(self, index: tuple[Any, ...], values: np.ndarray) -> np.ndarray:
        """The chunk at ``index``: ``values`` copied into its place in the buffer (allocated on
        first use) and that view returned, or a contiguous copy of ``values`` when not in place
        (no copy when ``values`` already is one, of this dtype)."""
        if not self.in_place:
            return np.ascontiguousarray(values, dtype=self.dtype)
        with self._lock:  # chunk tasks run in parallel threads
            if self._array is None:
                self._array = np.empty(self.shape, self.dtype)
        view = self._array[index]
        view[...] = values
        return view


def new_buffers(layout: dict[str, tuple[str, tuple[int, ...], str]]) -> dict[str, OutputBuffer]:
    """Fresh buffers, name -> (token, shape, dtype): the first task of every compute (a buffer
    handed out as one compute's result must never be written by the next)."""
    with _LOCK:  # the compute that asked for buffers takes the request (even if it fails later)
        wanted = {token for token, _, _ in layout.values() if token in _WANTED}
        _WANTED.difference_update(wanted)
    return {
        name: OutputBuffer(shape, dtype, in_place=token in wanted)
        for name, (token, shape, dtype) in layout.items()
    }


def new_token() -> str:
    """A token tying a :class:`BufferedArray` to its buffer in :func:`new_buffers`' layout."""
    return uuid.uuid4().hex


class BufferedArray(da.Array):
    """A dask array whose chunk tasks write into one :class:`OutputBuffer` when it is computed
    whole: the compute returns that buffer instead of a concatenated copy of its chunks."""

    buffer_token: str = ""

    def __dask_postcompute__(self) -> tuple[Any, tuple[Any, ...]]:
        with _LOCK:
            _WANTED.add(self.buffer_token)
        return finalize, (self.shape,)


def buffered(array: da.Array, token: str) -> BufferedArray:
    """``array``, whose chunks come from ``OutputBuffer.write`` of the buffer of ``token``, as
    a :class:`BufferedArray`."""
    out = BufferedArray(array.dask, array.name, array.chunks, meta=array._meta)
    out.buffer_token = token
    # A request whose buffer task ran in another process is never taken here: drop it with the
    # array (else a later Zarr write of it in this process would assemble in place).
    weakref.finalize(out, _forget, token)
    return out


def _forget(token: str) -> None:
    with _LOCK:
        _WANTED.discard(token)


#: Buffers already returned by a compute: another collection over the very same chunks in the
#: same call gets a copy instead of the same object.
_HANDED_OUT: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()


def finalize(results: Any, shape: tuple[int, ...]) -> np.ndarray:
    """The computed array: the chunks' common buffer when they are views of one buffer of
    ``shape`` that no earlier compute returned, else dask's concatenation of the chunks."""
    chunks = list(flatten(results)) if isinstance(results, (list, tuple)) else [results]
    root = getattr(chunks[0], "base", None)
    if isinstance(root, np.ndarray) and _covers(root, chunks, shape):
        with _LOCK:
            if _HANDED_OUT.get(id(root)) is not root:
                _HANDED_OUT[id(root)] = root
                return root
    return concatenating_finalize(results)


def _covers(root: np.ndarray, chunks: list[Any], shape: tuple[int, ...]) -> bool:
    """Whether ``chunks`` are views of the whole allocation ``root`` of ``shape`` and fill it
    (they never overlap: each is its tile's core)."""
    return (
        root.base is None
        and root.shape == shape
        and all(getattr(c, "base", None) is root for c in chunks)
        and sum(c.size for c in chunks) == root.size
    )
