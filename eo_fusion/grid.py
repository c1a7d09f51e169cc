"""Target grids and tiles.

The grid is an odc-geo :class:`~odc.geo.geobox.GeoBox` (shape + affine + CRS, a value type).
Grids made by :func:`grid_from_aoi` are anchored on whole multiples of the resolution (pixel edges
at ``k * resolution`` in CRS units), so two runs over overlapping AOIs align pixel for pixel and
their tiles can be mosaicked without resampling. Sub-grids at an integer factor
(:func:`refine`, :func:`coarsen`) keep the same anchor, so one coarse pixel covers an exact block of
fine pixels (e.g. 0.5 m aerial inside a 10 m grid: 20 x 20 fine pixels per coarse pixel).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import shapely
import shapely.geometry
import shapely.wkt
from affine import Affine
from odc.geo import CRS, Geometry
from odc.geo.geobox import GeoBox, GeoboxTiles
from rasterio.features import geometry_mask

from eo_fusion.errors import GridError

__all__ = [
    "Tile",
    "aoi_geometry",
    "aoi_mask",
    "auto_crs",
    "coarsen",
    "grid_crs",
    "grid_from_aoi",
    "horizontal_crs",
    "make_tiles",
    "refine",
    "utm_crs_for",
    "utm_zone",
    "vertical_datum",
]

#: Anything :func:`aoi_geometry` accepts: bbox, GeoJSON (dict/str/path), WKT, shapely, odc Geometry.
AOILike = Any


def grid_crs(gbox: GeoBox) -> CRS:
    """The grid's CRS (grids without one cannot be used for warping: a :class:`GridError`)."""
    if gbox.crs is None:
        raise GridError(f"grid {gbox} has no CRS", fix="build grids with grid_from_aoi")
    return gbox.crs


def utm_zone(lon: float, lat: float) -> int:
    """The UTM zone number (1-60) containing ``lon``, ``lat`` (degrees, WGS 84).

    Includes the two exceptions of the UTM/MGRS grid, which Sentinel-2 and Landsat tiles follow:
    zone 32 is widened over south-western Norway (56-64 N, 3-12 E) and Svalbard (72-84 N) uses
    the odd zones 31/33/35/37 only (NGA, "The Universal Grids", DMA TM 8358.2, section 2-6).
    """
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        return 32
    if 72.0 <= lat < 84.0 and 0.0 <= lon < 42.0:
        return 31 if lon < 9.0 else 33 if lon < 21.0 else 35 if lon < 33.0 else 37
    return zone


def utm_crs_for(lon: float, lat: float) -> CRS:
    """The WGS 84 / UTM zone CRS (EPSG:326zz north, 327zz south) containing ``lon``, ``lat``."""
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise GridError(
            f"AOI centroid ({lon}, {lat}) is not a lon/lat position",
            fix="give the AOI's CRS (aoi_crs=...) if its coordinates are not EPSG:4326",
        )
    return CRS(f"EPSG:{(32600 if lat >= 0 else 32700) + utm_zone(lon, lat)}")


def _pyproj_crs(crs: Any) -> pyproj.CRS:
    if isinstance(crs, CRS):
        return crs.proj
    try:
        return pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError as e:
        raise GridError(f"CRS {str(crs)[:80]!r} is not valid: {e}", fix="give 'EPSG:n'") from e


def horizontal_crs(crs: Any) -> CRS:
    """The horizontal part of ``crs`` (anything pyproj reads): a compound CRS such as
    ``EPSG:32633+3855`` (UTM 33N + EGM2008 height) gives its projected/geographic member; any
    other CRS is returned as is. Pixels are placed with this part only: heights never move them.
    """
    if isinstance(crs, str):
        return _horizontal_of_text(crs)  # cached: readers call this once per file read
    return _horizontal(_pyproj_crs(crs))


@functools.lru_cache(maxsize=256)
def _horizontal_of_text(text: str) -> CRS:
    return _horizontal(_pyproj_crs(text))


