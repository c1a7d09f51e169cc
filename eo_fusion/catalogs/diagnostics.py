"""What a search leaves out, and why it found nothing: pure helpers for :mod:`.search`.

* **Skipped items.** An item of a collection the modality registry does not know, an item with a
  null geometry, or an asset without ``href`` is left out with one warning naming it and
  recorded as a :class:`SkippedItem` (``SearchResult.skipped``, for the run report). One bad item
  never aborts a search.
* **Empty results.** :func:`explain_empty` lists the causes it can detect: coordinates that
  look swapped (latitude outside ±90, or an AOI outside every collection's extent whose lat/lon
  mirror lies inside one), a reversed or future date range, a cloud limit that removed every
  item (with how many), an AOI or date range outside every collection's extent.

Coordinates are EPSG:4326 (lon, lat) throughout, as in STAC.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pystac
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry
from shapely.ops import transform as shapely_transform

from eo_fusion.catalogs.normalize import (
    MODALITIES,
    drop_assets_without_href,
    guess_modality,
)
from eo_fusion.modalities import find_modality

if TYPE_CHECKING:
    from eo_fusion.catalogs.query import SearchQuery
    from eo_fusion.catalogs.search import Catalog

log = logging.getLogger("eo_fusion.catalogs.search")

__all__ = [
    "Extent",
    "SkippedItem",
    "collection_for_modality",
    "drop_feature_problems",
    "explain_empty",
    "query_cannot_match",
    "screen_item",
]


@dataclass(frozen=True)
class SkippedItem:
    """One item (or one asset of an item) a search left out, and why."""

    id: str
    collection: str | None
    reason: str
    asset: str | None = None

    def __str__(self) -> str:
        what = f"item {self.id}" + (f" asset '{self.asset}'" if self.asset else "")
        return f"{what} (collection {self.collection!r}): {self.reason}"


def skip(
    item_id: str, collection: str | None, reason: str, asset: str | None = None
) -> SkippedItem:
    """A :class:`SkippedItem` (the search that owns the list logs it, once: diagnostic probes
    that search again must not repeat the warning)."""
    return SkippedItem(str(item_id), collection, reason, asset)


def warn_skipped(skipped: Sequence[SkippedItem]) -> None:
    """One warning per skipped item or asset."""
    for s in skipped:
        log.warning("skipped %s", s)


def drop_feature_problems(
    feature: dict[str, Any], skipped: list[SkippedItem]
) -> pystac.Item | None:
    """A STAC item dict as a pystac Item, its href-less assets removed (each recorded), or
    ``None`` when the item itself cannot be used (null geometry, invalid item)."""
    fid, coll = str(feature.get("id", "?")), feature.get("collection")
    for key in drop_assets_without_href(feature):
        skipped.append(skip(fid, coll, "asset has no 'href'", asset=key))
    if feature.get("geometry") is None:
        skipped.append(skip(fid, coll, "null geometry: the item cannot be placed on a map"))
        return None
    try:
        return pystac.Item.from_dict(feature, preserve_dict=False)
    except Exception as e:  # pystac raises several types for malformed items
        skipped.append(skip(fid, coll, f"not a valid STAC item ({type(e).__name__}: {e})"))
        return None


def screen_item(
    item: pystac.Item,
    modality: str | None,
    collections: Sequence[str],
    skipped: list[SkippedItem],
) -> bool:
    """True when ``item`` may take part in a search for ``modality``; else it is recorded.

    Without named collections, an item of *another known* modality is simply not a match (a
    folder of mixed files); one whose modality nothing can tell is skipped. With named
    collections the collection decides, unless the item says it is a different modality.
    Without a modality every item is kept (``SearchResult.normalized`` skips those it cannot
    normalise).
    """
    if collections and item.collection_id not in collections:
        return False  # not asked for (a local catalog holds every collection): no match
    if item.geometry is None:
        skipped.append(skip(item.id, item.collection_id, "null geometry"))
        return False
    own = guess_modality(item)
    if own is None and modality is not None and not collections:
        skipped.append(
            skip(
                item.id,
                item.collection_id,
                "unknown collection: the modality registry cannot tell its modality "
                f"(known: {', '.join(MODALITIES)})",
            )
        )
        return False
    if collections and modality and own is not None and own != modality:
        skipped.append(skip(item.id, item.collection_id, f"its modality is {own}, not {modality}"))
        return False
    return True


def collection_for_modality(ids: Iterable[str], modality: str) -> str | None:
    """The collection of an API that holds ``modality``: one named like the modality itself
    (an eo-fusion catalog), else the first registry collection prefix with a match (the
    registry lists the preferred collection first: ``sentinel-2-c1-l2a`` before
    ``sentinel-2-l2a``), the shortest/alphabetically first id of that prefix (GLO-30 before
    GLO-90)."""
    ids = sorted(set(ids))
    if modality in ids:
        return modality
    mdef = find_modality(modality)
    for prefix, name in mdef.collections if mdef else ():
        if name != modality:
            continue
        hits = [i for i in ids if i.lower().startswith(prefix)]
        if hits:
            return min(hits, key=lambda i: (len(i), i))
    return None


# ------------------------------------------------------------------------------------------------
# empty results
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extent:
    """Spatial bboxes (lon/lat) and time span (UTC; ``None`` = open) of a collection."""

    bboxes: tuple[tuple[float, float, float, float], ...]
    start: datetime | None = None
    end: datetime | None = None


def _utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else (dt if dt.tzinfo else dt.replace(tzinfo=UTC))


def extent_of_collection(coll: pystac.Collection) -> Extent:
    """A STAC collection's declared extent. (The first spatial bbox is the overall one and the
    others refine it: the refinements are used when there are any.)"""
    boxes = [tuple(float(v) for v in b[:2] + b[-2:]) for b in coll.extent.spatial.bboxes]
    boxes = boxes[1:] if len(boxes) > 1 else boxes
    starts = [_utc(i[0]) for i in coll.extent.temporal.intervals]
    ends = [_utc(i[1]) for i in coll.extent.temporal.intervals]
    start = None if any(s is None for s in starts) or not starts else min(starts)  # type: ignore[type-var]
    end = None if any(e is None for e in ends) or not ends else max(ends)  # type: ignore[type-var]
    return Extent(tuple(boxes), start, end)  # type: ignore[arg-type]


def extent_of_items(items: Sequence[pystac.Item]) -> Extent:
    """The extent of a local catalog's items: their bboxes and datetimes."""
    boxes = tuple(tuple(float(v) for v in it.bbox[:4]) for it in items if it.bbox)
    times = [_utc(it.datetime) for it in items if it.datetime is not None]
    return Extent(boxes, min(times) if times else None, max(times) if times else None)  # type: ignore[arg-type,type-var]


