"""OpenStreetMap from a local extract, rasterised: ``.osm.pbf``, ``.osm`` XML, ``.osm.bz2``/``.gz``.

Extracts are read with pyosmium (libosmium, the OSM project's C++ library): it decodes PBF and
(compressed) XML alike, resolves node locations and assembles multipolygon relations into
proper polygons with holes (libosmium's area assembler).

Clipped extracts reference nodes and member ways that are not in the file. A way with a missing
node, and a multipolygon relation that cannot be assembled (a missing member way, a member with
a missing node, an unclosed ring), is **dropped**, never drawn from the nodes that remain; the
numbers dropped are logged (one warning per extract) and reported in
``GeoDataFrame.attrs`` (``dropped_ways``, ``dropped_relations``) and in the stack attrs.

Channels (all cover fractions 0-1 of each grid cell, computed by rasterising at ``supersample``
x finer resolution and averaging, so a cell half covered by a building reads 0.5):

=====================  ====================================================================
``osm:buildings``      building footprints (any ``building=*`` but ``no``): closed ways and
                       multipolygon relations
``osm:roads_major``    ``highway`` motorway, trunk, primary, secondary (and ``*_link``),
                       lines buffered to ``widths.roads_major`` (default 12 m)
``osm:roads_minor``    tertiary, residential, unclassified, service, living_street, road,
                       track, buffered to ``widths.roads_minor`` (default 6 m); paths,
                       footways, steps and cycleways are not roads here
``osm:water``          ``natural=water``, ``water=*``, ``waterway=riverbank``/``dock`` and
                       ``landuse`` reservoir/basin polygons, other waterway lines buffered to
                       ``widths.waterway`` (default 5 m)
``osm:landuse_<v>``    ``landuse=<v>`` polygons (e.g. ``osm:landuse_residential``)
=====================  ====================================================================

:func:`osm_features` returns the same features as a GeoDataFrame (columns ``layer``, ``class``,
``geometry``, EPSG:4326) and :func:`write_geoparquet` stores them as GeoParquet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from odc.geo.geobox import GeoBox
from rasterio.features import rasterize

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import ModalitySpec
from eo_fusion.errors import BandError, ReadError
from eo_fusion.grid import grid_crs, refine
from eo_fusion.modalities import OSMOptions, RoadWidths
from eo_fusion.sources.common import ModalityResult
from eo_fusion.sources.reader import Reader

__all__ = [
    "MAJOR_ROADS",
    "MINOR_ROADS",
    "OSMExtract",
    "load_osm",
    "osm_features",
    "rasterise_features",
    "read_extract",
]

log = logging.getLogger(__name__)

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
_WATER_AREAS = frozenset({"riverbank", "dock"})  # waterway values that are polygons
_OSM_NAMES = (".osm.pbf", ".pbf", ".osm", ".osm.bz2", ".osm.gz")
_MP_TYPES = frozenset({"multipolygon", "boundary"})


@dataclass(frozen=True)
class OSMExtract:
    """Every feature of one extract (EPSG:4326) and what had to be dropped.

    Attributes:
        features: columns ``layer``, ``class``, ``geometry``.
        dropped_ways: tagged ways with a node missing from the file.
        dropped_relations: tagged multipolygon relations that could not be assembled.
    """

    features: gpd.GeoDataFrame
    dropped_ways: int
    dropped_relations: int


def _polygon_layers(tags: Any) -> Iterator[tuple[str, str]]:
    """(layer, class) of the polygon layers an object's tags put it in."""
    building = tags.get("building")
    if building and building != "no":
        yield "buildings", building
    landuse = tags.get("landuse")
    if landuse:
        yield "landuse", landuse
    natural, water, waterway = tags.get("natural"), tags.get("water"), tags.get("waterway")
    if natural == "water" or water or waterway in _WATER_AREAS:
        yield "water", str(natural or water or waterway)


def _line_layers(tags: Any) -> Iterator[tuple[str, str]]:
    """(layer, class) of the line layers of a way's tags (roads, waterway lines)."""
    highway = tags.get("highway")
    if highway in MAJOR_ROADS:
        yield "roads_major", highway
    elif highway in MINOR_ROADS:
        yield "roads_minor", highway
    waterway = tags.get("waterway")
    if waterway and waterway not in _WATER_AREAS:
        yield "water", waterway


def _check_readable(path: Path) -> None:
    if not path.is_file():
        raise ReadError(
            f"OSM extract {path} not found", fix="download an extract (.osm.pbf, .osm, .osm.bz2)"
        )
    if not path.name.lower().endswith(_OSM_NAMES):
        raise ReadError(
            f"{path}: not named like an OSM extract",
            fix="name it .osm.pbf, .osm, .osm.bz2 or .osm.gz after its format",
        )


