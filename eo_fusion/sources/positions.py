"""Where each target pixel centre lies in a source grid, computed once and reused.

Bilinear and nearest resampling across CRSs (:func:`eo_fusion.sources.resample.point_resample`)
need, for every target pixel centre, its position in source pixels. The bands and dates of a
tile share a few source grids (every 20 m band of a Sentinel-2 scene lies on one grid, every
date of a tile on the same one), so that work is done once per *(source grid, target grid)*
and kept in a :class:`ResamplePlan`: tap indices and weights that each band then only gathers.
``build_stack`` keeps plans for the duration of one build (:func:`reuse_plans`); outside such a
scope nothing is kept.

Positions come through PROJ. On north-up target grids PROJ runs on a lattice of nodes every
:data:`LATTICE_PX` target pixels and the positions in between are interpolated bilinearly;
where the interpolation could be off by more than :data:`MAX_LATTICE_ERROR_PX` source pixels
the pixels are transformed exactly instead (:func:`lattice_error_bound` states the bound).
Lattice nodes sit at whole multiples of ``LATTICE_PX`` pixels in CRS coordinates, not relative
to a tile, so every tiling of a grid interpolates each pixel from the same nodes: a pixel gets
the same position whichever tile it is computed in.

Positions are rounded to :data:`POSITION_QUANTUM` pixels before use, so that the last-bit noise
of a tile's own origin (1e-11 px) cannot change a weight: bit-for-bit the same in every tiling.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyproj
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling

from eo_fusion.errors import ReadError
from eo_fusion.grid import grid_crs
from eo_fusion.sources.memo import Memo

__all__ = [
    "LATTICE_PX",
    "MAX_LATTICE_ERROR_PX",
    "POSITION_QUANTUM",
    "ResamplePlan",
    "exact_positions",
    "lattice_error_bound",
    "plan_for",
    "reuse_plans",
    "source_positions",
]

#: Source positions are rounded to this many source pixels (2**-16 = 1.5e-5 px).
POSITION_QUANTUM = 2.0**-16

#: Spacing of the PROJ lattice, in target pixels.
LATTICE_PX = 16

#: Largest interpolation error (source pixels) accepted for a lattice cell; cells whose bound
#: is larger are transformed pixel by pixel.
MAX_LATTICE_ERROR_PX = 1e-3

#: The bound of a cell is this factor times the measured second-difference terms (see
#: :func:`lattice_error_bound`).
SAFETY = 2.0


def grid_key(gbox: GeoBox) -> tuple:
    """A cheap hashable key of a grid: hashing a GeoBox hashes its CRS through its WKT
    (profiled: 0.1 ms, 2000 times per 16-tile stack)."""
    return (tuple(gbox.shape.yx), tuple(gbox.transform)[:6], str(gbox.crs))


# --- PROJ ---------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _transformer(dst_crs: CRS, src_crs: CRS) -> pyproj.Transformer:
    """dst CRS → src CRS, built once per pair (pyproj transformers are thread-safe: each thread
    gets its own PROJ context)."""
    return pyproj.Transformer.from_crs(dst_crs.proj, src_crs.proj, always_xy=True)


def _to_src(x: np.ndarray, y: np.ndarray, dst_crs: CRS, src_crs: CRS):
    if dst_crs == src_crs:
        return x, y
    out = _transformer(dst_crs, src_crs).transform(x, y, errcheck=False)
    return np.asarray(out[0], dtype=np.float64), np.asarray(out[1], dtype=np.float64)


def _quantise(u: np.ndarray) -> np.ndarray:
    """Pixel-centre based (0 = centre of the first source pixel) and rounded to the quantum."""
    u -= 0.5
    u /= POSITION_QUANTUM
    np.round(u, out=u)
    u *= POSITION_QUANTUM
    return u


def exact_positions(src_gbox: GeoBox, dst_gbox: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel-centre coordinates (0 = centre of the first source pixel) of every target
    pixel centre, each transformed exactly by PROJ (no interpolation), rounded to the quantum."""
    h, w = dst_gbox.shape.yx
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x, y = dst_gbox.transform * (cols, rows)
    x, y = _to_src(np.asarray(x), np.asarray(y), grid_crs(dst_gbox), grid_crs(src_gbox))
    u, v = ~src_gbox.transform * (x, y)
    return _quantise(np.asarray(u, dtype=np.float64)), _quantise(np.asarray(v, dtype=np.float64))


