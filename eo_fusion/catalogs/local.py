"""Normalised items from local files, for stacking data that has no STAC catalog.

Searching a catalog (``eo_fusion.catalogs.search``) is the normal way in; this helper covers
notebooks, tests and one-off files: it reads each file's footprint with rasterio and attaches the
band registry's spec with the encoding you give. It lives with the catalog layer because it makes
the same :class:`NormalizedItem` records a search does, with the builder's world-file reader.

Example::

    item = local_item(
        "dem", "dem", {"elevation:dem": "catalogs/sample/data/slovenia/DEM_slovenia_10m.tif"},
        datetime(2016, 1, 1, tzinfo=UTC),
    )
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import rasterio
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from rasterio.errors import NotGeoreferencedWarning

from eo_fusion.bands import get_band
from eo_fusion.catalogs.build import world_file_transform
from eo_fusion.catalogs.items import BandAsset, NormalizedItem
from eo_fusion.errors import ReadError

__all__ = ["local_item"]

#: key -> path, or key -> (path, 1-based band index)
FileMap = Mapping[str, str | Path | tuple[str | Path, int]]


def local_item(
    item_id: str,
    modality: str,
    files: FileMap,
    when: datetime,
    *,
    crs: str | None = None,
    scale: float | None = None,
    offset: float | None = None,
    nodata: float | None = None,
    units: str | None = None,
    properties: Mapping[str, object] | None = None,
) -> NormalizedItem:
    """A :class:`NormalizedItem` for local raster files (see module doc).

    Args:
        item_id: id used in provenance.
        modality: ``s2-l1c``, ``s2-l2a``, ``s1-grd``, ``dem``, ``labels``, ``aerial``, ...
        files: band registry key -> path or (path, band index).
        when: acquisition time (timezone-aware, UTC).
        crs: CRS for files that carry none (e.g. a JPEG with a world file).
        scale, offset, nodata: the stored encoding (default: the registry's).
        units: override the spec's units (e.g. ``dB`` for S1 backscatter stored in dB).
        properties: STAC-like properties (``sat:orbit_state``, ...).
    """
    bands: dict[str, BandAsset] = {}
    bbox = None
    for key, value in files.items():
        path, index = (value, 1) if not isinstance(value, tuple) else value
        spec = get_band(key).with_encoding(scale=scale, offset=offset, nodata=nodata)
        if units is not None:
            spec = dataclasses.replace(spec, units=units)
        path = str(path)
        if path.lower().endswith((".las", ".laz")):
            bands[key] = BandAsset(key, Path(path).stem, path, 1, spec, crs=crs)
            continue
        grid = _raster_grid(path, crs)
        # The item's footprint is the first raster's.
        bbox = bbox or tuple(grid.gbox.geographic_extent.boundingbox)
        bands[key] = BandAsset(
            key, Path(path).stem, path, int(index), spec, grid.crs, grid.transform, grid.shape
        )
    minx, miny, maxx, maxy = bbox if bbox is not None else (-180.0, -90.0, 180.0, 90.0)
    return NormalizedItem(
        id=item_id,
        collection="local",
        modality=modality,
        datetime=when,
        bbox=(minx, miny, maxx, maxy),
        geometry=_bbox_polygon(minx, miny, maxx, maxy),
        bands=bands,
        properties=dict(properties or {}),
    )


class _RasterGrid(NamedTuple):
    gbox: GeoBox
    crs: str
    transform: tuple[float, ...]
    shape: tuple[int, int]


def _raster_grid(path: str, crs: str | None) -> _RasterGrid:
    """The pixel grid of a raster file; ``crs`` for a file without one, a world file
    (``.jgw``, ``.wld``, ...) for a file without a geotransform."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # world file: below
            ds = rasterio.open(path)
        with ds:
            fcrs = CRS(ds.crs.to_wkt()) if ds.crs else (CRS(crs) if crs else None)
            if fcrs is None:
                raise ReadError(f"file {path} has no CRS", fix="pass crs=...")
            affine = ds.transform
            if affine.is_identity:
                world = world_file_transform(Path(path))
                affine = Affine(*world) if world else affine
            gbox = GeoBox(ds.shape, affine, fcrs)
            return _RasterGrid(gbox, str(fcrs), tuple(affine)[:6], ds.shape)
    except rasterio.errors.RasterioIOError as e:
        raise ReadError(f"cannot open {path}: {e}", fix="check the path") from e


def _bbox_polygon(minx: float, miny: float, maxx: float, maxy: float) -> dict[str, object]:
    """The GeoJSON polygon of a lon/lat bounding box."""
    return {
        "type": "Polygon",
        "coordinates": [[[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]],
    }
