"""From tile files to a seamless map: the windowed mosaic of each product layer.

Why there are no seams: every tile is predicted on its *padded* grid (core + halo on each side), so
pixels near a core edge see the same neighbourhood as they would in one big image; only the core is
kept (:mod:`eo_fusion.pipeline.tiles`). Tile cores partition the job grid exactly once
(``eo_fusion.grid.make_tiles``), so the mosaic is a plain copy of each core into its window: no
overlap to reconcile and no blending weights to tune. As long as the model's receptive field
reaches less than ``halo`` pixels, the map does not depend on the tile size (tested with two
tile sizes in ``tests/e2e/test_seams.py``).

Memory: a worker holds one tile; the client assembles the full-size raster one tile window at a
time from the tile files, never the whole map.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.windows import Window

from eo_fusion.errors import ProductError
from eo_fusion.grid import grid_crs
from eo_fusion.pipeline.legend import NODATA_CLASS


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
    """The products a tile file holds, with their band numbers.

    The band order is the one :func:`eo_fusion.pipeline.tiles.write_tile` writes.
    """
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
