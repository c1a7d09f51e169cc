"""``average`` and ``mode`` between grids of different CRSs, with an exact transformation.

GDAL's warper (as rasterio calls it) transforms target pixels through an approximating
transformer (0.125 px, and rasterio's ``reproject`` ignores a ``tolerance``): the source
footprint it averages over depends on the window warped, so a stack computed in tiles differs
from one computed whole. Here every target pixel corner is transformed exactly (PROJ, per
point) and the result of a pixel depends on its own corners only:

* **footprint**: the target pixel's corners in source pixel coordinates (quantised to 2**-16 px,
  so the last-bit noise of a tile's origin cannot change a weight); the footprint is the
  axis-aligned box spanned by its top-left and bottom-right corners, as in GDAL's warp kernel
  (``GWKAverageOrMode``), so the results are GDAL's with the approximation removed;
* **weights**: the area of each source pixel inside the box (fractional at the edges; where the
  box overhangs the source, GDAL's kernel gives the overhang to the edge pixel, and so does
  this);
* ``average``: the weighted mean of the valid (finite) source pixels; NaN when none is valid
  (GDAL's rule: no data is skipped, not counted as zero);
* ``mode``: GDAL's rule, the most frequent class among the valid source pixels the box touches
  (each counted once), a tie going to the class that reached that count first in row-major
  order.

Cost: one PROJ transform of ``(h + 1) * (w + 1)`` points and ``ceil(scale + 1) ** 2`` gather
passes per band (9 at scale 1.09).
"""

from __future__ import annotations

import numpy as np
import pyproj
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling

from eo_fusion.grid import grid_crs

__all__ = ["edges_coincide", "footprint_resample"]

#: Corner positions are rounded to this fraction of a source pixel (as point_resample does).
_QUANTUM = 2.0**-16


def edges_coincide(src_gbox: GeoBox, dst_gbox: GeoBox, tol_px: float = 1e-7) -> bool:
    """True for north-up grids of one CRS where, along x or y, the target pixel size is a whole
    number of source pixels and the target edges lie within ``tol_px`` of source edges (an
    aligned downsampling). GDAL's kernel then decides with a 1e-10 px epsilon, window by
    window, whether the source row or column beyond an edge is touched (mode) or weighed;
    :func:`footprint_resample` does not. Depends on the two lattices only, never on the window,
    so every tile of a grid takes the same path."""
    st, dt = src_gbox.transform, dst_gbox.transform
    if st.b or st.d or dt.b or dt.d or grid_crs(src_gbox) != grid_crs(dst_gbox):
        return False
    for ratio, offset in ((dt.a / st.a, (dt.c - st.c) / st.a), (dt.e / st.e, (dt.f - st.f) / st.e)):
        if abs(ratio - round(ratio)) < 1e-9 and abs(offset - round(offset)) < tol_px:
            return True
    return False


def _corners(src_gbox: GeoBox, dst_gbox: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel coordinates (0 = left/top edge of the first source pixel) of every target
    pixel corner, ``(h + 1, w + 1)`` each, through the exact PROJ transformation."""
    h, w = dst_gbox.shape.yx
    cols, rows = np.meshgrid(np.arange(w + 1, dtype=np.float64), np.arange(h + 1.0))
    x, y = dst_gbox.transform * (cols, rows)
    src_crs, dst_crs = grid_crs(src_gbox), grid_crs(dst_gbox)
    if src_crs != dst_crs:
        tr = pyproj.Transformer.from_crs(dst_crs.proj, src_crs.proj, always_xy=True)
        x, y = tr.transform(x, y, errcheck=False)
    u, v = ~src_gbox.transform * (np.asarray(x), np.asarray(y))
    u = np.round(np.asarray(u) / _QUANTUM) * _QUANTUM
    v = np.round(np.asarray(v) / _QUANTUM) * _QUANTUM
    return u, v


def _boxes(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...]:
    """Footprint boxes (u0, u1, v0, v1), ``(h, w)`` each, from the corner grids: the box spanned
    by each pixel's top-left and bottom-right corners (GDAL's average/mode footprint)."""
    tl_u, br_u = u[:-1, :-1], u[1:, 1:]
    tl_v, br_v = v[:-1, :-1], v[1:, 1:]
    return np.fmin(tl_u, br_u), np.fmax(tl_u, br_u), np.fmin(tl_v, br_v), np.fmax(tl_v, br_v)


def _axis_taps(lo: np.ndarray, hi: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(index, weight) of every source pixel a box may touch along one axis: the length of the
    box inside the pixel, where (as in GDAL's kernel) the first and last source pixels reach
    out to the box's end when it overhangs the source; boxes that miss ``[0, n]`` (or are
    not finite) get weight 0."""
    ok = np.isfinite(lo) & np.isfinite(hi)
    lo, hi = np.where(ok, lo, 0.0), np.where(ok, hi, 0.0)
    ok &= (hi > 0) & (lo < n)
    base = np.floor(np.clip(lo, 0, n - 1))
    k = int(np.ceil((np.clip(hi, 0, n) - base).max())) if lo.size else 1
    taps = []
    for j in range(max(k, 1)):
        i = base + j
        left = np.where(i == 0, -np.inf, i)
        right = np.where(i == n - 1, np.inf, i + 1)
        weight = (np.minimum(hi, right) - np.maximum(lo, left)).astype(np.float32)
        np.maximum(weight, 0, out=weight)
        weight[~ok | (i >= n)] = 0
        taps.append((np.clip(i, 0, n - 1).astype(np.intp), weight))
    return taps


