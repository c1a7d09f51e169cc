"""One STAC item from an :class:`~eo_fusion.catalogs.build.specs.ItemSpec` (files are read).

Conventions of the items written here:

* STAC 1.1 items with the projection (v2: ``proj:code`` or ``proj:wkt2``), eo, raster, sar and
  pointcloud extensions as relevant; ``bbox``/``geometry`` in EPSG:4326 (lon, lat).
* ``proj:transform``/``proj:shape`` are the asset's exact grid in its CRS's units; ``gsd`` and
  ``raster:bands[].spatial_resolution`` are ground metres (a geographic DEM gets metres, not
  degrees); an asset whose CRS unit is not the metre says which it is in
  ``eo_fusion:crs_units`` (``degree``, ``US survey foot``).
* Each band's ``eo:bands[i].name`` is its band-registry key (``s2:B04``), so normalisation needs no
  alias table for local items; ``raster:bands`` carries scale/offset/nodata/unit.
* ``eo_fusion:modality`` in the properties names the modality; one Collection per modality.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pystac
from rasterio.crs import CRS
from rasterio.warp import transform_bounds, transform_geom

from eo_fusion.bands import REGISTRY
from eo_fusion.catalogs.build.las import LAS_SUFFIXES, las_info
from eo_fusion.catalogs.build.osm import (
    is_osm_extract,
    media_type,
    osm_header,
    osm_nodes_bbox,
    osm_pbf_bbox,
)
from eo_fusion.catalogs.build.raster import RasterInfo, read_raster
from eo_fusion.catalogs.build.specs import AssetSpec, ItemSpec
from eo_fusion.catalogs.normalize import MODALITIES, MODALITY_PROPERTY
from eo_fusion.errors import BadInputError

EXT_PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
EXT_EO = "https://stac-extensions.github.io/eo/v1.0.0/schema.json"
EXT_RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
EXT_SAR = "https://stac-extensions.github.io/sar/v1.0.0/schema.json"
EXT_PC = "https://stac-extensions.github.io/pointcloud/v2.0.0/schema.json"

RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2"})
_MEDIA = {
    ".tif": pystac.MediaType.GEOTIFF,
    ".tiff": pystac.MediaType.GEOTIFF,
    ".jpg": pystac.MediaType.JPEG,
    ".jpeg": pystac.MediaType.JPEG,
    ".png": pystac.MediaType.PNG,
    ".jp2": pystac.MediaType.JPEG2000,
    ".las": "application/vnd.las",
    ".laz": "application/vnd.laszip",
    ".gpkg": "application/geopackage+sqlite3",
    ".geojson": pystac.MediaType.GEOJSON,
    ".json": pystac.MediaType.JSON,
}
_Footprint = tuple[list[float], dict[str, Any], float]  # bbox, geometry, resolution


def _media(path: Path) -> str:
    if is_osm_extract(path):
        return media_type(path)
    return str(_MEDIA.get(path.suffix.lower(), "application/octet-stream"))


def crs_fields(crs: CRS) -> dict[str, Any]:
    """``proj:code`` when the CRS has a confident EPSG code, else ``proj:wkt2``."""
    epsg = crs.to_epsg(confidence_threshold=90)
    if epsg:
        return {"proj:code": f"EPSG:{epsg}"}
    return {"proj:wkt2": crs.to_wkt(version="WKT2_2019")}


def footprint(crs: CRS, bounds: Sequence[float]) -> tuple[list[float], dict[str, Any]]:
    """bbox and polygon in EPSG:4326 of ``bounds`` in ``crs`` (edges densified)."""
    x0, y0, x1, y1 = bounds
    bbox = list(transform_bounds(crs, "EPSG:4326", x0, y0, x1, y1, densify_pts=21))
    poly = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}
    geom = transform_geom(crs, "EPSG:4326", poly, antimeridian_cutting=True, precision=7)
    return [round(v, 7) for v in bbox], dict(geom)


def _band_objects(
    info: RasterInfo, spec: AssetSpec
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(eo:bands, raster:bands) for a raster asset; eo name = registry key or a plain name."""
    from eo_fusion.catalogs.build.infer import resolve_or_none

    keys = spec.band_keys or tuple(
        (d if d in REGISTRY else resolve_or_none(d)) if d else None for d in info.descriptions
    )
    if len(keys) != info.count:
        raise BadInputError(
            f"{spec.path}: {len(keys)} band keys given for {info.count} bands",
            fix="give one key per band (use '-' for bands to leave unplaced)",
        )
    eo, rb = [], []
    for i, key in enumerate(keys):
        reg = REGISTRY.get(key) if key else None
        name = key or (spec.band_names[i] if spec.band_names else None) or info.descriptions[i]
        band: dict[str, Any] = {"name": name or f"band{i + 1}"}
        if reg and reg.wavelength_nm is not None:
            band["center_wavelength"] = round(reg.wavelength_nm / 1000.0, 4)  # STAC: micrometres
            band["full_width_half_max"] = round((reg.bandwidth_nm or 0) / 1000.0, 4)
        if reg and reg.description:
            band["description"] = reg.description
        eo.append(band)
        rb.append(_raster_band(info, spec, reg))
    return eo, rb