# --- the lattice --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Axis:
    """One axis of a lattice: nodes ``k0 .. k0 + n - 1`` at ``k * step`` CRS units; pixel ``i``
    of the target lies in cell ``cell[i]`` (0-based from ``k0``) at fraction ``t[i]``."""

    nodes: np.ndarray  # CRS coordinates of the nodes
    cell: np.ndarray  # int64, per target pixel
    t: np.ndarray  # float64, per target pixel, in [0, 1]


def _axis(first_centre: float, res: float, n_px: int) -> _Axis:
    step = LATTICE_PX * res  # a whole multiple of the pixel size, anchored at 0
    centres = first_centre + np.arange(n_px) * res
    g = centres / step
    k = np.floor(g)
    k0 = int(k.min())
    nodes = np.arange(k0, int(k.max()) + 2, dtype=np.float64) * step
    return _Axis(nodes, (k - k0).astype(np.int64), g - k)


@dataclass(frozen=True)
class Lattice:
    """PROJ on the lattice nodes of one target grid into one source CRS.

    ``fx``/``fy``: node positions in source CRS units, ``(len(ay.nodes), len(ax.nodes))``;
    ``bound``: per cell, the bound on the interpolation error in source CRS units (``inf``
    where the lattice must not be used).
    """

    ax: _Axis
    ay: _Axis
    fx: np.ndarray
    fy: np.ndarray
    bound: np.ndarray


