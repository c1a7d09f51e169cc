"""From per-tile probabilities to a seamless map: halo cropping, tile files, windowed mosaic.

Why there are no seams: every tile is predicted on its *padded* grid (core + halo on each side), so
pixels near a core edge see the same neighbourhood as they would in one big image; only the core is
kept. Tile cores partition the job grid exactly once (``eo_fusion.grid.make_tiles``), so the mosaic
is a plain copy of each core into its window: no overlap to reconcile and no blending weights to
tune. As long as the model's receptive field reaches less than ``halo`` pixels, the map does not
depend on the tile size (tested with two tile sizes in ``tests/e2e/test_seams.py``).

Memory: a worker holds one tile; the client assembles the full-size raster one tile window at a
time from the tile files, never the whole map.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.features import geometry_mask
from rasterio.windows import Window

from eo_fusion.errors import ProductError, TileError
from eo_fusion.grid import grid_crs
from eo_fusion.pipeline.plan import NODATA_CLASS, NODATA_PERCENT, TileTask

# rasterio silences a transient NotGeoreferencedWarning while it creates a dataset, using
# warnings.catch_warnings, which is not thread-safe (Python < 3.14): two worker threads creating
# tile files at once can leak that warning (an error under -W error). One creation at a time.
_CREATE_LOCK = threading.Lock()


@dataclass(frozen=True)
class ClassInfo:
    """One output class.

    Attributes:
        value: pixel value in the class map (0–254; 255 is nodata).
        name: class name (shown in legends, band metadata and the raster attribute table).
        color: ``#rrggbb`` colour for the colour table and quicklook.
    """

    value: int
    name: str
    color: str

    def rgb(self) -> tuple[int, int, int]:
        """The colour as an (r, g, b) tuple of 0–255 ints."""
        h = self.color.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


@dataclass(frozen=True)
class TileArrays:
    """One tile's products on its core grid (``(y, x)`` or ``(class, y, x)``, uint8)."""

    classes: np.ndarray
    confidence: np.ndarray | None
    probabilities: np.ndarray | None


def crop_core(probs: np.ndarray, task: TileTask) -> np.ndarray:
    """Keep the core of a ``(class, y, x)`` array predicted on ``task.padded``.

    Raises:
        TileError: the array does not have the padded tile's shape.
    """
    expected = task.padded.shape.yx
    if probs.ndim != 3 or tuple(probs.shape[1:]) != tuple(expected):
        raise TileError(
            f"tile {task.tile_id}: prediction has shape {probs.shape}, expected "
            f"(classes, {expected[0]}, {expected[1]}) on the padded tile grid",
            fix="the predictor must return probabilities on the padded tile's grid",
        )
    sy, sx = task.core_in_padded
    return probs[:, sy, sx]


def aoi_pixels(task: TileTask) -> np.ndarray:
    """Boolean ``(y, x)`` on ``task.core``: True where the pixel centre lies inside the AOI."""
    core = task.core
    geom = task.aoi.to_crs(grid_crs(core)).geom
    with _CREATE_LOCK:  # rasterize creates an in-memory dataset too (see _CREATE_LOCK)
        return geometry_mask([geom], out_shape=core.shape.yx, transform=core.transform, invert=True)


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
    leaves a half-written tile under the final name.
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.tif", dir=path.parent)
    os.close(fd)
    try:
        with _CREATE_LOCK, rasterio.open(tmp, "w", **profile) as dst:
            dst.write(np.stack(bands))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class MosaicLayer:
    """One output raster assembled from the tile files.

    Attributes:
        name: product name (``classes``, ``confidence``, ``probabilities``).
        bands: 1-based band numbers of the tile files that go into this product, in order.
    """

    name: str
    bands: tuple[int, ...]


def layers_for(confidence: bool, probabilities: bool, n_classes: int) -> list[MosaicLayer]:
    """The products a tile file holds, with their band numbers (see :func:`write_tile`)."""
    layers = [MosaicLayer("classes", (1,))]
    nxt = 2
    if confidence:
        layers.append(MosaicLayer("confidence", (nxt,)))
        nxt += 1
    if probabilities:
        layers.append(MosaicLayer("probabilities", tuple(range(nxt, nxt + n_classes))))
    return layers


def mosaic_to_gtiff(
    dst_path: Path,
    grid: GeoBox,
    tiles: Iterable[tuple[tuple[slice, slice], Path | None]],
    layer: MosaicLayer,
    *,
    blocksize: int = 256,
) -> None:
    """Copy each tile's core into its window of one tiled GeoTIFF covering ``grid``.

    Args:
        dst_path: output (a plain tiled GeoTIFF; the COG is made from it afterwards).
        grid: the job grid.
        tiles: ``(core_in_grid window, tile file or None)`` for *every* tile of the grid (their
            windows partition it); ``None`` (a failed tile, or one outside the AOI) writes nodata.
        layer: which bands of the tile files to copy.
        blocksize: internal tile edge (pixels).

    Memory: one tile window of ``len(layer.bands)`` uint8 bands at a time.
    """
    h, w = grid.shape.yx
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": len(layer.bands),
        "dtype": "uint8",
        "crs": grid_crs(grid).to_wkt(),
        "transform": grid.transform,
        "nodata": NODATA_CLASS,
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    covered = 0
    with rasterio.open(dst_path, "w", **profile) as dst:
        for (sy, sx), path in tiles:
            win = Window(sx.start, sy.start, sx.stop - sx.start, sy.stop - sy.start)
            shape = (len(layer.bands), int(win.height), int(win.width))
            if path is None:
                data = np.full(shape, NODATA_CLASS, dtype=np.uint8)
            else:
                with rasterio.open(path) as src:
                    if (src.height, src.width) != shape[1:]:
                        raise ProductError(
                            f"tile file {path} is {src.height}×{src.width}, its window in the "
                            f"grid is {shape[1]}×{shape[2]}",
                            fix="rerun the job with --force to recompute its tiles",
                        )
                    data = src.read(list(layer.bands))
            dst.write(data, window=win)
            covered += shape[1] * shape[2]
    # Unwritten blocks would read back as 0, a valid class: every grid pixel must be covered.
    if covered != h * w:
        raise ProductError(
            f"{dst_path}: tile windows cover {covered} of {h * w} grid pixels",
            fix="pass every tile of the grid (None for tiles without output)",
        )
