"""Resampling onto a target grid: the rules by kind of band and the array-level warp.

Every :class:`~eo_fusion.sources.reader.Reader` uses this module, so the rules hold whichever
backend fetched the pixels. It works on in-memory arrays only (no file I/O); see docs/stacks.md
for the table and the reasons.

``ratio`` below is target pixel size / source pixel size: > 1 means the target is coarser
(downsampling), < 1 finer (upsampling).

=============================  ======================  ==============================
kind                           ratio < 2 (up / ≈same)  ratio ≥ 2 (downsampling)
=============================  ======================  ==============================
reflectance, aerial, index     bilinear (ratio ≤ 1)    average (any ratio > 1)
sar (in linear power)          bilinear (ratio ≤ 1)    average (any ratio > 1)
elevation                      bilinear                average
categorical, osm               nearest                 mode
=============================  ======================  ==============================

SAR values stored in dB are converted to linear power before any resampling and back afterwards
(:func:`db_to_linear`, :func:`linear_to_db`): a mean of dB values is the log of a geometric mean,
which underestimates backscatter and is not what "average" should mean for power.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import rasterio.crs
import rasterio.warp
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.overlap import ReprojectInfo, compute_reproject_roi
from rasterio.enums import Resampling

from eo_fusion.grid import grid_crs
from eo_fusion.sources.footprint import edges_coincide, footprint_resample
from eo_fusion.sources.memo import Memo
from eo_fusion.sources.positions import POSITION_QUANTUM, grid_key, plan_for

__all__ = [
    "PASTE_STOL",
    "PASTE_TTOL_PX",
    "RULES",
    "WARP_TOLERANCE_PX",
    "axis_aligned_resample",
    "db_to_linear",
    "is_categorical",
    "linear_to_db",
    "place",
    "point_resample",
    "resampling_for",
    "roi_is_empty",
    "source_roi",
    "warp",
]

#: Warp with the exact coordinate transformer (GDAL's default approximates to 0.125 px, which
#: would eat most of the 0.1 px alignment budget; the exact one costs little at tile sizes).
WARP_TOLERANCE_PX = 0.0

#: Sub-pixel translation (target pixels) and scale mismatch up to which a source window is pasted
#: instead of resampled. odc-geo's defaults (0.05 px, 1e-3) paste a grid that is 0.04 px off, or
#: whose pixels differ by 0.1 % (1 px drift over a 1000 px tile), as if it were aligned: a shift
#: that depends on where the tile starts. These bounds keep any paste error below 1e-6 px.
PASTE_TTOL_PX = 1e-6
PASTE_STOL = 1e-10

#: Ratio from which a coarser target counts as "downsampling" for elevation and categories.
DOWNSAMPLE_RATIO = 2.0
_EPS = 1e-6

#: kind -> (upsampling rule, downsampling rule, ratio above which the downsampling rule applies)
RULES: dict[str, tuple[Resampling, Resampling, float]] = {
    "reflectance": (Resampling.bilinear, Resampling.average, 1.0 + _EPS),
    "aerial": (Resampling.bilinear, Resampling.average, 1.0 + _EPS),
    "index": (Resampling.bilinear, Resampling.average, 1.0 + _EPS),
    "sar": (Resampling.bilinear, Resampling.average, 1.0 + _EPS),
    "elevation": (Resampling.bilinear, Resampling.average, DOWNSAMPLE_RATIO - _EPS),
    "categorical": (Resampling.nearest, Resampling.mode, DOWNSAMPLE_RATIO - _EPS),
    "osm": (Resampling.nearest, Resampling.mode, DOWNSAMPLE_RATIO - _EPS),
}
# The thresholds carry a float tolerance: a ratio computed from two grid transforms is off by
# rounding (10 m onto 20 m can come out as 1.9999999999999996), and an exact 2 is "≥ 2" (mode /
# average) as the table says, just as an exact 1 is "≤ 1" (bilinear).


def resampling_for(kind: str, ratio: float) -> Resampling:
    """The resampling rule for a band ``kind`` at size ratio ``ratio`` (target/source pixel)."""
    up, down, threshold = RULES.get(kind, RULES["reflectance"])
    return down if ratio >= threshold else up


def is_categorical(kind: str) -> bool:
    """True for kinds whose values are class codes (never interpolated)."""
    return kind in ("categorical", "osm")


def db_to_linear(db: np.ndarray) -> np.ndarray:
    """dB → linear power (``10 ** (dB / 10)``); NaN stays NaN."""
    return np.power(np.float32(10.0), np.asarray(db, dtype=np.float32) / np.float32(10.0))


def linear_to_db(lin: np.ndarray) -> np.ndarray:
    """Linear power → dB (``10 log10``); zero or negative power becomes NaN (no valid dB)."""
    lin = np.asarray(lin, dtype=np.float32)
    out = np.full(lin.shape, np.nan, dtype=np.float32)
    np.log10(lin, out=out, where=lin > 0)
    out *= np.float32(10.0)
    return out


# --- where to read ------------------------------------------------------------------------------


def source_roi(src_gbox: GeoBox, gbox: GeoBox) -> ReprojectInfo:
    """Source window for ``gbox``, padded so resampling kernels at the tile edge see real data.

    GDAL widens bilinear/cubic kernels by the downsampling factor; without enough padding the
    edge pixels of a tile would be computed from fewer source pixels than interior ones (a seam).
    ``.scale`` of the result is the target/source pixel size ratio that picks the rule.

    Only a plain paste (same pixel size, edges aligned within 0.05 px) is read unpadded. An
    aligned grid at an integer downsampling factor (``paste_ok`` with ``read_shrink > 1``) is
    still warped with ``average``/``mode``, and its edge pixels overlap source pixels just
    outside the exact window (the up-to-0.05 px misalignment): unpadded, the edge values of a
    tile would depend on where the tile starts, and a lazy stack would differ from an eager one.

    Cached: the bands and dates of a tile share a few source grids, and odc-geo's computation
    (point transforms through PROJ) cost more than the pixel warp on 256 px tiles (profiled:
    40 % of a map-job tile's CPU time before the cache).
    """
    key = (grid_key(src_gbox), grid_key(gbox))
    return _ROIS.get(key, lambda: _source_roi(src_gbox, gbox))


_ROIS: Memo[ReprojectInfo] = Memo(512)


def _source_roi(src_gbox: GeoBox, gbox: GeoBox) -> ReprojectInfo:
    rr = compute_reproject_roi(src_gbox, gbox, ttol=PASTE_TTOL_PX, stol=PASTE_STOL)
    if rr.paste_ok and rr.read_shrink == 1:
        return rr
    pad = 2 + int(np.ceil(max(rr.scale2.x, rr.scale2.y, 1.0)))
    return compute_reproject_roi(src_gbox, gbox, ttol=PASTE_TTOL_PX, stol=PASTE_STOL, padding=pad)


def roi_is_empty(rr: ReprojectInfo) -> bool:
    """True when the target grid does not overlap the source at all."""
    sy, sx = rr.roi_src
    return sy.stop <= sy.start or sx.stop <= sx.start


# --- how to put source pixels onto the target ---------------------------------------------------


def place(
    src: np.ndarray,
    src_gbox: GeoBox,
    dst: np.ndarray,
    dst_gbox: GeoBox,
    rr: ReprojectInfo,
    rule: Resampling,
    num_threads: int = 1,
) -> None:
    """Put ``src`` (``(band, y, x)`` on ``src_gbox``, the window ``rr.roi_src`` was read from)
    onto ``dst`` (``(band, y, x)`` on ``dst_gbox``, pre-filled with NaN).

    Same-grid windows are pasted; north-up grids in one CRS take the numpy fast path; bilinear
    and nearest otherwise go through :func:`point_resample`, average and mode across CRSs (or
    from a grid aligned at an integer factor) through
    :func:`eo_fusion.sources.footprint.footprint_resample` (both transform exactly);
    anything else goes through GDAL's warper (in memory).
    """
    if rr.paste_ok and rr.read_shrink == 1 and src_gbox.shape == dst_gbox[rr.roi_dst].shape:
        ys, xs = rr.roi_dst
        dst[:, slice(ys.start, ys.stop), slice(xs.start, xs.stop)] = src
    elif axis_aligned_resample(src, src_gbox, dst, dst_gbox, rule):
        pass
    elif rule in (Resampling.bilinear, Resampling.nearest):
        point_resample(src, src_gbox, dst, dst_gbox, rule)
    elif rule in _FOOTPRINT and (
        grid_crs(src_gbox) != grid_crs(dst_gbox) or edges_coincide(src_gbox, dst_gbox)
    ):
        # Exact per-pixel footprints across CRSs (GDAL approximates the transformation) and at
        # an aligned integer factor (GDAL's 1e-10 px edge epsilon decides window by window).
        footprint_resample(src, src_gbox, dst, dst_gbox, rule)
    else:
        warp(src, src_gbox, dst, dst_gbox, rule, num_threads)


_FOOTPRINT = (Resampling.average, Resampling.mode)


def point_resample(
    src: np.ndarray, src_gbox: GeoBox, dst: np.ndarray, dst_gbox: GeoBox, rule: Resampling
) -> None:
    """Bilinear or nearest resampling between any two grids, with every target pixel centre
    placed within 1e-3 source px of PROJ's exact transformation, the same in every tiling
    (GDAL's warper, as rasterio calls it, approximates the transformation to 0.125 px and its
    result changes with the window warped).

    Semantics follow GDAL's (and :func:`axis_aligned_resample`): a target that a NaN source
    pixel contributes to is NaN; targets outside the source stay NaN; within half a pixel of
    the outer source centres the edge pixel is used alone.

    The taps and weights come from :func:`eo_fusion.sources.positions.plan_for`: computed once
    per (source grid, target grid) inside :func:`~eo_fusion.sources.positions.reuse_plans`,
    from positions within 1e-3 source px of the exact transformation (see that module).
    """
    plan_for(src_gbox, dst_gbox, rule).apply(src, dst)


def _axis_positions(n_dst: int, d0: float, dres: float, s0: float, sres: float) -> np.ndarray:
    """Source pixel-centre coordinates (0 = centre of the first source pixel) of the target
    pixel centres along one axis."""
    centres = d0 + (np.arange(n_dst) + 0.5) * dres
    return (centres - s0) / sres - 0.5


def _fast_path_applies(src_gbox: GeoBox, dst_gbox: GeoBox, rule: Resampling) -> bool:
    if rule not in (Resampling.bilinear, Resampling.nearest) or src_gbox.crs != dst_gbox.crs:
        return False
    st, dt = src_gbox.transform, dst_gbox.transform
    if st.b or st.d or dt.b or dt.d or st.a <= 0 or st.e >= 0 or dt.a <= 0 or dt.e >= 0:
        return False
    # Downsampling with bilinear is left to GDAL.
    return not (rule is Resampling.bilinear and (dt.a > st.a * 1.0001 or -dt.e > -st.e * 1.0001))


def axis_aligned_resample(
    src: np.ndarray, src_gbox: GeoBox, dst: np.ndarray, dst_gbox: GeoBox, rule: Resampling
) -> bool:
    """Fast path for the common case (same CRS, north-up grids): separable bilinear or nearest
    interpolation in numpy, ~5x faster than the general GDAL warper for these grids. Returns
    False (nothing done) when the case does not apply; the GDAL warp then runs.

    Semantics follow GDAL's: target pixel centres are located in source pixel space; a target
    that a NaN source pixel contributes to is NaN; targets outside the source stay NaN.
    """
    if not _fast_path_applies(src_gbox, dst_gbox, rule):
        return False
    st, dt = src_gbox.transform, dst_gbox.transform
    h, w = src.shape[-2:]
    u = _axis_positions(dst.shape[-1], dt.c, dt.a, st.c, st.a)
    v = _axis_positions(dst.shape[-2], dt.f, dt.e, st.f, st.e)
    if rule is Resampling.nearest:
        # Quantised like point_resample: a centre on a source pixel edge (grids half a pixel
        # apart) must pick the same neighbour in every tiling, whatever the origin's last bit.
        uq = np.round(u / POSITION_QUANTUM) * POSITION_QUANTUM
        vq = np.round(v / POSITION_QUANTUM) * POSITION_QUANTUM
        iu = np.clip(np.floor(uq + 0.5).astype(np.int64), 0, w - 1)
        iv = np.clip(np.floor(vq + 0.5).astype(np.int64), 0, h - 1)
        for i in range(src.shape[0]):
            dst[i] = src[i][iv[:, None], iu[None, :]]
    else:
        u0, fu = _taps(u, w)
        v0, fv = _taps(v, h)
        u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
        rows = np.union1d(v0, v1)  # the source rows any target needs
        r0, r1 = np.searchsorted(rows, v0), np.searchsorted(rows, v1)
        for i in range(src.shape[0]):
            # Separable: along x on the needed source rows, then along y.
            tmp = _lerp(src[i][rows], u0, u1, fu, axis=1)
            dst[i] = _lerp(tmp, r0, r1, fv, axis=0)
    dst[..., ~((v > -0.5) & (v < h - 0.5)), :] = np.nan
    dst[..., :, ~((u > -0.5) & (u < w - 0.5))] = np.nan
    return True


def _taps(pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Left tap index and weight of the right tap; targets within half a pixel of the outer
    source centres use the edge pixel alone (weight 0), as GDAL does."""
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n - 1)
    frac = (pos - np.floor(pos)).astype(np.float32)
    frac[(pos < 0) | (pos > n - 1)] = 0
    return i0, frac