def _lat_out_of_range(aoi: BaseGeometry | None) -> bool:
    return aoi is not None and (aoi.bounds[1] < -90 or aoi.bounds[3] > 90)


def _reversed(query: SearchQuery) -> bool:
    start, end = query.datetime or (None, None)
    return bool(start and end and start > end)


def query_cannot_match(query: SearchQuery) -> bool:
    """True for queries no item can match (not sent: an API would answer 400 or nothing)."""
    return _reversed(query) or _lat_out_of_range(query.aoi)


def _query_causes(query: SearchQuery, now: datetime) -> list[str]:
    causes = []
    aoi = query.aoi
    if _lat_out_of_range(aoi):
        assert aoi is not None
        causes.append(
            f"coordinates look swapped: latitude {aoi.bounds[1]:g}..{aoi.bounds[3]:g} is outside "
            "±90 (bbox and GeoJSON are lon,lat: minlon,minlat,maxlon,maxlat)"
        )
    start, end = query.datetime or (None, None)
    if _reversed(query):
        causes.append(
            f"the date range is reversed: start {start:%Y-%m-%d} is after end {end:%Y-%m-%d}"
        )
    elif start and start > now:
        causes.append(f"the date range starts in the future ({start:%Y-%m-%d})")
    return causes


def _swap(geom: BaseGeometry) -> BaseGeometry:
    return shapely_transform(lambda x, y, z=None: (y, x), geom)


def _extent_causes(query: SearchQuery, extents: Sequence[Extent]) -> list[str]:
    causes = []
    aoi = query.aoi
    boxes = [box(*b) for e in extents for b in e.bboxes]
    if aoi is not None and boxes and not any(b.intersects(aoi) for b in boxes):
        if any(b.intersects(_swap(aoi)) for b in boxes) and not _lat_out_of_range(aoi):
            causes.append(
                "coordinates look swapped: the AOI lies outside every collection's extent but "
                "its lat/lon mirror lies inside (give lon,lat)"
            )
        else:
            shown = ", ".join(
                f"[{b[0]:g}, {b[1]:g}, {b[2]:g}, {b[3]:g}]" for e in extents for b in e.bboxes[:3]
            )
            causes.append(f"the AOI is outside every collection's extent ({shown})")
    start, end = query.datetime or (None, None)
    spans = [(e.start, e.end) for e in extents if e.start or e.end]
    if (
        spans
        and (start or end)
        and not any(
            (not end or not s or s <= end) and (not start or not e or e >= start) for s, e in spans
        )
    ):
        shown = ", ".join(f"{s:%Y-%m-%d}..{e:%Y-%m-%d}" if s and e else "open" for s, e in spans)
        causes.append(f"the date range is outside the collections' time span ({shown})")
    return causes


def explain_empty(
    query: SearchQuery,
    source: Catalog | None,
    skipped: Sequence[SkippedItem],
    *,
    now: datetime | None = None,
) -> list[str]:
    """Likely causes of a search for ``query`` finding nothing (see module doc)."""
    causes = _query_causes(query, now or datetime.now(UTC))
    if source is not None and not query_cannot_match(query):
        causes += _catalog_causes(query, source)
    if skipped:
        causes.append(
            f"{len(skipped)} item(s) or asset(s) were skipped: "
            + "; ".join(str(s) for s in skipped[:3])
            + (" ..." if len(skipped) > 3 else "")
        )
    return causes


def _catalog_causes(query: SearchQuery, source: Catalog) -> list[str]:
    """Causes that need the catalog: the cloud filter's toll, the collections' extents."""
    from dataclasses import replace

    causes: list[str] = []
    if query.max_cloud is not None:
        try:
            n = source.count_matches(replace(query, max_cloud=None))
        except Exception as e:  # diagnostics must never hide the real result
            log.debug("cloud-limit probe failed: %s", e)
            n = 0
        if n:
            causes.append(
                f"the cloud limit removed everything: {n} item(s) match without "
                f"max_cloud={query.max_cloud:g}% (items without eo:cloud_cover never pass it)"
            )
    if query.collections or (query.modality and source.spec.kind != "stac-api"):
        try:
            extents = source.collection_extents(query.collections, query.modality)
        except Exception as e:
            log.debug("collection extent look-up failed: %s", e)
            extents = []
        causes += _extent_causes(query, extents)
    return causes
