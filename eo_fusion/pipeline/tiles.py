"""Finishing one tile on its worker: halo cropping, class map + confidence, the tile file.

Every tile is predicted on its *padded* grid (core + halo on each side), so pixels near a core edge
see the same neighbourhood as they would in one big image; only the core is kept (:func:`crop_core`)
and written to ``tiles/<id>.tif`` (:func:`write_tile`), which :mod:`eo_fusion.pipeline.mosaic`
copies into the products.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox

from eo_fusion.errors import TileError
from eo_fusion.files import atomic_output
from eo_fusion.grid import aoi_mask, grid_crs
from eo_fusion.pipeline.legend import NODATA_CLASS, NODATA_PERCENT, ClassInfo
from eo_fusion.pipeline.plan import TileTask

# rasterio silences a transient NotGeoreferencedWarning while it creates a dataset, using
# warnings.catch_warnings, which is not thread-safe (Python < 3.14): two worker threads creating
# tile files at once can leak that warning (an error under -W error). One creation at a time.
_CREATE_LOCK = threading.Lock()


@dataclass(frozen=True)
class TileArrays:
    """One tile's products on its core grid (``(y, x)`` or ``(class, y, x)``, uint8)."""

    classes: np.ndarray
    confidence: np.ndarray | None
    probabilities: np.ndarray | None


def crop_core(probs: np.ndarray, task: TileTask) -> np.ndarray:
    """Keep the core of a ``(class, y, x)`` array predicted on ``task.tile.padded``.

    Raises:
        TileError: the array does not have the padded tile's shape.
    """
    expected = task.tile.padded.shape.yx
    if probs.ndim != 3 or tuple(probs.shape[1:]) != tuple(expected):
        raise TileError(
            f"tile {task.tile_id}: prediction has shape {probs.shape}, expected "
            f"(classes, {expected[0]}, {expected[1]}) on the padded tile grid",
            fix="the predictor must return probabilities on the padded tile's grid",
        )
    sy, sx = task.tile.core_in_padded
    return probs[:, sy, sx]


def aoi_pixels(task: TileTask) -> np.ndarray:
    """Boolean ``(y, x)`` on the tile's core: True where the pixel centre lies inside the AOI."""
    with _CREATE_LOCK:  # rasterize creates an in-memory dataset too (see _CREATE_LOCK)
        return aoi_mask(task.tile.core, task.aoi)


def finish_tile(probs_core: np.ndarray, task: TileTask, classes: Sequence[ClassInfo]) -> TileArrays:
    """Class map, confidence and (optionally) probabilities of a tile's core, as uint8.

    Pixels outside the AOI or with any non-finite probability (no valid input) become nodata
    (255). Confidence and probabilities are stored in percent (0–100, scale 0.01).
    """
    probs = np.asarray(probs_core, dtype=np.float32)
    if probs.shape[0] != len(classes):
        raise TileError(
            f"tile {task.tile_id}: prediction has {probs.shape[0]} classes, the model card "
            f"lists {len(classes)}",
            fix="use the model card that belongs to the checkpoint",
        )
    valid = np.isfinite(probs).all(axis=0) & aoi_pixels(task)
    safe = np.where(np.isfinite(probs), probs, -1.0)
    best = safe.argmax(axis=0)
    lut = np.array([c.value for c in classes], dtype=np.uint8)
    class_map = np.where(valid, lut[best], NODATA_CLASS).astype(np.uint8)
    conf = None
    if task.output.confidence:
        pct = np.rint(np.clip(safe.max(axis=0), 0, 1) * 100)
        conf = np.where(valid, pct, NODATA_PERCENT).astype(np.uint8)
    prob_out = None
    if task.output.probabilities:
        pct = np.rint(np.clip(safe, 0, 1) * 100)
        prob_out = np.where(valid[None], pct, NODATA_PERCENT).astype(np.uint8)
    return TileArrays(classes=class_map, confidence=conf, probabilities=prob_out)


def _bands(arrays: TileArrays) -> list[np.ndarray]:
    bands = [arrays.classes]
    if arrays.confidence is not None:
        bands.append(arrays.confidence)
    if arrays.probabilities is not None:
        bands.extend(arrays.probabilities)
    return bands


def write_tile(path: Path, arrays: TileArrays, core: GeoBox) -> None:
    """Write a tile's products as one small GeoTIFF (band 1 classes, then confidence, probs).

    Written to a temporary file in the same folder and moved into place, so a killed worker never
    leaves a half-written tile under the final name. The band order is the one
    :func:`eo_fusion.pipeline.mosaic.layers_for` reads.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bands = _bands(arrays)
    h, w = core.shape.yx
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": len(bands),
        "dtype": "uint8",
        "crs": grid_crs(core).to_wkt(),
        "transform": core.transform,
        "nodata": NODATA_CLASS,
        "compress": "deflate",
        # Band-interleaved: the mosaic reads one layer at a time without inflating the others.
        "interleave": "band",
    }
    with (
        atomic_output(path, ".tmp.tif") as tmp,
        _CREATE_LOCK,
        rasterio.open(tmp, "w", **profile) as dst,
    ):
        dst.write(np.stack(bands))