def footprint_resample(
    src: np.ndarray, src_gbox: GeoBox, dst: np.ndarray, dst_gbox: GeoBox, rule: Resampling
) -> None:
    """``average`` or ``mode`` of ``src`` (``(band, y, x)`` on ``src_gbox``) onto ``dst``
    (``(band, y, x)`` on ``dst_gbox``) over exactly transformed footprints (module doc)."""
    if rule not in (Resampling.average, Resampling.mode):
        raise ValueError(f"footprint_resample does average or mode, not {rule.name}")
    h, w = src.shape[-2:]
    u0, u1, v0, v1 = _boxes(*_corners(src_gbox, dst_gbox))
    taps = [
        (iv * w + iu, wv * wu)  # flat source index, weight
        for iv, wv in _axis_taps(v0, v1, h)
        for iu, wu in _axis_taps(u0, u1, w)
    ]
    reduce = _weighted_mean if rule is Resampling.average else _weighted_mode
    for b in range(src.shape[0]):
        flat = np.ascontiguousarray(src[b], dtype=np.float32).ravel()
        has_nan = bool(np.isnan(flat).any())
        vals, weights = [], []
        for idx, wt in taps:
            x = flat.take(idx)
            if has_nan:  # no data weighs nothing (and 0 * NaN must not poison the sum)
                bad = np.isnan(x)
                x[bad] = 0
                wt = np.where(bad, np.float32(0), wt)
            vals.append(x)
            weights.append(wt)
        dst[b] = reduce(vals, weights)


def _weighted_mean(vals: list[np.ndarray], weights: list[np.ndarray]) -> np.ndarray:
    num = np.zeros(vals[0].shape, np.float32)
    den = np.zeros(vals[0].shape, np.float32)
    for x, wt in zip(vals, weights, strict=True):
        num += x * wt
        den += wt
    out = np.full(num.shape, np.nan, np.float32)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _weighted_mode(vals: list[np.ndarray], weights: list[np.ndarray]) -> np.ndarray:
    """GDAL's mode: the most frequent class among the valid source pixels the footprint
    touches (each counted once, whatever its overlap); of tied classes, the one that reached
    that count first in row-major order (GDAL keeps the first to exceed the running maximum)."""
    touched = [wt > 0 for wt in weights]
    best = np.full(vals[0].shape, np.nan, np.float32)
    best_count = np.zeros(vals[0].shape, np.int32)
    best_last = np.zeros(vals[0].shape, np.int32)
    for x, tj in zip(vals, touched, strict=True):
        count = np.zeros(x.shape, np.int32)
        last = np.zeros(x.shape, np.int32)
        for k, (y, tk) in enumerate(zip(vals, touched, strict=True)):
            same = tk & (y == x)
            count += same
            last[same] = k
        count[~tj] = 0
        better = (count > best_count) | ((count == best_count) & (count > 0) & (last < best_last))
        best = np.where(better, x, best)
        best_count = np.where(better, count, best_count)
        best_last = np.where(better, last, best_last)
    return best
