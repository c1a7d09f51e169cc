"""Files georeferenced by ground control points (Sentinel-1 GRD measurement TIFFs).

A GRD file in radar geometry has no geotransform, only a grid of GCPs (image line/pixel ->
lon/lat/height; about 10 x 21 points for an IW scene). An affine fitted to them (rasterio
``from_gcps``, or the item's ``proj:transform``) is wrong by many pixels away from the fit's
centre, so these files are warped with the GCPs themselves: GDAL's thin-plate-spline GCP
transformer (``SRC_METHOD=GCP_TPS``), which passes through every GCP and bends smoothly between
them, as GDAL recommends for such grids (gdalwarp ``-tps``).

The reader asks :func:`gcp_georef` whether a file is such a file; :func:`gcp_window` finds the
source window a target grid needs (target points mapped back through the same transformer) and
:func:`warp_gcps` warps that window (GCPs shifted into the window's pixel coordinates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.warp
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from rasterio.control import GroundControlPoint
from rasterio.enums import Resampling
from rasterio.transform import GCPTransformer

from eo_fusion.grid import grid_crs

__all__ = ["GCPGeoref", "gcp_georef", "gcp_window", "warp_gcps"]

#: Extra source pixels around the window: resampling kernels plus the TPS round trip.
WINDOW_PAD_PX = 4


@dataclass(frozen=True)
class GCPGeoref:
    """A file's GCPs and their CRS (WKT)."""

    gcps: tuple[GroundControlPoint, ...]
    crs_wkt: str


def gcp_georef(ds: rasterio.DatasetReader) -> GCPGeoref | None:
    """The GCPs of a file that has no geotransform but GCPs, else ``None``."""
    if not ds.transform.is_identity:
        return None
    gcps, crs = ds.gcps
    if len(gcps) < 3 or crs is None:
        return None
    return GCPGeoref(tuple(gcps), crs.to_wkt())


def gcp_window(
    ds: rasterio.DatasetReader, georef: GCPGeoref, gbox: GeoBox, pad: int = WINDOW_PAD_PX
) -> tuple[tuple[slice, slice], float] | None:
    """Source rows/cols covering ``gbox`` and the target/source pixel size ratio (``None``: no
    overlap), from a grid of target points mapped to GCP coordinates, then to image line/pixel
    with the TPS transformer. (The ratio comes from neighbouring points, not the window's
    extent: a rotated footprint's window is larger than the target without being coarser.)"""
    ny, nx = gbox.shape.yx
    ys = np.linspace(0, ny, min(ny, 32) + 1)
    xs = np.linspace(0, nx, min(nx, 32) + 1)
    gx, gy = np.meshgrid(xs, ys)
    wx, wy = gbox.transform * (gx.ravel(), gy.ravel())  # type: ignore[operator]
    to_gcp = Transformer.from_crs(grid_crs(gbox).to_wkt(), georef.crs_wkt, always_xy=True)
    lon, lat = to_gcp.transform(np.asarray(wx), np.asarray(wy))
    with GCPTransformer(list(georef.gcps), tps=True) as t:
        rows, cols = t.rowcol(lon, lat, op=np.asarray)  # fractional line/pixel
    rows, cols = np.asarray(rows, float), np.asarray(cols, float)
    ok = np.isfinite(rows) & np.isfinite(cols)
    step = np.hypot(
        np.diff(rows.reshape(gx.shape), axis=1), np.diff(cols.reshape(gx.shape), axis=1)
    )
    # Rounded: the same pixel size must not flip the resampling rule to `average` because a
    # curved footprint makes the ratio 1.0000002 (rules switch at 1 + 1e-6).
    ratio = round(float(np.nanmedian(step) / (xs[1] - xs[0])), 3) if step.size else 1.0
    if not ok.any():
        return None
    r0 = max(int(np.floor(rows[ok].min())) - pad, 0)
    r1 = min(int(np.ceil(rows[ok].max())) + pad, ds.height)
    c0 = max(int(np.floor(cols[ok].min())) - pad, 0)
    c1 = min(int(np.ceil(cols[ok].max())) + pad, ds.width)
    if r1 <= r0 or c1 <= c0:
        return None
    return (slice(r0, r1), slice(c0, c1)), ratio


def warp_gcps(
    src: np.ndarray,
    georef: GCPGeoref,
    window: tuple[slice, slice],
    dst: np.ndarray,
    dst_gbox: GeoBox,
    rule: Resampling,
    num_threads: int = 1,
) -> None:
    """Warp ``src`` (the source ``window``, ``(band, y, x)``, NaN = no data) onto ``dst_gbox``
    with the thin-plate-spline GCP transformer (exact, tolerance 0)."""
    rows, cols = window
    extra = {}
    if rule in (Resampling.bilinear, Resampling.cubic, Resampling.lanczos):
        # 1-pixel kernels, as in the reader's affine warp: GDAL would widen them by a scale
        # estimated without the grid's rotation (GDAL issue 7750), which moves values ~0.1 px.
        extra = {"XSCALE": 1, "YSCALE": 1}
    shifted = [
        GroundControlPoint(g.row - rows.start, g.col - cols.start, g.x, g.y, g.z)
        for g in georef.gcps
    ]
    rasterio.warp.reproject(
        src,
        dst,
        gcps=shifted,
        src_crs=georef.crs_wkt,
        dst_transform=dst_gbox.transform,
        dst_crs=grid_crs(dst_gbox).to_wkt(),
        src_nodata=np.nan,
        dst_nodata=np.nan,
        resampling=rule,
        num_threads=max(1, num_threads),
        tolerance=0.0,
        init_dest_nodata=True,
        SRC_METHOD="GCP_TPS",
        **extra,
    )
