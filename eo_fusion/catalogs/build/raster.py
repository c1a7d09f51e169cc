"""Metadata of one raster file: grid, CRS, bands, tags and a cheap look at its values.

Resolution conventions: ``transform`` is in the CRS's own units (``proj:transform``); the
*ground* resolution (:func:`ground_resolution_m`) is in metres whatever the CRS: projected
lengths are scaled by the CRS's linear unit (a US survey foot is 0.3048006 m) and a geographic
pixel is measured on its ellipsoid at the raster's centre (pyproj ``Geod.inv``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from pyproj import CRS as ProjCRS
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.errors import CRSError

from eo_fusion.errors import BadInputError

_WORLD_SUFFIXES = (".wld", ".jgw", ".jpgw", ".pgw", ".pngw", ".tfw")


@dataclass(frozen=True)
class RasterInfo:
    """What the builder needs of a raster file (see module doc for units).

    Attributes:
        band_units: per-band unit strings (GDAL ``units``, else a ``UNITS``/``unit`` tag).
        band_tags: per-band GDAL metadata.
        colorinterp: per-band GDAL colour interpretation names (``red``, ``gray``, ...).
        value_min / value_median: of a decimated read of band 1 over valid pixels (``None``
            when no valid pixel); only for inferring units such as dB.
        ground_res_m: (x, y) pixel size on the ground in metres.
        crs_unit: the CRS's horizontal axis unit (``metre``, ``US survey foot``, ``degree``).
    """

    crs: CRS
    bounds: tuple[float, float, float, float]
    transform: list[float]
    shape: list[int]
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str | None, ...]
    tags: dict[str, str]
    band_units: tuple[str | None, ...]
    band_tags: tuple[dict[str, str], ...]
    colorinterp: tuple[str, ...]
    value_min: float | None
    value_median: float | None
    ground_res_m: tuple[float, float]
    crs_unit: str

    @property
    def res(self) -> float:
        """Ground resolution in metres (STAC ``gsd``).

        Projected grids: the x pixel size (their pixels are square to within rounding).
        Geographic grids: the coarser axis, which never claims finer detail than there is (a
        1" DEM at 45 N is 21.9 m by 30.9 m on the ground).
        """
        return max(self.ground_res_m) if self.crs_unit == "degree" else self.ground_res_m[0]


def sidecar_crs(path: Path) -> str | None:
    """CRS text of a ``.prj``/``.wkt`` sidecar (also ``<stem>-srs.wkt``), or ``None``."""
    for suffix in (".prj", ".wkt"):
        for cand in (path.with_suffix(suffix), path.with_name(path.stem + "-srs" + suffix)):
            if cand.is_file():
                return cand.read_text(encoding="utf-8").strip()
    return None


def parse_crs(text: str, what: str) -> CRS:
    """``text`` (EPSG code, WKT, PROJ JSON) as a CRS; a clear error naming ``what`` if not."""
    try:
        return CRS.from_user_input(text)
    except CRSError as e:
        raise BadInputError(
            f"{what}: '{text[:60]}' is not a CRS ({e})", fix="use EPSG:n, WKT or a .prj/.wkt file"
        ) from e


def world_file_transform(path: Path) -> list[float] | None:
    """Affine (a, b, c, d, e, f) from a world file next to ``path``, or ``None``.

    A world file holds A, D, B, E, C, F where (C, F) is the *centre* of the upper-left pixel;
    the affine origin is its outer corner. Read here rather than left to GDAL, which only finds
    sidecars when directory listing is enabled.
    """
    for suffix in _WORLD_SUFFIXES:
        wld = path.with_suffix(suffix)
        if wld.is_file():
            vals = [float(v) for v in wld.read_text(encoding="utf-8").split()[:6]]
            a, d, b, e, c, f = vals
            return [a, b, c - a / 2 - b / 2, d, e, f - d / 2 - e / 2]
    return None


def bounds_of(t: Any, height: int, width: int) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of a grid with affine ``t`` (rotation allowed)."""
    xs = [t.c, t.c + t.a * width, t.c + t.b * height, t.c + t.a * width + t.b * height]
    ys = [t.f, t.f + t.d * width, t.f + t.e * height, t.f + t.d * width + t.e * height]
    return min(xs), min(ys), max(xs), max(ys)


def ground_resolution_m(
    crs: CRS, t: Any, shape: tuple[int, int]
) -> tuple[tuple[float, float], str]:
    """((x, y) ground pixel size in metres, the CRS's horizontal unit name); see module doc."""
    pcrs = ProjCRS.from_wkt(crs.to_wkt())
    horiz = pcrs.sub_crs_list[0] if pcrs.is_compound else pcrs
    px = math.hypot(t.a, t.d)
    py = math.hypot(t.b, t.e)
    if horiz.is_geographic:
        geod = Geod(ellps="WGS84") if horiz.ellipsoid is None else horiz.get_geod()
        h, w = shape
        lon, lat = t * (w / 2, h / 2)  # centre of the raster, degrees
        lat = max(-89.9, min(89.9, lat))
        _, _, dx = geod.inv(lon, lat, lon + px, lat)  # type: ignore[union-attr]
        _, _, dy = geod.inv(lon, lat, lon, min(90.0, lat + py))  # type: ignore[union-attr]
        return (abs(dx), abs(dy)), "degree"
    axis = horiz.axis_info[0]
    factor = axis.unit_conversion_factor or 1.0
    return (px * factor, py * factor), axis.unit_name or "metre"


def _open(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # A JPEG/PNG whose world file GDAL did not look for opens "not georeferenced";
            # the world file is read instead.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise BadInputError(f"{path}: not a readable raster ({e})", fix="check the file") from e


def _crs_of(ds: Any, path: Path, crs_override: str | None) -> CRS:
    if ds.crs is not None and not crs_override:
        return CRS.from_wkt(ds.crs.to_wkt())
    text = crs_override or sidecar_crs(path)
    if not text:
        raise BadInputError(
            f"{path}: the file declares no CRS", fix="add a .prj/.wkt sidecar or pass --crs"
        )
    return parse_crs(text, f"CRS of {path}")


def _transform_of(ds: Any, path: Path) -> Any:
    t = ds.transform
    if ds.gcps[0] and t.is_identity:
        raise BadInputError(
            f"{path}: georeferenced by ground control points only",
            fix="warp it first (gdalwarp -tps) so that it has a geotransform",
        )
    if t.is_identity:
        wt = world_file_transform(path)
        if wt is None:
            raise BadInputError(
                f"{path}: no georeferencing (no geotransform, no world file)",
                fix="add a world file (.wld/.jgw/.tfw) next to the image",
            )
        t = rasterio.Affine(*wt)
    return t


def _value_stats(ds: Any) -> tuple[float | None, float | None]:
    """(min, median) of band 1 read decimated to at most ~256 x 256 (valid pixels only)."""
    step = max(1, max(ds.height, ds.width) // 256)
    shape = (max(1, ds.height // step), max(1, ds.width // step))
    arr = ds.read(1, out_shape=shape, masked=True).astype("float64")
    vals = arr.compressed()
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return None, None
    return float(vals.min()), float(np.median(vals))


def _band_units(ds: Any) -> tuple[str | None, ...]:
    out = []
    for i in range(1, ds.count + 1):
        unit = ds.units[i - 1] if ds.units else None
        tags = ds.tags(i)
        unit = unit or tags.get("UNITS") or tags.get("units") or tags.get("unit")
        out.append(unit or ds.tags().get("UNITS") or ds.tags().get("units") or None)
    return tuple(out)


def read_raster(path: Path, crs_override: str | None = None) -> RasterInfo:
    """Read the metadata of ``path`` (and a decimated band 1); :class:`RasterInfo`.

    Raises:
        BadInputError: unreadable file, no CRS (and no sidecar/``crs_override``), no
            georeferencing, or GCP-only georeferencing.
    """
    with _open(path) as ds:
        crs = _crs_of(ds, path, crs_override)
        t = _transform_of(ds, path)
        (gx, gy), unit = ground_resolution_m(crs, t, (ds.height, ds.width))
        vmin, vmed = _value_stats(ds)
        return RasterInfo(
            crs=crs,
            bounds=bounds_of(t, ds.height, ds.width),
            transform=[t.a, t.b, t.c, t.d, t.e, t.f],
            shape=[ds.height, ds.width],
            count=ds.count,
            dtype=ds.dtypes[0],
            nodata=ds.nodata,
            descriptions=tuple(ds.descriptions),
            tags=dict(ds.tags()),
            band_units=_band_units(ds),
            band_tags=tuple(dict(ds.tags(i)) for i in range(1, ds.count + 1)),
            colorinterp=tuple(c.name for c in ds.colorinterp),
            value_min=vmin,
            value_median=vmed,
            ground_res_m=(gx, gy),
            crs_unit=unit,
        )
