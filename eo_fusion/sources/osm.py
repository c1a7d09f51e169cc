"""OpenStreetMap from a local ``.osm.pbf`` extract (read offline with pyrosm), rasterised.

Channels (all cover fractions 0-1 of each grid cell, computed by rasterising at ``supersample``
x finer resolution and averaging, so a cell half covered by a building reads 0.5):

=====================  ====================================================================
``osm:buildings``      building footprints (any ``building=*``)
``osm:roads_major``    ``highway`` motorway, trunk, primary, secondary (and ``*_link``),
                       lines buffered to ``widths.roads_major`` (default 12 m)
``osm:roads_minor``    tertiary, residential, unclassified, service, living_street, road,
                       track, buffered to ``widths.roads_minor`` (default 6 m); paths,
                       footways, steps and cycleways are not roads here
``osm:water``          ``natural=water``, ``water=*``, ``waterway=riverbank``, ``landuse``
                       reservoir/basin polygons, waterway lines buffered to 5 m
``osm:landuse_<v>``    ``landuse=<v>`` polygons (e.g. ``osm:landuse_residential``)
=====================  ====================================================================

:func:`osm_features` returns the same features as a GeoDataFrame (columns ``layer``, ``class``,
``geometry``, EPSG:4326) and :func:`write_geoparquet` stores them as GeoParquet.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from odc.geo.geobox import GeoBox
from rasterio.features import rasterize

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import ModalitySpec
from eo_fusion.errors import BandError, ReadError
from eo_fusion.grid import grid_crs, refine
from eo_fusion.modalities import OSMOptions, RoadWidths
from eo_fusion.sources.common import ModalityResult
from eo_fusion.sources.reader import Reader

__all__ = ["MAJOR_ROADS", "MINOR_ROADS", "load_osm", "osm_features", "rasterise_features"]

MAJOR_ROADS = frozenset(
    ["motorway", "trunk", "primary", "secondary"]
    + [f"{c}_link" for c in ("motorway", "trunk", "primary", "secondary")]
)
MINOR_ROADS = frozenset(
    (
        "tertiary",
        "tertiary_link",
        "residential",
        "unclassified",
        "service",
        "living_street",
        "road",
        "track",
    )
)
_WATER_LANDUSE = ("reservoir", "basin")


def osm_features(pbf: str | Path, bbox: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
    """Buildings, roads, water and land use inside ``bbox`` (lon/lat) of a local PBF extract."""
    from pyrosm import OSM

    path = str(pbf)
    if not Path(path).exists():
        raise ReadError(f"OSM extract {path} not found", fix="download a .osm.pbf (Geofabrik)")
    with warnings.catch_warnings():
        # pyrosm warns about relations cut by the box and about pandas internals: not actionable.
        warnings.simplefilter("ignore")
        osm = OSM(path, bounding_box=list(bbox))
        parts = []
        b = osm.get_buildings()
        if b is not None and len(b):
            parts.append(_frame(b, "buildings", b.get("building")))
        n = osm.get_network(network_type="all")
        if n is not None and len(n):
            hw = n["highway"].astype(str)
            parts.append(_frame(n[hw.isin(MAJOR_ROADS)], "roads_major", hw[hw.isin(MAJOR_ROADS)]))
            parts.append(_frame(n[hw.isin(MINOR_ROADS)], "roads_minor", hw[hw.isin(MINOR_ROADS)]))
        lu = osm.get_landuse()
        if lu is not None and len(lu):
            parts.append(_frame(lu, "landuse", lu["landuse"]))
        w = osm.get_data_by_custom_criteria(
            custom_filter={"natural": ["water"], "water": True, "waterway": True},
            filter_type="keep",
            keep_nodes=False,
        )
        if w is not None and len(w):
            parts.append(_frame(w, "water", w.get("natural")))
    parts = [p for p in parts if len(p)]
    if not parts:
        return gpd.GeoDataFrame({"layer": [], "class": []}, geometry=[], crs="EPSG:4326")
    out = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs="EPSG:4326")
    return out[out.geometry.notna() & ~out.geometry.is_empty].reset_index(drop=True)


def _frame(gdf, layer: str, classes) -> gpd.GeoDataFrame:
    cls = classes.astype(str).values if classes is not None else np.full(len(gdf), layer)
    return gpd.GeoDataFrame(
        {"layer": layer, "class": cls}, geometry=gdf.geometry.values, crs="EPSG:4326"
    )


def write_geoparquet(features: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write features as GeoParquet (atomically: temp file, then rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    features.to_parquet(tmp)
    tmp.replace(path)
    return path


def _cover(geoms, gbox: GeoBox, supersample: int) -> np.ndarray:
    fine = refine(gbox, supersample)
    h, w = gbox.shape.yx
    if len(geoms) == 0:
        return np.zeros((h, w), dtype=np.float32)
    burn = rasterize(
        ((g, 1) for g in geoms), out_shape=fine.shape.yx, transform=fine.transform, dtype="uint8"
    )
    return burn.reshape(h, supersample, w, supersample).mean(axis=(1, 3)).astype(np.float32)


def rasterise_features(
    features: gpd.GeoDataFrame,
    gbox: GeoBox,
    keys: list[str],
    *,
    supersample: int = 4,
    widths: dict[str, float] | None = None,
) -> np.ndarray:
    """Cover fraction per key (see module table) → ``(band, y, x)`` float32 in [0, 1]."""
    widths = {**RoadWidths().model_dump(), **(widths or {})}
    local = features.to_crs(grid_crs(gbox).to_wkt()) if len(features) else features
    out = np.zeros((len(keys), *gbox.shape.yx), dtype=np.float32)
    for i, key in enumerate(keys):
        layer = key.split(":", 1)[1]
        if layer == "buildings":
            sel = local[local["layer"] == "buildings"].geometry
        elif layer in ("roads_major", "roads_minor"):
            sel = local[local["layer"] == layer].geometry.buffer(widths[layer] / 2)
        elif layer == "water":
            polys = local[(local["layer"] == "water") & local.geom_type.str.contains("Polygon")]
            lines = local[(local["layer"] == "water") & local.geom_type.str.contains("Line")]
            lu = local[(local["layer"] == "landuse") & local["class"].isin(_WATER_LANDUSE)]
            sel = pd.concat(
                [polys.geometry, lines.geometry.buffer(widths["waterway"] / 2), lu.geometry]
            )
        elif layer.startswith("landuse_"):
            sel = local[(local["layer"] == "landuse") & (local["class"] == layer[8:])].geometry
        else:
            raise BandError(f"unknown OSM channel {key!r}", fix="see docs/stacks.md (OSM)")
        geoms = [g for g in sel if g is not None and not g.is_empty]
        out[i] = _cover(geoms, gbox, supersample)
    return out


def _pbf_of(item: NormalizedItem) -> str:
    for href in list(item.other_assets.values()) + [a.href for a in item.bands.values()]:
        if href.lower().endswith(".pbf"):
            return href
    raise ReadError(f"OSM item {item.id} has no .osm.pbf asset", fix="add the extract's path")


def load_osm(
    items: list[NormalizedItem], gbox: GeoBox, mspec: ModalitySpec, reader: Reader
) -> ModalityResult:
    """Rasterise OSM features of the items' extracts onto ``gbox`` (see module doc)."""
    del reader  # PBF extracts are read locally by pyrosm: vectors, not pixels
    opts = OSMOptions.of(mspec.options)
    minx, miny, maxx, maxy = gbox.geographic_extent.boundingbox
    bbox = (minx, miny, maxx, maxy)
    feats = pd.concat([osm_features(_pbf_of(i), bbox) for i in items], ignore_index=True)
    feats = gpd.GeoDataFrame(feats, geometry="geometry", crs="EPSG:4326")
    if mspec.bands:
        keys = list(mspec.bands)
    else:
        landuse = sorted(set(feats.loc[feats["layer"] == "landuse", "class"]))
        keys = ["osm:buildings", "osm:roads_major", "osm:roads_minor", "osm:water"] + [
            f"osm:landuse_{v}" for v in landuse if v.replace("_", "").isalnum()
        ]
    data = rasterise_features(
        feats,
        gbox,
        keys,
        supersample=opts.supersample,
        widths=opts.widths.model_dump(),
    )
    attrs = {"features": len(feats), "supersample": opts.supersample}
    valid = np.ones(gbox.shape.yx, dtype=bool)
    return ModalityResult(
        data, valid, keys, ["fraction"] * len(keys), gbox, None, [i.id for i in items], attrs
    )