class _Collector:
    """Rows and counts gathered while pyosmium streams an extract."""

    def __init__(self) -> None:
        import osmium

        self.wkb = osmium.geom.WKBFactory()
        self.rows: list[tuple[str, str, bytes]] = []
        self.dropped_ways = 0
        self.candidates: set[int] = set()
        self.assembled: set[int] = set()

    def way(self, way: Any) -> None:
        lines = list(_line_layers(way.tags))
        polys = list(_polygon_layers(way.tags)) if way.is_closed() else []
        if not (lines or polys):
            return
        if not all(n.location.valid() for n in way.nodes):
            self.dropped_ways += 1  # clipped: drawing the rest would distort it
            return
        if lines and len(way.nodes) >= 2:
            geom = bytes.fromhex(self.wkb.create_linestring(way))
            self.rows += [(layer, cls, geom) for layer, cls in lines]

    def relation(self, rel: Any) -> None:
        if rel.tags.get("type") in _MP_TYPES and any(True for _ in _polygon_layers(rel.tags)):
            self.candidates.add(rel.id)

    def area(self, area: Any) -> None:
        polys = list(_polygon_layers(area.tags))
        if not polys:
            return
        if not area.from_way():
            self.assembled.add(area.orig_id())
        geom = bytes.fromhex(self.wkb.create_multipolygon(area))
        self.rows += [(layer, cls, geom) for layer, cls in polys]


def _parse(path: Path) -> OSMExtract:
    import osmium

    col = _Collector()
    kinds = osmium.osm.WAY | osmium.osm.AREA | osmium.osm.RELATION
    fp = (
        osmium.FileProcessor(str(path))
        .with_locations()
        .with_areas()
        .with_filter(osmium.filter.EntityFilter(kinds))
    )
    obj: Any
    try:
        for obj in fp:
            if obj.is_area():
                col.area(obj)
            elif obj.is_way():
                col.way(obj)
            elif obj.is_relation():
                col.relation(obj)
    except RuntimeError as e:  # libosmium: bad compression, XML or PBF structure
        raise ReadError(f"{path}: not a readable OSM extract ({e})", fix="check the file") from e
    layers, classes, geoms = zip(*col.rows, strict=True) if col.rows else ((), (), ())
    gdf = gpd.GeoDataFrame(
        {"layer": list(layers), "class": list(classes)},
        geometry=shapely.from_wkb(list(geoms)) if geoms else [],
        crs="EPSG:4326",
    )
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty].reset_index(drop=True)
    dropped_rel = len(col.candidates - col.assembled)
    if col.dropped_ways or dropped_rel:
        log.warning(
            "%s: dropped %d way(s) with nodes missing from the extract and %d multipolygon "
            "relation(s) that could not be assembled (clipped extract?)",
            path, col.dropped_ways, dropped_rel,
        )  # fmt: skip
    return OSMExtract(gdf, col.dropped_ways, dropped_rel)


@lru_cache(maxsize=4)
def _cached(path: str, size: int, mtime_ns: int) -> OSMExtract:
    del size, mtime_ns  # cache key only: a changed file is read again
    return _parse(Path(path))


def read_extract(path: str | Path) -> OSMExtract:
    """Every feature of an extract (see module doc); cached per file (path, size, mtime).

    Raises:
        ReadError: missing file, a name that is no OSM format, or an unreadable file.
    """
    p = Path(path).resolve()
    _check_readable(p)
    st = p.stat()
    return _cached(str(p), st.st_size, st.st_mtime_ns)


def osm_features(path: str | Path, bbox: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
    """Buildings, roads, water and land use intersecting ``bbox`` (lon/lat) of an extract.

    ``attrs`` of the result: ``dropped_ways`` and ``dropped_relations`` of the whole extract.
    """
    ext = read_extract(path)
    feats = ext.features
    if len(feats):
        idx = feats.sindex.query(shapely.box(*bbox), predicate="intersects")
        feats = feats.iloc[np.sort(idx)].reset_index(drop=True)
    out = gpd.GeoDataFrame(feats.copy(), geometry="geometry", crs="EPSG:4326")
    out.attrs = {"dropped_ways": ext.dropped_ways, "dropped_relations": ext.dropped_relations}
    return out


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


def _extract_of(item: NormalizedItem) -> str:
    for href in list(item.other_assets.values()) + [a.href for a in item.bands.values()]:
        if href.lower().endswith(_OSM_NAMES):
            return href
    raise ReadError(
        f"OSM item {item.id} has no OSM extract asset (.osm.pbf, .osm, .osm.bz2, .osm.gz)",
        fix="add the extract's path to the item",
    )


def load_osm(
    items: list[NormalizedItem], gbox: GeoBox, mspec: ModalitySpec, reader: Reader
) -> ModalityResult:
    """Rasterise OSM features of the items' extracts onto ``gbox`` (see module doc)."""
    del reader  # extracts are read locally by pyosmium: vectors, not pixels
    opts = OSMOptions.of(mspec.options)
    minx, miny, maxx, maxy = gbox.geographic_extent.boundingbox
    bbox = (minx, miny, maxx, maxy)
    parts = [osm_features(_extract_of(i), bbox) for i in items]
    feats = gpd.GeoDataFrame(
        pd.concat(parts, ignore_index=True), geometry="geometry", crs="EPSG:4326"
    )
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
    attrs = {
        "features": len(feats),
        "supersample": opts.supersample,
        # Of the whole extracts: what a clipped extract lacked (never drawn; see module doc).
        "dropped_ways": sum(int(p.attrs["dropped_ways"]) for p in parts),
        "dropped_relations": sum(int(p.attrs["dropped_relations"]) for p in parts),
    }
    valid = np.ones(gbox.shape.yx, dtype=bool)
    return ModalityResult(
        data, valid, keys, ["fraction"] * len(keys), gbox, None, [i.id for i in items], attrs
    )
