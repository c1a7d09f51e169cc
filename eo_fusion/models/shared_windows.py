"""Window outputs that neighbouring tiles share, computed once per process.

A map job's tile runs every window that touches its core (:func:`~eo_fusion.models.predict.
sliding_probs`). A window that straddles the core's edge is also run by the tile on the other
side of that edge: with 32 px windows at a 24 px stride and 512 px tiles, 8.5–11 % of all
windows ran twice. :class:`SharedWindows` keeps the probabilities of those straddling windows so
that the neighbour, when it runs in the same process, takes them instead of running the model.

Why the result does not depend on which tile ran a window: an entry is keyed by the window's
global position and a digest of everything the model sees (the window's input bytes, the band
keys, the days of year, the device and precision), and windows that may be shared run in
batches of one fixed size (the model's output for a window then does not depend on the other
windows of its batch; a short last batch is padded). A tile therefore gets exactly the values it
would compute itself, whatever ran first.

Memory: an entry is removed once every tile that shares the window has taken it (2 across an
edge, 4 at a corner), and the oldest entries go first beyond ``max_bytes`` (windows at the AOI's
border, whose neighbour does not exist). Thread-safe: the worker threads of one process share
one instance.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

#: Default bound of one process's entries (a 512 px tile shares ~90 windows of 20 KB each with
#: 5 classes; a tile row of a Sentinel-2-tile-sized job keeps ~10 MB until the next row).
MAX_BYTES = 48 * 2**20


class SharedWindows:
    """Probabilities of edge-straddling windows, keyed by position and input digest."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = self.misses = 0
        self._entries: OrderedDict[Hashable, list] = OrderedDict()  # key -> [probs, uses left]
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> np.ndarray | None:
        """The stored probabilities of ``key`` (``None`` if absent); the last taker removes it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            entry[1] -= 1
            if entry[1] <= 0:
                del self._entries[key]
                self.nbytes -= entry[0].nbytes
            return entry[0]

    def put(self, key: Hashable, probs: np.ndarray, uses: int) -> None:
        """Keep ``probs`` for ``uses`` more tiles (evicting the oldest entries beyond the bound);
        a tile that ran a window another sharing tile already left counts as one of its uses."""
        if uses <= 0 or probs.nbytes > self.max_bytes:
            return
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:  # a sharing tile ran it at the same time: this one is done
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._entries[key]
                    self.nbytes -= entry[0].nbytes
                return
            self._entries[key] = [probs, uses]
            self.nbytes += probs.nbytes
            while self.nbytes > self.max_bytes:
                _, (old, _) = self._entries.popitem(last=False)
                self.nbytes -= old.nbytes

    def __len__(self) -> int:
        return len(self._entries)


def context_digest(*parts: object) -> bytes:
    """A 32-byte digest of what the model sees besides a window's pixels (band keys, dates,
    device, precision, window settings): arrays by their bytes, anything else by ``repr``."""
    h = hashlib.blake2b(digest_size=32)
    for part in parts:
        h.update(np.ascontiguousarray(part).data if isinstance(part, np.ndarray) else
                 repr(part).encode())  # fmt: skip
        h.update(b"\0")
    return h.digest()


def window_key(context: bytes, y: int, x: int, window: np.ndarray) -> tuple[int, int, bytes]:
    """The key of the window at global pixel ``(y, x)``: its position and a digest of its input
    and of ``context`` (:func:`context_digest`)."""
    digest = hashlib.blake2b(np.ascontiguousarray(window).data, digest_size=16, key=context)
    return y, x, digest.digest()


def sharing_tiles(start: int, window: int, core: slice, grid: slice) -> int:
    """How many tiles along one axis run the window starting at ``start`` (1 or 2): 2 when it
    reaches past the core on a side where another tile's core follows (inside ``grid``)."""
    before = start < core.start and grid.start < core.start
    after = start + window > core.stop and core.stop < grid.stop
    return 2 if before or after else 1
