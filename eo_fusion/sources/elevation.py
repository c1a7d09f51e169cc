"""Elevation: DEM/DSM/DTM rasters or a lidar point cloud, plus nDSM, slope and aspect.

* Rasters are warped bilinearly (average when ≥ 2x coarser); values in metres.
* A point cloud (item modality ``lidar``, asset ending ``.las``/``.laz``) becomes a DSM: highest
  return per cell (:mod:`eo_fusion.sources.lidar`).
* DTM holes (bare-earth models have no data under buildings) are filled by inverse-distance
  interpolation from the surrounding ground (``rasterio.fill.fillnodata``, search distance
  ``options.fill_distance_px``, :class:`eo_fusion.modalities.ElevationOptions`); the number of
  filled pixels is recorded.
* ``elevation:ndsm`` = DSM - DTM (height above ground, metres; small negative values from
  interpolation noise are kept, not clipped). A provider's nDSM is replaced by this when both
  DSM and DTM are present, so the three layers are consistent.
* Point clouds without a CRS in their header take it from ``options.crs``, the item's
  ``proj:wkt2``/``proj:code``/``proj:epsg``, or a ``crs_wkt`` sidecar asset.
* ``elevation:slope`` (degrees from horizontal) and ``elevation:aspect`` (degrees clockwise from
  north, the direction the slope faces; NaN on flat ground) come from the terrain surface: DTM,
  else DEM, else DSM. They need a projected grid in metres.
* The vertical datum the heights refer to (:func:`vertical_datum_of`: the items'
  ``eo_fusion:vertical_datum``, e.g. ``EGM2008`` for the Copernicus DEM, else the vertical part
  of an asset's compound CRS) is kept in the result's ``vertical_datum`` attribute; the stack
  writers put it into the COG (tag and compound CRS) and the map products' STAC items. Heights
  are not converted between datums: items on different datums are mosaicked as they are, with
  a warning and ``vertical_datum: "mixed: A, B"``. nDSM, slope and aspect do not depend on it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
from odc.geo.geobox import GeoBox
from rasterio.fill import fillnodata

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.catalogs.normalize import VERTICAL_DATUM_PROPERTY
from eo_fusion.config import ModalitySpec
from eo_fusion.errors import BandError, GridError
from eo_fusion.grid import grid_crs, vertical_datum
from eo_fusion.modalities import ElevationOptions
from eo_fusion.sources.common import ModalityResult, band_order, fill_missing, read_item_bands
from eo_fusion.sources.lidar import grid_points_max, read_points
from eo_fusion.sources.reader import Reader, ReadSpec

__all__ = [
    "compound_crs",
    "fill_holes",
    "load_elevation",
    "slope_aspect",
    "vertical_crs_of",
    "vertical_datum_of",
]

log = logging.getLogger(__name__)

_DERIVED = ("elevation:ndsm", "elevation:slope", "elevation:aspect")
_POINT_EXT = (".las", ".laz")


def slope_aspect(z: np.ndarray, gbox: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    """Slope and aspect in degrees from a surface ``z`` (metres) on a projected north-up grid."""
    crs = grid_crs(gbox)
    if crs.geographic:
        raise GridError(
            f"slope/aspect need a projected grid in metres, got {gbox.crs}",
            fix="use a UTM (crs: auto) or other metric grid",
        )
    axes = crs.proj.axis_info
    to_m = axes[0].unit_conversion_factor if axes else 1.0  # feet grids → metres
    res_x = abs(gbox.transform.a) * to_m
    res_y = abs(gbox.transform.e) * to_m
    if min(z.shape) < 2:  # a one-pixel-wide tile has no neighbours to difference
        nan = np.full(z.shape, np.nan, dtype=np.float32)
        return nan, nan.copy()
    dz_drow, dz_dcol = np.gradient(z.astype(np.float64))
    dz_de = dz_dcol / res_x
    dz_dn = -dz_drow / res_y  # rows run south
    slope = np.degrees(np.arctan(np.hypot(dz_de, dz_dn)))
    aspect = np.degrees(np.arctan2(-dz_de, -dz_dn)) % 360.0
    aspect[np.hypot(dz_de, dz_dn) < 1e-6] = np.nan
    return slope.astype(np.float32), aspect.astype(np.float32)


def fill_holes(z: np.ndarray, where: np.ndarray, max_distance_px: float = 100) -> np.ndarray:
    """Fill NaN pixels of ``z`` that lie inside ``where`` by inverse-distance interpolation."""
    holes = np.isnan(z) & where
    if not holes.any() or np.isnan(z).all():
        return z
    filled = fillnodata(
        np.nan_to_num(z, nan=0.0).astype(np.float32),
        mask=np.isfinite(z).astype(np.uint8),
        max_search_distance=float(max_distance_px),
    )
    out = z.copy()
    out[holes] = filled[holes]
    return out


def _point_cloud_crs(item: NormalizedItem, opts: ElevationOptions) -> str | None:
    """CRS for a point cloud whose header has none: options.crs, proj:* or a WKT sidecar."""
    if opts.crs:
        return opts.crs
    props = item.properties
    if props.get("proj:wkt2"):
        return str(props["proj:wkt2"])
    if props.get("proj:code"):
        return str(props["proj:code"])
    if props.get("proj:epsg"):
        return f"EPSG:{props['proj:epsg']}"
    wkt = item.other_assets.get("crs_wkt")
    if wkt and Path(wkt).exists():
        return Path(wkt).read_text(encoding="utf-8")
    return None


def _datum_name(name: str) -> str:
    """``EGM2008 height`` (a vertical CRS's name) and ``EGM2008`` (the STAC property) alike."""
    name = name.strip()
    return name[: -len(" height")] if name.lower().endswith(" height") else name


def _item_datum(item: NormalizedItem) -> str | None:
    declared = item.properties.get(VERTICAL_DATUM_PROPERTY)
    if declared:
        return _datum_name(str(declared))
    for asset in item.bands.values():
        found = vertical_datum(asset.crs) if asset.crs else None
        if found:
            return _datum_name(found)
    return None


def vertical_datum_of(items: Sequence[NormalizedItem]) -> str | None:
    """The vertical datum of the heights of ``items`` (``EGM2008``), None when none says;
    ``"mixed: A, B"`` (and a warning) when they disagree."""
    names = sorted({d for it in items if (d := _item_datum(it))})
    if len(names) > 1:
        log.warning(
            "elevation items %s are on different vertical datums %s: heights are mosaicked "
            "as they are, not converted",
            [it.id for it in items],
            names,
        )
        return "mixed: " + ", ".join(names)
    return names[0] if names else None


@lru_cache(maxsize=32)
def vertical_crs_of(datum: str) -> pyproj.CRS | None:
    """The EPSG vertical CRS named ``<datum> height`` or ``<datum>`` (EGM2008 -> EPSG:3855)."""
    from pyproj.database import query_crs_info
    from pyproj.enums import PJType

    wanted = {datum.lower(), f"{datum} height".lower()}
    for info in query_crs_info(auth_name="EPSG", pj_types=PJType.VERTICAL_CRS):
        if info.name.lower() in wanted:
            return pyproj.CRS.from_epsg(int(info.code))
    return None


def compound_crs(crs: Any, datum: str | None) -> pyproj.CRS | None:
    """``crs`` (horizontal) + the vertical CRS of ``datum``, or None when ``datum`` names no
    EPSG vertical CRS (or is mixed)."""
    vertical = vertical_crs_of(datum) if datum and not datum.startswith("mixed") else None
    if vertical is None:
        return None
    horizontal = pyproj.CRS.from_user_input(crs)
    return pyproj.crs.CompoundCRS(f"{horizontal.name} + {vertical.name}", [horizontal, vertical])


def _read_layers(
    items, gbox, reader, opts: ElevationOptions
) -> tuple[dict[str, np.ndarray], list[str]]:
    layers: dict[str, np.ndarray] = {}
    ids: list[str] = []

    def spec_for(asset):
        return ReadSpec(kind="elevation")

    for it in sorted(items, key=lambda i: (i.datetime, i.id)):
        ids.append(it.id)
        raster_keys = [k for k, a in it.bands.items() if not a.href.lower().endswith(_POINT_EXT)]
        if raster_keys:
            arr = read_item_bands(it, raster_keys, gbox, spec_for, reader)
            for k, a in zip(raster_keys, arr, strict=True):
                if k in layers:
                    fill_missing(layers[k], a)
                else:
                    layers[k] = a
        crs = _point_cloud_crs(it, opts)
        clouds = [
            (a.href, a.crs or crs) for a in it.bands.values() if a.href.lower().endswith(_POINT_EXT)
        ]
        clouds += [(h, crs) for h in it.other_assets.values() if h.lower().endswith(_POINT_EXT)]
        for href, pc_crs in clouds:
            dsm = grid_points_max(read_points(href, pc_crs), gbox)
            if "elevation:dsm" in layers:
                fill_missing(layers["elevation:dsm"], dsm)
            else:
                layers["elevation:dsm"] = dsm
    return layers, ids


def load_elevation(
    items: list[NormalizedItem], gbox: GeoBox, mspec: ModalitySpec, reader: Reader
) -> ModalityResult:
    """Read elevation items onto ``gbox`` and derive nDSM, slope and aspect (see module doc)."""
    opts = ElevationOptions.of(mspec.options)
    layers, ids = _read_layers(items, gbox, reader, opts)
    attrs: dict[str, Any] = {}
    if "elevation:dtm" in layers:
        dtm = layers["elevation:dtm"]
        dsm = layers.get("elevation:dsm")
        where = np.isfinite(dsm) if dsm is not None else np.ones(dtm.shape, dtype=bool)
        before = int(np.isnan(dtm).sum())
        layers["elevation:dtm"] = fill_holes(dtm, where, opts.fill_distance_px)
        attrs["dtm_filled_pixels"] = before - int(np.isnan(layers["elevation:dtm"]).sum())
    if "elevation:dsm" in layers and "elevation:dtm" in layers:
        # Computed even when a provider nDSM exists, so it is consistent with the DSM/DTM shown.
        if "elevation:ndsm" in layers:
            attrs["provider_ndsm"] = "replaced by DSM - DTM"
        layers["elevation:ndsm"] = layers["elevation:dsm"] - layers["elevation:dtm"]
    terrain = next(
        (layers[k] for k in ("elevation:dtm", "elevation:dem", "elevation:dsm") if k in layers),
        None,
    )
    if terrain is not None:
        slope, aspect = slope_aspect(terrain, gbox)
        layers["elevation:slope"], layers["elevation:aspect"] = slope, aspect
    keys = list(mspec.bands) if mspec.bands else band_order(layers)
    missing = [k for k in keys if k not in layers]
    if missing:
        raise BandError(
            f"elevation bands {missing} cannot be made from items {ids}",
            fix="ndsm needs a DSM and a DTM; slope/aspect need any surface",
        )
    data = np.stack([layers[k] for k in keys]).astype(np.float32)
    units = ["degree" if k in ("elevation:slope", "elevation:aspect") else "m" for k in keys]
    # Aspect is undefined on flat ground: that is not missing data, so it does not void validity.
    check = [i for i, k in enumerate(keys) if k != "elevation:aspect"] or [0]
    valid = np.all(np.isfinite(data[check]), axis=0)
    attrs["layers"] = keys
    datum = vertical_datum_of(items)
    if datum is not None:
        attrs["vertical_datum"] = datum
    return ModalityResult(data, valid, keys, units, gbox, None, ids, attrs)
