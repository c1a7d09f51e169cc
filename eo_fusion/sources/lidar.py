"""Point clouds (LAS/LAZ, read with laspy) gridded onto a target grid.

* DSM: the highest return per cell (``np.maximum.at``), cells without a point are NaN.
* Colours: :attr:`PointCloud.rgb` holds each point's RGB scaled to 0-1 (8- or 16-bit storage
  detected).

Points are transformed to the grid CRS with pyproj; the point cloud's CRS comes from the file's
header (WKT/GeoTIFF VLRs) or, when the file carries none, from the caller (the item's asset).
Elevations are converted to metres using the horizontal unit of the point cloud CRS when that is
a foot (LAS files in State Plane/Lambert feet store Z in the same unit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from pyproj import Transformer

from eo_fusion.errors import ReadError
from eo_fusion.grid import grid_crs

__all__ = ["PointCloud", "grid_points_max", "read_points"]


@dataclass(frozen=True)
class PointCloud:
    """Points in a CRS: ``x``, ``y`` in CRS units, ``z`` in metres, ``rgb`` (n, 3) 0-1 or None."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    rgb: np.ndarray | None
    crs: CRS

    def to_crs(self, crs: CRS) -> PointCloud:
        """The same points with x/y in ``crs``."""
        if crs == self.crs:
            return self
        tr = Transformer.from_crs(self.crs.proj, CRS(crs).proj, always_xy=True)
        x, y = tr.transform(self.x, self.y)
        return PointCloud(np.asarray(x), np.asarray(y), self.z, self.rgb, CRS(crs))


def read_points(path: str, crs: str | None = None) -> PointCloud:
    """Read a LAS/LAZ file; ``crs`` is used when the file's header declares none."""
    import laspy

    try:
        las = laspy.read(path)
    except Exception as e:  # laspy raises several types (LaspyException, OSError, ValueError)
        raise ReadError(f"point cloud {path} could not be read: {e}", fix="check the file") from e
    file_crs = las.header.parse_crs()
    if file_crs is not None:
        pc_crs = CRS(file_crs.to_wkt())
    elif crs:
        pc_crs = CRS(crs)
    else:
        raise ReadError(
            f"point cloud {path} declares no CRS", fix="set the asset's crs (e.g. from a .wkt file)"
        )
    z = np.asarray(las.z, dtype=np.float64)
    unit = pc_crs.proj.axis_info[0].unit_conversion_factor if pc_crs.proj.axis_info else 1.0
    if abs(unit - 1.0) > 1e-9 and not pc_crs.geographic:
        z = z * unit  # Z stored in the (foot) unit of the horizontal CRS → metres
    rgb = None
    if {"red", "green", "blue"} <= set(las.point_format.dimension_names):
        rgb = np.stack([las.red, las.green, las.blue], axis=1).astype(np.float32)
        rgb /= 65535.0 if rgb.max() > 255 else 255.0
    return PointCloud(np.asarray(las.x), np.asarray(las.y), z, rgb, pc_crs)


def _cells(pc: PointCloud, gbox: GeoBox) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    inv = ~gbox.transform
    col, row = inv @ (pc.x, pc.y)
    col = np.floor(col).astype(np.int64)
    row = np.floor(row).astype(np.int64)
    h, w = gbox.shape.yx
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    return row, col, inside


def grid_points_max(pc: PointCloud, gbox: GeoBox) -> np.ndarray:
    """DSM: highest ``z`` per grid cell (metres), NaN where no point falls."""
    pc = pc.to_crs(grid_crs(gbox))
    row, col, inside = _cells(pc, gbox)
    out = np.full(gbox.shape.yx, -np.inf, dtype=np.float64)
    np.maximum.at(out, (row[inside], col[inside]), pc.z[inside])
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32)
