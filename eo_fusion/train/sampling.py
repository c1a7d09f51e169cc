"""Chip sampling and the spatial split: pure functions on a field raster (no I/O).

The grid is cut into square blocks of ``block`` pixels. Blocks holding labelled pixels are
assigned at random (with the seed) to ``train`` / ``val`` / ``test``. Every chip lies inside one
block, at least ``margin`` pixels from its edges, so chips of different blocks are at least
``2 * margin`` pixels apart (the buffer). Each field belongs to the split of the block holding
most of its pixels and is labelled only in chips of that split: no field and no block has
labelled pixels on both sides.

Chips are drawn per split and class, round-robin over the class's fields in random order (at most
``max_per_field`` chips each), until ``per_class`` chips are found or the fields run out; a chip
is kept only when at least ``min_labelled`` of its pixels are labelled for its split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ChipPlan:
    """One chip: its origin on the grid (pixels), block, split and the field it was drawn for."""

    id: str
    row: int
    col: int
    split: str
    block: tuple[int, int]
    field: int
    cls: int


def assign_blocks(
    labelled_blocks: Sequence[int], n_blocks: int, val: float, test: float, seed: int
) -> np.ndarray:
    """Split name per block (object array): labelled blocks drawn at random; others ``train``."""
    out = np.full(n_blocks, "train", dtype=object)
    blocks = np.asarray(sorted(labelled_blocks), dtype=int)
    n = len(blocks)
    if n < 2:
        return out
    order = np.random.default_rng(seed).permutation(blocks)
    k_val = min(max(1, round(n * val)), n - 1)
    k_test = min(round(n * test), n - 1 - k_val) if test > 0 else 0
    if test > 0 and k_test == 0 and n - k_val >= 2:
        k_test = 1
    out[order[:k_val]] = "val"
    out[order[k_val : k_val + k_test]] = "test"
    return out


def block_index(shape: tuple[int, int], block: int) -> tuple[np.ndarray, int]:
    """Block number per pixel ``(y, x)`` (row-major over blocks) and the number of columns."""
    h, w = shape
    nbx = -(-w // block)
    rows = (np.arange(h) // block)[:, None]
    cols = (np.arange(w) // block)[None, :]
    return (rows * nbx + cols).astype(np.int64), nbx


def field_splits(
    fields: np.ndarray, blocks: np.ndarray, block_split: np.ndarray, n_fields: int
) -> np.ndarray:
    """Split of each field: that of the block holding most of its pixels."""
    on = fields >= 0
    f, b = fields[on].astype(np.int64), blocks[on]
    out = np.full(n_fields, "train", dtype=object)
    if not f.size:
        return out
    nb = int(blocks.max()) + 1
    counts = np.bincount(f * nb + b, minlength=n_fields * nb).reshape(n_fields, nb)
    has = counts.sum(axis=1) > 0
    out[has] = block_split[counts[has].argmax(axis=1)]
    return out


def _integral(mask: np.ndarray) -> np.ndarray:
    s = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    s[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return s


def _window_sum(s: np.ndarray, r: int, c: int, size: int) -> int:
    return int(s[r + size, c + size] - s[r, c + size] - s[r + size, c] + s[r, c])


@dataclass(frozen=True)
class _Layout:
    shape: tuple[int, int]
    block: int
    nbx: int
    size: int
    margin: int

    def origin(self, py: int, px: int) -> tuple[int, int, tuple[int, int]] | None:
        """Origin of the chip centred as near ``(py, px)`` as its block allows, or ``None``."""
        by, bx = py // self.block, px // self.block
        h, w = self.shape
        lo_y, hi_y = by * self.block + self.margin, min((by + 1) * self.block, h) - self.margin
        lo_x, hi_x = bx * self.block + self.margin, min((bx + 1) * self.block, w) - self.margin
        if hi_y - lo_y < self.size or hi_x - lo_x < self.size:
            return None
        r = int(np.clip(py - self.size // 2, lo_y, hi_y - self.size))
        c = int(np.clip(px - self.size // 2, lo_x, hi_x - self.size))
        return r, c, (by, bx)


def _field_candidates(
    pixels: np.ndarray,
    layout: _Layout,
    split: str,
    block_split: np.ndarray,
    labelled: np.ndarray,
    opts: tuple[int, float, np.random.Generator],
) -> list[tuple[int, int, tuple[int, int]]]:
    """Distinct chips (origin, block) for one field: up to ``cap`` of them."""
    cap, min_labelled, rng = opts
    out: list[tuple[int, int, tuple[int, int]]] = []
    seen: set[tuple[int, int]] = set()
    size = layout.size
    for i in rng.permutation(len(pixels))[: 20 * cap]:
        py, px = divmod(int(pixels[i]), layout.shape[1])
        if block_split[(py // layout.block) * layout.nbx + px // layout.block] != split:
            continue
        got = layout.origin(py, px)
        if got is None or got[:2] in seen:
            continue
        r, c, _ = got
        if not (r <= py < r + size and c <= px < c + size):  # the field must be in its chip
            continue
        if _window_sum(labelled, r, c, size) < min_labelled * size * size:
            continue
        seen.add((r, c))
        out.append(got)
        if len(out) >= cap:
            break
    return out


def _round_robin(
    per_field: list[tuple[int, list[tuple[int, int, tuple[int, int]]]]],
    chips: dict[tuple[int, int], ChipPlan],
    split: str,
    cls: int,
    per_class: int,
    max_per_field: int,
) -> None:
    """Take the fields' candidates in turns (first chips of every field, then second ...)."""
    taken = 0
    for rnd in range(max_per_field):
        for f, cand in per_field:
            if taken >= per_class or rnd >= len(cand):
                continue
            r, c, blk = cand[rnd]
            if (r, c) in chips:
                continue
            chips[(r, c)] = ChipPlan(f"r{r:05d}_c{c:05d}", r, c, split, blk, f, cls)
            taken += 1