def _lerp(a: np.ndarray, i0: np.ndarray, i1: np.ndarray, f: np.ndarray, axis: int) -> np.ndarray:
    """(1 - f) * a[i0] + f * a[i1] along ``axis``; a NaN tap poisons only where its weight > 0."""
    shape = (-1, 1) if axis == 0 else (1, -1)
    f2 = f.reshape(shape)
    left = np.take(a, i0, axis=axis)
    left *= 1 - f2
    right = np.take(a, i1, axis=axis)
    right *= f2
    right[np.broadcast_to(f2 == 0, right.shape)] = 0  # avoid 0 * NaN where the tap is unused
    left += right
    return left


@lru_cache(maxsize=64)
def _rio_crs(crs: CRS) -> rasterio.crs.CRS:
    """rasterio's CRS of ``crs``, built once per CRS (from WKT, so no axis-order or datum
    detail is lost): converting per warp cost ~10 % of a 256 px tile's read time."""
    return rasterio.crs.CRS.from_wkt(crs.to_wkt())


def warp(
    src: np.ndarray,
    src_gbox: GeoBox,
    dst: np.ndarray,
    dst_gbox: GeoBox,
    rule: Resampling,
    num_threads: int = 1,
) -> None:
    """GDAL's warper on in-memory arrays (NaN = no data on both sides)."""
    extra = {}
    if rule in (Resampling.bilinear, Resampling.cubic, Resampling.lanczos):
        # Interpolating kernels keep a 1-pixel radius: GDAL otherwise widens them by the scale
        # change (ignoring rotation), which blurs and moves linear features by up to 0.1 px
        # (GDAL issue 7750; odc-geo does the same). Downsampling uses `average`, not these.
        extra = {"XSCALE": 1, "YSCALE": 1}
    rasterio.warp.reproject(
        src,
        dst,
        src_transform=src_gbox.transform,
        src_crs=_rio_crs(grid_crs(src_gbox)),
        dst_transform=dst_gbox.transform,
        dst_crs=_rio_crs(grid_crs(dst_gbox)),
        src_nodata=np.nan,
        dst_nodata=np.nan,
        resampling=rule,
        num_threads=max(1, num_threads),
        tolerance=WARP_TOLERANCE_PX,
        init_dest_nodata=True,
        **extra,
    )
