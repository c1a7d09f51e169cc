"""LAS/LAZ point clouds: CRS, bounds and the pointcloud-extension fields from the header."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rasterio.crs import CRS

from eo_fusion.catalogs.build.raster import parse_crs, sidecar_crs
from eo_fusion.errors import BadInputError

LAS_SUFFIXES = frozenset({".las", ".laz"})


def _header_crs(header: Any) -> CRS | None:
    try:
        crs = header.parse_crs()
    except Exception:  # laspy raises several types for malformed GeoKeys/WKT VLRs
        return None
    return CRS.from_wkt(crs.to_wkt()) if crs is not None else None


def las_info(path: Path, crs_override: str | None) -> tuple[CRS, list[float], dict[str, Any]]:
    """(CRS, [minx, miny, maxx, maxy] in that CRS, ``pc:*`` properties) of a LAS/LAZ file.

    The CRS is ``crs_override``, else the header's, else a ``.prj``/``.wkt`` sidecar.

    Raises:
        BadInputError: unreadable file, or no CRS anywhere.
    """
    import laspy

    try:
        fh = laspy.open(path)
    except (laspy.errors.LaspyException, OSError) as e:
        raise BadInputError(
            f"{path}: not a readable LAS/LAZ file ({e})", fix="check the file"
        ) from e
    with fh:
        h = fh.header
        crs = None if crs_override else _header_crs(h)
        text = crs_override or (None if crs else sidecar_crs(path))
        if text:
            crs = parse_crs(text, f"CRS of {path}")
        if crs is None:
            raise BadInputError(f"{path}: no CRS in the LAS header", fix="pass --crs")
        bounds = [float(h.mins[0]), float(h.mins[1]), float(h.maxs[0]), float(h.maxs[1])]
        props: dict[str, Any] = {
            "pc:count": int(h.point_count),
            "pc:type": "lidar",
            "pc:schemas": [
                {"name": d.name, "size": max(1, d.num_bits // 8), "type": _pc_type(d)}
                for d in h.point_format.dimensions
            ],
        }
        if h.creation_date:
            props["eo_fusion:las_creation_date"] = h.creation_date.isoformat()
    return crs, bounds, props


def _pc_type(dim: Any) -> str:
    kind = getattr(dim, "kind", None)
    name = str(getattr(kind, "name", "")).lower()
    if "float" in name:
        return "floating"
    if "unsigned" in name:
        return "unsigned"
    return "signed"
