"""A synthetic, deterministic tile predictor — for tests and scale benchmarks only.

**Synthetic**: its "probabilities" are a function of each pixel's world coordinates, not of any
imagery. It exists so the execution, resume, mosaic and product machinery can be tested and
benchmarked on any area and grid size without data, and so that every result can be recomputed
independently: the value of a pixel depends only on where it is, plus its neighbourhood within
``radius`` pixels. That neighbourhood makes halos matter exactly as they do for a real model: with
``halo >= radius`` the map does not depend on the tile size; with ``halo = 0`` it does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox
from scipy.ndimage import uniform_filter

from eo_fusion.pipeline.legend import ClassInfo
from eo_fusion.pipeline.plan import TileTask

_PALETTE = ("#1a9850", "#fee08b", "#4575b4", "#d73027", "#984ea3", "#a6761d", "#999999")


def _default_classes(n: int) -> tuple[ClassInfo, ...]:
    return tuple(
        ClassInfo(value=i + 1, name=f"synthetic class {i + 1}", color=_PALETTE[i % len(_PALETTE)])
        for i in range(n)
    )


def pixel_centres(gbox: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    """World x and y of every pixel centre, each ``(y, x)`` float64 in the grid CRS units."""
    h, w = gbox.shape.yx
    t = gbox.transform
    cols = np.arange(w) + 0.5
    rows = np.arange(h) + 0.5
    xs = t.c + t.a * cols[None, :] + t.b * rows[:, None]
    ys = t.f + t.d * cols[None, :] + t.e * rows[:, None]
    return np.broadcast_to(xs, (h, w)), np.broadcast_to(ys, (h, w))


@dataclass(frozen=True)
class SyntheticPredictor:
    """Class probabilities from smooth waves plus coordinate-hash noise, box-filtered.

    Attributes:
        n_classes: number of classes (values 1..n).
        radius: neighbourhood radius in pixels (box filter of ``2 * radius + 1``); the halo must
            be at least this for seamless maps.
        wavelength_m: wavelength of the smooth part, in grid CRS units (metres for UTM).
        noise: weight of the per-pixel noise (makes the filter, hence the halo, matter).
        work: extra compute per tile (``work`` float32 matmuls of the tile's size) to emulate a
            model's cost in throughput benchmarks; 0 for tests.
        delay_s: seconds to sleep per tile (lets tests interrupt a run part-way).
        classes: the output classes (derived from ``n_classes``).
    """

    n_classes: int = 4
    radius: int = 3
    wavelength_m: float = 400.0
    noise: float = 1.5
    work: int = 0
    delay_s: float = 0.0
    classes: tuple[ClassInfo, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.classes:
            object.__setattr__(self, "classes", _default_classes(self.n_classes))

    def logits(self, gbox: GeoBox) -> np.ndarray:
        """float32 ``(class, y, x)`` scores before smoothing; depends only on pixel positions."""
        xs, ys = pixel_centres(gbox)
        out = np.empty((self.n_classes, *xs.shape), dtype=np.float32)
        for k in range(self.n_classes):
            angle = np.pi * k / self.n_classes
            phase = 2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / self.wavelength_m
            # Hash of the (rounded) world position: white noise that is the same in every tile.
            seed = np.sin(np.round(xs, 3) * 12.9898 + np.round(ys, 3) * 78.233 + 17.0 * k)
            hashed = (seed * 43758.5453) % 1.0
            out[k] = np.sin(phase + k) + self.noise * (hashed - 0.5)
        return out

    def predict(self, task: TileTask) -> np.ndarray:
        """Softmax of the box-filtered scores on ``task.tile.padded`` (edges: nearest padding)."""
        scores = self.logits(task.tile.padded)
        size = 2 * self.radius + 1
        smooth = np.stack([uniform_filter(s, size=size, mode="nearest") for s in scores])
        if self.work:
            _burn(smooth.shape[1] * smooth.shape[2], self.work)
        if self.delay_s:
            time.sleep(self.delay_s)
        smooth = smooth * 4.0
        smooth -= smooth.max(axis=0, keepdims=True)
        e = np.exp(smooth)
        return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)

    def provenance(self) -> dict[str, Any]:
        """Identifies the predictor as synthetic in product metadata."""
        return {
            "model": "synthetic (coordinate-based, no imagery; for tests/benchmarks)",
            "n_classes": self.n_classes,
            "radius_px": self.radius,
        }


def _burn(pixels: int, work: int) -> None:
    # Deterministic CPU load proportional to the tile's pixels (BLAS releases the GIL).
    n = max(32, int(np.sqrt(pixels)))
    a = np.full((n, n), 1.0 / n, dtype=np.float32)
    b = a
    for _ in range(work):
        b = a @ b
