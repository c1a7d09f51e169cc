"""Spatial blocks, folds and buffers for block cross-validation (pure numpy, no I/O).

A scene of ``H × W`` pixels is cut into square blocks of ``block`` pixels on a grid shifted by a
random offset (so repeated seeds draw different block boundaries, not only different fold
assignments). Blocks are dealt to ``k`` folds at random, in equal numbers (±1). For fold ``f``:

* **test** = the pixels of the fold's blocks;
* **buffer** = pixels within ``buffer`` px (Chebyshev distance, i.e. a square neighbourhood) of a
  test pixel that are not test pixels themselves;
* **train** = everything else. Train pixels are at least ``buffer + 1`` px from any test pixel, so
  a 3 × 3 stencil (slope) or a small receptive field does not reach into the test blocks.

Within one seed the test masks of the ``k`` folds partition the scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation

from eo_fusion.errors import BadInputError


@dataclass(frozen=True)
class Split:
    """One fold of one seed for one scene: boolean ``(H, W)`` masks (see the module docstring)."""

    seed: int
    fold: int
    test: np.ndarray
    buffer: np.ndarray
    train: np.ndarray


def block_ids(shape: tuple[int, int], block: int, rng: np.random.Generator) -> np.ndarray:
    """Block index ``0..n-1`` of every pixel, on a block grid shifted by a random offset."""
    h, w = shape
    oy, ox = (int(v) for v in rng.integers(0, block, size=2))
    rows = (np.arange(h) + oy) // block
    cols = (np.arange(w) + ox) // block
    raw = rows[:, None] * (cols.max() + 1) + cols[None, :]
    _, ids = np.unique(raw, return_inverse=True)
    return ids.reshape(h, w)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` px in every direction (square structuring element)."""
    if radius <= 0:
        return mask.copy()
    return binary_dilation(mask, structure=np.ones((2 * radius + 1, 2 * radius + 1), bool))


def make_splits(
    shape: tuple[int, int], *, block: int, buffer: int, folds: int, seed: int, name: str = "scene"
) -> list[Split]:
    """The ``folds`` splits of one seed for a scene of ``shape`` (rows, cols).

    Raises:
        BadInputError: the scene has fewer blocks than folds.
    """
    rng = np.random.default_rng(seed)
    ids = block_ids(shape, block, rng)
    n = int(ids.max()) + 1
    if n < folds:
        raise BadInputError(
            f"scene '{name}' ({shape[0]} × {shape[1]} px) has {n} blocks of {block} px, fewer "
            f"than the {folds} folds",
            fix="use smaller blocks or fewer folds",
        )
    fold_of_block = rng.permutation(np.arange(n) % folds)
    fold = fold_of_block[ids]
    out = []
    for f in range(folds):
        test = fold == f
        near = dilate(test, buffer)
        out.append(Split(seed, f, test, near & ~test, ~near))
    return out