def _raster_band(info: RasterInfo, spec: AssetSpec, reg: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"data_type": info.dtype, "spatial_resolution": round(info.res, 6)}
    nodata = spec.nodata if spec.nodata is not None else info.nodata
    if nodata is not None and nodata == nodata:  # NaN nodata is implied by float dtype
        r["nodata"] = nodata
    scale = spec.scale if spec.scale is not None else (reg.scale if reg else None)
    offset = spec.offset if spec.offset is not None else (reg.offset if reg else None)
    if scale is not None:
        r["scale"] = scale
    if offset is not None:
        r["offset"] = offset
    units = spec.units or (reg.units if reg else None)
    if units:
        r["unit"] = units
    return r


def _raster_asset(
    a: AssetSpec, path: Path, crs: str | None, exts: set[str]
) -> tuple[dict[str, Any], _Footprint]:
    info = read_raster(path, crs)
    extra: dict[str, Any] = crs_fields(info.crs)
    extra["proj:transform"] = info.transform  # full precision: grids must match exactly
    extra["proj:shape"] = info.shape
    extra["gsd"] = round(info.res, 6)
    if info.crs_unit not in ("metre", "meter"):
        extra["eo_fusion:crs_units"] = info.crs_unit
    extra["eo:bands"], extra["raster:bands"] = _band_objects(info, a)
    exts |= {EXT_EO, EXT_RASTER}
    bbox, geom = footprint(info.crs, info.bounds)
    return extra, (bbox, geom, info.res)


def _asset_extra(
    a: AssetSpec, path: Path, spec: ItemSpec, props: dict[str, Any], exts: set[str]
) -> tuple[dict[str, Any], _Footprint | None]:
    """Asset fields and the footprint this file gives (``None``: metadata/vector files)."""
    suffix = path.suffix.lower()
    if "data" in a.roles and suffix in RASTER_SUFFIXES:
        return _raster_asset(a, path, spec.crs, exts)
    if suffix in LAS_SUFFIXES:
        crs, bounds, pc = las_info(path, spec.crs)
        props.update(pc)
        exts.add(EXT_PC)
        bbox, geom = footprint(crs, bounds)
        return crs_fields(crs), (bbox, geom, float("inf"))
    if is_osm_extract(path):
        bbox = (osm_pbf_bbox(path) if path.name.lower().endswith(".pbf") else None) or (
            osm_header(path)[0] or osm_nodes_bbox(path)
        )
        props.setdefault("proj:code", "EPSG:4326")
        b, geom = footprint(CRS.from_epsg(4326), bbox)
        return {}, (b, geom, float("inf"))
    return {}, None


def _check(spec: ItemSpec) -> None:
    if spec.modality not in MODALITIES:
        raise BadInputError(
            f"item {spec.id}: unknown modality '{spec.modality}'",
            fix=f"use one of {', '.join(MODALITIES)}",
        )
    if spec.datetime is None and not (spec.start and spec.end):
        raise BadInputError(
            f"item {spec.id}: no acquisition time found in the files or their names",
            fix="pass --datetime (ISO 8601 time, date, or start/end)",
        )


def _sar_properties(spec: ItemSpec, props: dict[str, Any], exts: set[str]) -> None:
    exts.add(EXT_SAR)
    props.setdefault("sar:instrument_mode", "IW")
    props.setdefault("sar:frequency_band", "C")
    props.setdefault("sar:product_type", "RTC" if spec.modality == "s1-rtc" else "GRD")
    pols = sorted({k.split(":")[1] for a in spec.assets for k in (a.band_keys or ()) if k})
    props.setdefault("sar:polarizations", pols or ["VV", "VH"])


def build_item(spec: ItemSpec) -> pystac.Item:
    """Read the files of ``spec`` and return a STAC item (absolute asset hrefs).

    Raises:
        BadInputError: unknown modality, no time, a missing or unreadable file, or no file
            that gives a footprint.
    """
    _check(spec)
    props: dict[str, Any] = {MODALITY_PROPERTY: spec.modality, **spec.properties}
    if spec.start and spec.end:
        props["start_datetime"] = spec.start.isoformat().replace("+00:00", "Z")
        props["end_datetime"] = spec.end.isoformat().replace("+00:00", "Z")
    exts = {EXT_PROJ}
    fp: _Footprint | None = None
    assets: dict[str, pystac.Asset] = {}
    for a in spec.assets:
        path = a.path.resolve()
        if not path.is_file():
            raise BadInputError(f"item {spec.id}: file not found: {path}", fix="check the path")
        extra, got = _asset_extra(a, path, spec, props, exts)
        if got is not None and (fp is None or got[2] < fp[2]):  # finest asset: footprint
            fp = got
        assets[a.key] = pystac.Asset(
            href=str(path), media_type=_media(path), roles=list(a.roles), title=a.title,
            extra_fields=extra,
        )  # fmt: skip
    if fp is None:
        raise BadInputError(
            f"item {spec.id}: none of its files gives a footprint",
            fix="include a raster, LAS or OSM file in the item",
        )
    if spec.modality.startswith("s1"):
        _sar_properties(spec, props, exts)
    item = pystac.Item(
        id=spec.id, geometry=fp[1], bbox=fp[0], datetime=spec.datetime, properties=props,
        stac_extensions=sorted(exts), collection=spec.collection or spec.modality,
    )  # fmt: skip
    for k, v in assets.items():
        item.add_asset(k, v)
    return item