def lattice_error_bound(
    nodes: tuple[np.ndarray, np.ndarray],
    xmid: tuple[np.ndarray, np.ndarray],
    ymid: tuple[np.ndarray, np.ndarray],
    centre: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Per cell, a bound on how far bilinear interpolation between the cell's corner nodes is
    from the exact transformation anywhere in the cell (source CRS units; ``inf``: not usable).

    For a map ``F`` with continuous second derivatives, bilinear interpolation on a cell of
    ``h x h`` is off by at most ``h**2 / 8 * (max|F_xx| + max|F_yy|)``. The deviation of the
    exact value at an edge midpoint from the mean of the edge's two nodes is exactly
    ``h**2 / 8 * |F_xx|`` (``F_yy`` on vertical edges) at some point of that edge; the bound
    takes the larger of the two opposite edges per direction, sums the directions and
    multiplies by :data:`SAFETY` (2) for the change of the second derivatives inside the cell.
    For map projections at pixel scales that change is of relative order ``h / R`` (cell size
    over Earth radius, ~1e-4), so the factor is generous; the exact value at the cell centre
    is checked against the bound, and cells where it is exceeded, or where any point is not
    finite (outside a projection's domain), get ``inf``.

    Arguments are ``(x, y)`` pairs of exact source coordinates: ``nodes`` ``(ny, nx)``,
    ``xmid`` (horizontal-edge midpoints) ``(ny, nx - 1)``, ``ymid`` ``(ny - 1, nx)``, ``centre``
    ``(ny - 1, nx - 1)``.
    """

    def dev(p, a, b):
        return np.hypot(p[0] - (a[0] + b[0]) / 2, p[1] - (a[1] + b[1]) / 2)

    nx, ny = nodes
    left = (nx[:, :-1], ny[:, :-1])
    right = (nx[:, 1:], ny[:, 1:])
    hx = dev(xmid, left, right)  # (ny, nx - 1)
    top = (nx[:-1], ny[:-1])
    bottom = (nx[1:], ny[1:])
    vy = dev(ymid, top, bottom)  # (ny - 1, nx)
    bound = SAFETY * (np.maximum(hx[:-1], hx[1:]) + np.maximum(vy[:, :-1], vy[:, 1:]))
    mean = ((nx[:-1, :-1] + nx[:-1, 1:] + nx[1:, :-1] + nx[1:, 1:]) / 4,
            (ny[:-1, :-1] + ny[:-1, 1:] + ny[1:, :-1] + ny[1:, 1:]) / 4)  # fmt: skip
    at_centre = np.hypot(centre[0] - mean[0], centre[1] - mean[1])
    bad = ~np.isfinite(bound) | ~np.isfinite(at_centre) | (at_centre > bound)
    return np.where(bad, np.inf, bound)


_LATTICES: Memo[Lattice | None] = Memo(64)


def lattice(dst_gbox: GeoBox, src_crs: CRS) -> Lattice | None:
    """The PROJ lattice of north-up ``dst_gbox`` into ``src_crs`` (None: not north-up).

    Small (one node per ``LATTICE_PX**2`` pixels), so the last few are kept per process."""
    key = (grid_key(dst_gbox), str(src_crs))
    return _LATTICES.get(key, lambda: _make_lattice(dst_gbox, src_crs))


def _make_lattice(dst_gbox: GeoBox, src_crs: CRS) -> Lattice | None:
    t = dst_gbox.transform
    if t.b or t.d or not t.a or not t.e:
        return None
    h, w = dst_gbox.shape.yx
    ax = _axis(t.c + 0.5 * t.a, t.a, w)
    ay = _axis(t.f + 0.5 * t.e, t.e, h)
    mx, my = (ax.nodes[:-1] + ax.nodes[1:]) / 2, (ay.nodes[:-1] + ay.nodes[1:]) / 2
    grids = [np.meshgrid(xs, ys) for xs, ys in ((ax.nodes, ay.nodes), (mx, ay.nodes),
                                                 (ax.nodes, my), (mx, my))]  # fmt: skip
    flat_x = np.concatenate([g[0].ravel() for g in grids])
    flat_y = np.concatenate([g[1].ravel() for g in grids])
    sx, sy = _to_src(flat_x, flat_y, grid_crs(dst_gbox), src_crs)
    parts, start = [], 0
    for g in grids:
        n = g[0].size
        parts.append((sx[start : start + n].reshape(g[0].shape),
                      sy[start : start + n].reshape(g[0].shape)))  # fmt: skip
        start += n
    bound = lattice_error_bound(*parts)
    return Lattice(ax, ay, parts[0][0], parts[0][1], bound)


def _interpolate(lat: Lattice, node_values: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of per-node values to every target pixel (separable: along x on
    the node rows, then along y)."""
    ax, ay = lat.ax, lat.ay
    rows = node_values[:, ax.cell] * (1 - ax.t)
    rows += node_values[:, ax.cell + 1] * ax.t  # (node rows, w)
    out = rows[ay.cell] * (1 - ay.t)[:, None]
    out += rows[ay.cell + 1] * ay.t[:, None]
    return out


def _inverse_norm(t: Affine) -> float:
    """Largest factor by which the source transform's inverse stretches a CRS distance."""
    inv = ~t
    return float(np.linalg.norm(np.array([[inv.a, inv.b], [inv.d, inv.e]]), 2))


def source_positions(src_gbox: GeoBox, dst_gbox: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel-centre coordinates of every target pixel centre, within
    :data:`MAX_LATTICE_ERROR_PX` of the exact transformation (exact where the lattice's bound
    is larger, or on rotated target grids), rounded to :data:`POSITION_QUANTUM`."""
    src_crs, dst_crs = grid_crs(src_gbox), grid_crs(dst_gbox)
    lat = lattice(dst_gbox, src_crs) if src_crs != dst_crs else None
    if lat is None:
        return exact_positions(src_gbox, dst_gbox)
    inv = ~src_gbox.transform
    nu = inv.a * lat.fx + inv.b * lat.fy + inv.c  # node positions in source pixels
    nv = inv.d * lat.fx + inv.e * lat.fy + inv.f
    u, v = _interpolate(lat, nu), _interpolate(lat, nv)
    bad_cells = lat.bound * _inverse_norm(src_gbox.transform) > MAX_LATTICE_ERROR_PX
    if bad_cells.any():
        bad = bad_cells[lat.ay.cell[:, None], lat.ax.cell[None, :]]
        rows, cols = np.nonzero(bad)
        t = dst_gbox.transform
        x = (cols + 0.5) * t.a + (rows + 0.5) * t.b + t.c
        y = (cols + 0.5) * t.d + (rows + 0.5) * t.e + t.f
        x, y = _to_src(x, y, dst_crs, src_crs)
        u[bad] = inv.a * x + inv.b * y + inv.c
        v[bad] = inv.d * x + inv.e * y + inv.f
    return _quantise(u), _quantise(v)


# --- plans: taps and weights, reused by every band on one source grid ---------------------------


@dataclass(frozen=True)
class ResamplePlan:
    """How to resample any band of one source grid onto one target grid (bilinear or nearest).

    Bilinear: ``i00`` indexes the top-left tap in the source padded by one column and row
    (``width + 1`` wide), so the other taps are at fixed offsets and one index array serves
    all four; ``weights`` are the right and bottom weights ``fu, fv``. Targets where a
    weight is 0 on an axis (on a source pixel column, or within half a pixel of the outer
    source centres) are recomputed from their own taps (``fix``), as a NaN tap with weight 0
    must not poison them. Nearest: ``i00`` indexes the picked source pixel (unpadded).
    ``outside``: flat indices of targets outside the source (set to NaN).
    """

    rule: Resampling
    src_shape: tuple[int, int]
    i00: np.ndarray
    weights: tuple[np.ndarray, ...]
    fix: tuple[np.ndarray, ...]
    outside: np.ndarray

    @property
    def nbytes(self) -> int:
        """Memory held by the plan's arrays."""
        arrays = [self.i00, self.outside, *self.weights, *self.fix]
        return int(sum(a.nbytes for a in arrays))

    def apply(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Resample ``src`` ``(band, h, w)`` float32 into ``dst`` ``(band, H, W)`` float32."""
        # Kept compact (int32 index, right/bottom weights only: 12 bytes per target pixel);
        # the intp index and left/top weights are made once per call, for all its bands.
        index = self.i00.astype(np.intp)
        nearest = self.rule is Resampling.nearest
        weights = () if nearest else (1 - self.weights[0], 1 - self.weights[1])
        for i in range(src.shape[0]):
            band = np.ascontiguousarray(src[i], dtype=np.float32)
            own = dst[i]
            target = own if own.flags.c_contiguous else np.empty(own.shape, np.float32)
            flat = target.reshape(-1)
            if nearest:
                np.take(band.reshape(-1), index, out=flat, mode="clip")
            else:
                self._bilinear(band, flat, index, *weights)
            flat[self.outside] = np.nan
            if target is not own:
                own[...] = target

    def _bilinear(
        self, band: np.ndarray, out: np.ndarray, index: np.ndarray, wu: np.ndarray, wv: np.ndarray
    ) -> None:
        h, w = self.src_shape
        padded = np.zeros((h + 1) * (w + 1) + 1, dtype=np.float32)
        padded[: h * (w + 1)].reshape(h, w + 1)[:, :w] = band
        fu, fv = self.weights
        # (1 - fu) * a + fu * b per row, then (1 - fv) * top + fv * bottom, in float32: with
        # both weights > 0 every tap is a real source pixel (the padding is read only at weight 0,
        # and those targets are recomputed below).
        top = np.take(padded, index, out=out, mode="clip")
        top *= wu
        right = np.take(padded[1:], index, mode="clip")
        right *= fu
        top += right
        bottom = np.take(padded[w + 1 :], index, mode="clip")
        bottom *= wu
        np.take(padded[w + 2 :], index, out=right, mode="clip")
        right *= fu
        bottom += right
        top *= wv
        bottom *= fv
        top += bottom
        if self.fix[0].size:
            idx, v0, u0, v1, u1, ffu, ffv = self.fix
            a, b = band[v0, u0], band[v0, u1]
            c, d = band[v1, u0], band[v1, u1]
            t = np.where(ffu > 0, (1 - ffu) * a + ffu * b, a)
            m = np.where(ffu > 0, (1 - ffu) * c + ffu * d, c)
            out[idx] = np.where(ffv > 0, (1 - ffv) * t + ffv * m, t)


def _taps(pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Left tap and right-tap weight; within half a pixel of the outer source centres the edge
    pixel is used alone (weight 0), as GDAL does."""
    fl = np.floor(pos)
    i0 = np.clip(fl.astype(np.int64), 0, n - 1)
    frac = (pos - fl).astype(np.float32)
    frac[(pos < 0) | (pos > n - 1)] = 0
    return i0, frac


def _make_plan(src_gbox: GeoBox, dst_gbox: GeoBox, rule: Resampling) -> ResamplePlan:
    h, w = src_gbox.shape.yx
    if (h + 1) * (w + 1) >= 2**31:
        raise ReadError(
            f"source window {h} x {w} px is too large to resample onto {dst_gbox.shape.yx}",
            fix="use smaller tiles (chunk_size / tile size) or a lower max_read_pixels",
        )
    u, v = source_positions(src_gbox, dst_gbox)
    u, v = u.reshape(-1), v.reshape(-1)
    inside = np.isfinite(u) & np.isfinite(v) & (u > -0.5) & (u < w - 0.5) & (v > -0.5)
    inside &= v < h - 0.5
    outside = np.flatnonzero(~inside)
    u[outside] = 0.0
    v[outside] = 0.0
    if rule is Resampling.nearest:
        iu = np.clip(np.floor(u + 0.5).astype(np.int64), 0, w - 1)
        iv = np.clip(np.floor(v + 0.5).astype(np.int64), 0, h - 1)
        flat = (iv * w + iu).astype(np.int32)
        return ResamplePlan(rule, (h, w), flat, (), (np.empty(0, np.int64),), outside)
    u0, fu = _taps(u, w)
    v0, fv = _taps(v, h)
    fix = np.flatnonzero(((fu == 0) | (fv == 0)) & inside)
    fixes = (fix, v0[fix], u0[fix], np.minimum(v0[fix] + 1, h - 1),
             np.minimum(u0[fix] + 1, w - 1), fu[fix], fv[fix])  # fmt: skip
    i00 = (v0 * (w + 1) + u0).astype(np.int32)
    return ResamplePlan(rule, (h, w), i00, (fu, fv), fixes, outside)


_PLANS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("resample_plans", default=None)


@contextmanager
def reuse_plans() -> Iterator[None]:
    """Keep resampling plans for the duration of the block (a scope inside one already open
    shares it); they are dropped when the outermost block ends."""
    if _PLANS.get() is not None:
        yield
        return
    token = _PLANS.set({})
    try:
        yield
    finally:
        _PLANS.reset(token)


def plan_for(src_gbox: GeoBox, dst_gbox: GeoBox, rule: Resampling) -> ResamplePlan:
    """The plan of ``rule`` from ``src_gbox`` onto ``dst_gbox`` (made once per scope of
    :func:`reuse_plans`; made afresh on every call outside one)."""
    plans = _PLANS.get()
    if plans is None:
        return _make_plan(src_gbox, dst_gbox, rule)
    key = (grid_key(src_gbox), grid_key(dst_gbox), rule)
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = _make_plan(src_gbox, dst_gbox, rule)
    return plan
