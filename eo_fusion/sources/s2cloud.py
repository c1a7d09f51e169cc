"""s2cloudless on Sentinel-2 L1C, computed the way its authors run it: at 160 m.

The s2cloudless classifier (Sentinel Hub, LightGBM, shipped in the ``s2cloudless`` wheel) takes
the ten L1C bands B01, B02, B04, B05, B08, B8A, B09, B10, B11, B12 (TOA reflectance 0-1) of one
pixel. It was trained on 10 m pixels but its authors apply it "on 160 m × 160 m pixels" in
production (Sentinel Hub blog, "Cloud masks at your service", May 2020) and publish the result as
the CLP (probability) and CLM (mask) bands "at a fixed resolution of 160m per pixel"
(docs.sentinel-hub.com, user guide "Cloud Masks and Cloud Probabilities"). The mask is the
package's own post-processing: the probability averaged over a disk of ``average_over`` pixels,
thresholded at 0.4 and dilated with a disk of ``dilation_size`` pixels; 4 and 2 are the values
used at 160 m in the package's example notebook (examples/sentinel2-cloud-detector-example.ipynb).

Here, for one tile grid (any CRS):

1. the *cloud grid*: pixels of ``cloud_resolution`` (160 m) in the tile's CRS, anchored on whole
   multiples of it (so a cloud pixel has the same footprint in every tiling), covering the tile
   plus a margin of ``average_over + dilation + 1`` cloud pixels (plus the shadow search
   distance): every cloud pixel that the tile needs sees its whole averaging and dilation
   neighbourhood, so the result on the tile does not depend on tile size or halo;
2. the ten bands read onto it with ``average`` resampling (the reader's rule for a coarser grid);
3. :meth:`S2PixelCloudDetector.get_cloud_probability_maps` and
   :meth:`~S2PixelCloudDetector.get_cloud_masks` on it (no-data pixels enter the model as zero
   reflectance, as ``nan_to_num`` makes them; their probability is reported as NaN);
4. back to the tile grid: the probability **bilinearly** (a smooth 0-1 layer, ``s2:CLP``), the
   mask by **nearest** neighbour (each tile pixel takes the mask of the cloud pixel containing
   its centre: the mask is exactly the package's mask, never re-thresholded from interpolated
   values, which would shrink or grow clouds by up to half a cloud pixel).

Both resamplings go through :func:`eo_fusion.sources.resample.point_resample` (positions
quantised, so the values are bit-for-bit the same in every tiling).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from scipy import ndimage

from eo_fusion.grid import grid_crs
from eo_fusion.modalities import S2Options
from eo_fusion.sources.resample import point_resample

__all__ = [
    "CLP_KEY",
    "METRES_PER_DEGREE",
    "S2CLOUDLESS_BANDS",
    "CloudLayer",
    "CoarseClouds",
    "cloud_grid",
    "coarse_clouds",
    "s2cloudless_layer",
]

#: Registry key of the cloud-probability layer (0-1) a stack can ask for.
CLP_KEY = "s2:CLP"

#: The bands s2cloudless' model takes, in its order (TOA reflectance 0-1).
S2CLOUDLESS_BANDS = tuple(
    f"s2:{b}" for b in ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
)

#: Metres per degree used for the cloud resolution on a lon/lat grid (one degree of the equator,
#: WGS 84): a fixed factor keeps the cloud grid the same for every tile.
METRES_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class CoarseClouds:
    """s2cloudless on the cloud grid: ``probability`` (NaN = no data) and ``mask`` (True = cloud,
    after averaging, thresholding and dilation), both ``(y, x)`` on ``gbox``."""

    probability: np.ndarray
    mask: np.ndarray
    gbox: GeoBox


@dataclass(frozen=True)
class CloudLayer:
    """s2cloudless brought to a tile grid: ``probability`` float32 0-1 (NaN = no data),
    ``cloud`` and ``near_cloud`` (cloud dilated by ``shadow_search_px``) booleans."""

    probability: np.ndarray
    cloud: np.ndarray
    near_cloud: np.ndarray


def _cloud_res(gbox: GeoBox, resolution_m: float) -> float:
    crs = grid_crs(gbox)
    return resolution_m / METRES_PER_DEGREE if crs.geographic else resolution_m


def cloud_grid(gbox: GeoBox, resolution_m: float, margin: int) -> GeoBox:
    """The north-up grid of ``resolution_m`` pixels (in ``gbox``'s CRS units; lon/lat: see
    :data:`METRES_PER_DEGREE`) whose edges lie on whole multiples of the resolution, covering
    ``gbox`` plus ``margin`` pixels on every side."""
    res = _cloud_res(gbox, resolution_m)
    left, bottom, right, top = gbox.boundingbox
    i0 = math.floor(left / res) - margin
    i1 = math.ceil(right / res) + margin
    j0 = math.floor(bottom / res) - margin
    j1 = math.ceil(top / res) + margin
    transform = Affine(res, 0.0, i0 * res, 0.0, -res, j1 * res)
    return GeoBox((j1 - j0, i1 - i0), transform, grid_crs(gbox))


def _detector(opts: S2Options):
    from s2cloudless import S2PixelCloudDetector  # heavy import (LightGBM), only for L1C

    return S2PixelCloudDetector(
        threshold=opts.cloud_threshold,
        average_over=opts.cloud_average_over or None,
        dilation_size=opts.cloud_dilation or None,
        all_bands=False,
    )


def coarse_clouds(toa: np.ndarray, gbox: GeoBox, opts: S2Options) -> CoarseClouds:
    """s2cloudless on ``toa`` (``(10, y, x)`` in :data:`S2CLOUDLESS_BANDS` order, on the cloud
    grid ``gbox``): probability and mask exactly as the package computes them."""
    finite = np.all(np.isfinite(toa), axis=0)
    if not finite.any():  # nothing to classify (outside the scene, or a layout-only read)
        return CoarseClouds(np.full(finite.shape, np.nan, np.float32), finite.copy(), gbox)
    x = np.nan_to_num(np.moveaxis(toa, 0, -1)[None], nan=0.0).astype(np.float32)
    detector = _detector(opts)
    prob = detector.get_cloud_probability_maps(x)
    mask = detector.get_mask_from_prob(prob)[0].astype(bool)
    probability = np.where(finite, prob[0], np.float32(np.nan)).astype(np.float32)
    return CoarseClouds(probability, mask, gbox)


def _margin(opts: S2Options, gbox: GeoBox) -> int:
    """Cloud pixels around the tile: averaging + dilation + 1 (bilinear taps) + the shadow
    search distance."""
    fine = abs(gbox.resolution.x)
    shadow = math.ceil(opts.shadow_search_px * fine / _cloud_res(gbox, opts.cloud_resolution))
    return opts.cloud_average_over + opts.cloud_dilation + 1 + shadow


def _pad(gbox: GeoBox, n: int) -> GeoBox:
    h, w = gbox.shape.yx
    return GeoBox((h + 2 * n, w + 2 * n), gbox.transform * Affine.translation(-n, -n), gbox.crs)


def s2cloudless_layer(
    read: Callable[[GeoBox], np.ndarray], gbox: GeoBox, opts: S2Options
) -> CloudLayer:
    """s2cloudless for the tile ``gbox``; ``read(grid)`` returns the ten bands of
    :data:`S2CLOUDLESS_BANDS` on ``grid`` (``(10, y, x)``, NaN = no data)."""
    cgrid = cloud_grid(gbox, opts.cloud_resolution, _margin(opts, gbox))
    coarse = coarse_clouds(read(cgrid), cgrid, opts)
    prob = np.full((1, *gbox.shape.yx), np.nan, np.float32)
    point_resample(coarse.probability[None], cgrid, prob, gbox, Resampling.bilinear)
    # The shadow search looks around clouds outside the tile too: the mask is brought onto the
    # tile widened by the search distance, dilated there, then cropped.
    n = opts.shadow_search_px
    wide = _pad(gbox, n)
    mask = np.zeros((1, *wide.shape.yx), np.float32)
    point_resample(coarse.mask[None].astype(np.float32), cgrid, mask, wide, Resampling.nearest)
    cloud_wide = mask[0] > 0.5  # NaN (never: the cloud grid covers the widened tile) is False
    # (iterations=0 would make scipy dilate until nothing changes: 0 means no shadow search.)
    near = (
        ndimage.binary_dilation(cloud_wide, iterations=n) if n and cloud_wide.any() else cloud_wide
    )
    h, w = gbox.shape.yx
    crop = (slice(n, n + h), slice(n, n + w))
    return CloudLayer(prob[0], cloud_wide[crop].copy(), near[crop].copy())