def _horizontal(pc: pyproj.CRS) -> CRS:
    if not pc.is_compound:
        return CRS(pc)
    pc = next(s for s in pc.sub_crs_list if not s.is_vertical)
    epsg = pc.to_epsg(min_confidence=100)
    return CRS(f"EPSG:{epsg}") if epsg else CRS(pc.to_wkt())


def vertical_datum(crs: Any) -> str | None:
    """Name of the vertical CRS of a compound ``crs`` (e.g. ``"EGM2008 height"``), else None."""
    if crs is None:
        return None
    pc = _pyproj_crs(crs)
    if not pc.is_compound:
        return pc.name if pc.is_vertical else None
    return next((s.name for s in pc.sub_crs_list if s.is_vertical), None)


def auto_crs(geom: Geometry, input_crs: Sequence[Any] = ()) -> CRS:
    """The CRS ``crs: auto`` means: the inputs' own (horizontal) CRS when they all share one and
    it is projected in metres (their pixels are then pasted, not resampled; a grid resolution
    is in metres, so lon/lat or feet inputs do not qualify), else the UTM zone containing the
    AOI centroid.
    """
    own = {horizontal_crs(c) for c in input_crs if c is not None}
    if len(own) == 1:
        only = own.pop()
        if only.projected and only.units[0] in ("metre", "m"):
            return only
    c = geom.to_crs("EPSG:4326").centroid.coords[0]
    return utm_crs_for(c[0], c[1])


def _geojson_geometry(obj: Mapping[str, Any]) -> shapely.Geometry:
    kind = obj.get("type")
    if kind == "FeatureCollection":
        geoms = [shapely.geometry.shape(f["geometry"]) for f in obj.get("features", [])]
        if not geoms:
            raise GridError("AOI GeoJSON FeatureCollection has no features", fix="add a polygon")
        return shapely.union_all(geoms)
    if kind == "Feature":
        return shapely.geometry.shape(obj["geometry"])
    return shapely.geometry.shape(obj)


def _geojson_crs(obj: Mapping[str, Any]) -> str | None:
    # GeoJSON (RFC 7946) is lon/lat, but older files name another CRS in a "crs" member.
    name = (obj.get("crs") or {}).get("properties", {}).get("name")
    return str(name) if name else None


def aoi_geometry(aoi: AOILike, aoi_crs: Any = "EPSG:4326") -> Geometry:
    """Normalise an AOI to an odc-geo :class:`Geometry` with a CRS.

    Args:
        aoi: ``(minx, miny, maxx, maxy)``; a GeoJSON geometry/Feature/FeatureCollection (dict,
            JSON text or a path to a ``.geojson`` file); WKT text; a shapely geometry; or an odc-geo
            ``Geometry`` (its own CRS wins).
        aoi_crs: CRS of the coordinates (anything pyproj understands); default lon/lat.
    """
    if isinstance(aoi, Geometry):
        if aoi.crs is None:
            return Geometry(aoi.geom, crs=aoi_crs)
        return aoi
    try:
        geom, crs = _parse_aoi(aoi, aoi_crs)
    except GridError:
        raise
    except (ValueError, KeyError, TypeError, OSError, shapely.errors.ShapelyError) as e:
        raise GridError(f"AOI {str(aoi)[:80]!r} could not be parsed: {e}", fix="check it") from e
    if geom.is_empty:
        raise GridError("AOI geometry is empty", fix="give a polygon with an area")
    return Geometry(geom, crs=crs)