def sample_chips(
    fields: np.ndarray,
    field_cls: np.ndarray,
    *,
    size: int,
    block: int,
    margin: int,
    per_class: int,
    max_per_field: int,
    min_labelled: float,
    fractions: tuple[float, float],
    seeds: tuple[int, int],
) -> tuple[list[ChipPlan], np.ndarray, np.ndarray]:
    """Chips over a field raster, and the split of every block and every field.

    Args:
        fields: ``(y, x)`` field index per pixel (-1 = none), see ``rasterize_fields``.
        field_cls: class index of each field.
        size: chip edge (px); block: block edge (px); margin: gap to block edges (px).
        per_class: chips per class and split; max_per_field: cap per field.
        min_labelled: minimum share of labelled pixels in a chip.
        fractions: (val, test) shares of the labelled blocks.
        seeds: (split seed, sampling seed).

    Returns:
        ``(chips, block_split, field_split)``; chips sorted by id.
    """
    blocks, nbx = block_index(fields.shape, block)
    n_blocks = int(blocks.max()) + 1
    n_fields = len(field_cls)
    block_split = assign_blocks(
        np.unique(blocks[fields >= 0]).tolist(), n_blocks, *fractions, seed=seeds[0]
    )
    fsplit = field_splits(fields, blocks, block_split, n_fields)
    layout = _Layout(fields.shape, block, nbx, size, margin)
    flat = fields.ravel()
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], np.arange(n_fields + 1))
    rng = np.random.default_rng(seeds[1])
    chips: dict[tuple[int, int], ChipPlan] = {}
    for split in SPLITS:
        ok = (fields >= 0) & (fsplit[np.maximum(fields, 0)] == split)
        labelled = _integral(ok)
        for cls in range(int(field_cls.max()) + 1 if n_fields else 0):
            mine = [f for f in range(n_fields) if field_cls[f] == cls and fsplit[f] == split]
            per_field = []
            for f in rng.permutation(mine) if mine else []:
                pix = order[starts[f] : starts[f + 1]]
                cand = _field_candidates(
                    pix,
                    layout,
                    split,
                    block_split,
                    labelled,
                    (max_per_field, min_labelled, rng),
                )
                per_field.append((int(f), cand))
            _round_robin(per_field, chips, split, cls, per_class, max_per_field)
    return sorted(chips.values(), key=lambda p: p.id), block_split, fsplit