def _parse_aoi(aoi: AOILike, aoi_crs: Any) -> tuple[shapely.Geometry, Any]:
    """``(shapely geometry, its CRS)`` of any AOI but an odc-geo ``Geometry``; a GeoJSON CRS
    member wins over ``aoi_crs``. Parse errors propagate for :func:`aoi_geometry` to word."""
    if isinstance(aoi, Path) or (isinstance(aoi, str) and aoi.lower().endswith("json")):
        obj = json.loads(Path(aoi).read_text(encoding="utf-8"))
        return _geojson_geometry(obj), _geojson_crs(obj) or aoi_crs
    if isinstance(aoi, Mapping):
        return _geojson_geometry(aoi), _geojson_crs(aoi) or aoi_crs
    if isinstance(aoi, str) and aoi.lstrip().startswith("{"):
        obj = json.loads(aoi)
        return _geojson_geometry(obj), _geojson_crs(obj) or aoi_crs
    if isinstance(aoi, str):
        return shapely.wkt.loads(aoi), aoi_crs
    if isinstance(aoi, shapely.Geometry):
        return aoi, aoi_crs
    if isinstance(aoi, Sequence) and len(aoi) == 4:
        minx, miny, maxx, maxy = (float(v) for v in aoi)
        if not (maxx > minx and maxy > miny):
            raise GridError(
                f"AOI bbox {tuple(aoi)} is empty or inverted",
                fix="give (minx, miny, maxx, maxy) with max > min",
            )
        return shapely.geometry.box(minx, miny, maxx, maxy), aoi_crs
    raise GridError(
        f"AOI of type {type(aoi).__name__} is not understood",
        fix="give a bbox tuple, GeoJSON, WKT or a shapely/odc-geo geometry",
    )


def grid_from_aoi(
    aoi: AOILike,
    resolution: float,
    crs: Any = "auto",
    *,
    aoi_crs: Any = "EPSG:4326",
    input_crs: Sequence[Any] = (),
) -> GeoBox:
    """The grid covering ``aoi`` at ``resolution``, anchored on multiples of the resolution.

    Args:
        aoi: see :func:`aoi_geometry`.
        resolution: pixel size in units of the target CRS (metres for UTM), square pixels.
        crs: target CRS, or ``"auto"`` (:func:`auto_crs`: the inputs' CRS when they share one,
            else the UTM zone of the AOI centroid). A compound CRS contributes its horizontal
            part (:func:`horizontal_crs`; :func:`vertical_datum` names the vertical one).
        aoi_crs: CRS of the AOI coordinates when the AOI does not carry one.
        input_crs: CRSs of the input rasters (for ``"auto"``).

    Returns:
        A north-up GeoBox whose pixel edges lie on whole multiples of ``resolution`` and which
        covers the AOI (its bounding box, expanded outward to the anchor).
    """
    if not (resolution > 0 and math.isfinite(resolution)):
        raise GridError(f"grid resolution {resolution} is not positive", fix="give e.g. 10")
    geom = aoi_geometry(aoi, aoi_crs)
    if isinstance(crs, str) and crs.lower() == "auto":
        target = auto_crs(geom, input_crs)
    else:
        target = horizontal_crs(crs)
    minx, miny, maxx, maxy = geom.to_crs(target).boundingbox
    # Snap outward to the anchor: edges at whole multiples of the resolution.
    x0 = math.floor(minx / resolution) * resolution
    y1 = math.ceil(maxy / resolution) * resolution
    w = max(1, math.ceil((maxx - x0) / resolution - 1e-9))
    h = max(1, math.ceil((y1 - miny) / resolution - 1e-9))
    return GeoBox((h, w), Affine(resolution, 0.0, x0, 0.0, -resolution, y1), target)


def aoi_mask(gbox: GeoBox, aoi: AOILike, *, aoi_crs: Any = "EPSG:4326") -> np.ndarray:
    """Boolean ``(y, x)`` mask, True where a pixel centre falls inside the AOI geometry."""
    geom = aoi_geometry(aoi, aoi_crs).to_crs(grid_crs(gbox))
    return geometry_mask(
        [geom.geom], out_shape=gbox.shape.yx, transform=gbox.transform, invert=True
    )


def refine(gbox: GeoBox, factor: int) -> GeoBox:
    """The same footprint at ``factor`` x finer pixels, on the same anchor (exact blocks)."""
    if int(factor) != factor or factor < 1:
        raise GridError(f"refine factor {factor} is not a positive integer", fix="use 2, 4, 20…")
    f = int(factor)
    h, w = gbox.shape.yx
    return GeoBox((h * f, w * f), gbox.transform @ Affine.scale(1.0 / f), gbox.crs)


def coarsen(gbox: GeoBox, factor: int) -> GeoBox:
    """The same footprint at ``factor`` x coarser pixels; the shape must divide exactly."""
    if int(factor) != factor or factor < 1:
        raise GridError(f"coarsen factor {factor} is not a positive integer", fix="use 2, 3, …")
    f = int(factor)
    h, w = gbox.shape.yx
    if h % f or w % f:
        raise GridError(
            f"grid shape {h}x{w} is not a multiple of the coarsen factor {f}",
            fix="choose a tile size that the factor divides",
        )
    return GeoBox((h // f, w // f), gbox.transform @ Affine.scale(f), gbox.crs)


def grid_at_resolution(gbox: GeoBox, resolution: float) -> GeoBox:
    """Sub-grid of ``gbox`` at ``resolution``, which must be an integer multiple or fraction."""
    res = abs(gbox.resolution.x)
    ratio = resolution / res
    if abs(ratio - round(ratio)) < 1e-9 and round(ratio) >= 1:
        return coarsen(gbox, round(ratio))
    inv = res / resolution
    if abs(inv - round(inv)) < 1e-9:
        return refine(gbox, round(inv))
    raise GridError(
        f"modality resolution {resolution} is not an integer multiple or fraction of the grid "
        f"resolution {res}",
        fix="pick a resolution such as grid/2, grid/20 or grid*2 so pixels nest exactly",
    )


@dataclass(frozen=True)
class Tile:
    """One tile of a grid.

    Attributes:
        id: ``"r{row:03d}_c{col:03d}"``.
        row, col: tile index in the tiling.
        core: the tile's own pixels (the tiles' cores partition the grid exactly once).
        padded: ``core`` grown by ``halo`` pixels on each side (may extend beyond the grid).
        core_in_padded: ``(slice_y, slice_x)`` selecting ``core`` inside ``padded``.
        core_in_grid: ``(slice_y, slice_x)`` of ``core`` inside the whole grid.
        grid_in_padded: ``(slice_y, slice_x)`` of the part of ``padded`` inside the grid (the
            halo beyond the grid's edge belongs to no other tile).
    """

    id: str
    row: int
    col: int
    core: GeoBox
    padded: GeoBox
    core_in_padded: tuple[slice, slice]
    core_in_grid: tuple[slice, slice]
    grid_in_padded: tuple[slice, slice] | None = None


def make_tiles(gbox: GeoBox, tile_size: int, halo: int = 0) -> list[Tile]:
    """Split ``gbox`` into tiles of ``tile_size`` x ``tile_size`` pixels (edge tiles smaller).

    Args:
        gbox: the grid.
        tile_size: tile edge in pixels, without the halo.
        halo: overlap in pixels added on each side of each tile (read, then cropped away when
            mosaicking, so filters and models see context across tile edges).

    Returns:
        Tiles in row-major order; their cores cover every grid pixel exactly once.
    """
    if tile_size < 1 or halo < 0:
        raise GridError(
            f"tile_size {tile_size} / halo {halo} invalid", fix="tile_size ≥ 1, halo ≥ 0"
        )
    tiles = GeoboxTiles(gbox, (tile_size, tile_size))
    ny, nx = tiles.shape.yx
    gh, gw = gbox.shape.yx
    out = []
    for r in range(ny):
        for c in range(nx):
            core = tiles[r, c]
            assert isinstance(core, GeoBox)  # tiles of a GeoBox are GeoBoxes
            sy, sx = tiles.roi[r, c]
            h, w = core.shape.yx
            padded = core.pad(halo) if halo else core
            out.append(
                Tile(
                    id=f"r{r:03d}_c{c:03d}",
                    row=r,
                    col=c,
                    core=core,
                    padded=padded,
                    core_in_padded=(slice(halo, halo + h), slice(halo, halo + w)),
                    core_in_grid=(sy, sx),
                    grid_in_padded=(
                        slice(max(0, halo - sy.start), min(h + 2 * halo, gh - sy.start + halo)),
                        slice(max(0, halo - sx.start), min(w + 2 * halo, gw - sx.start + halo)),
                    ),
                )
            )
    return out
