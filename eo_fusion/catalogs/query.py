"""Search queries: what to look for, and the date and footprint rules every backend applies.

Pure: no I/O. Dates are inclusive UTC instants (``None`` = open); coordinates are EPSG:4326
(lon, lat). :meth:`SearchQuery.matches` is the client-side check local catalogs search with and
STAC API results are re-checked with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pystac
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from eo_fusion.catalogs.normalize import guess_modality
from eo_fusion.errors import ConfigError

__all__ = [
    "SearchQuery",
    "aoi_share",
    "iso_instant",
    "item_interval",
    "modality_ok",
    "parse_datetime_range",
    "query_aoi",
]


def _parse_instant(text: str, *, end: bool) -> datetime | None:
    text = text.strip()
    if text in ("", ".."):
        return None
    parts = text.split("-")
    try:
        if len(text) == 4:  # YYYY
            y = int(text)
            return (
                datetime(y + 1, 1, 1, tzinfo=UTC) - timedelta(microseconds=1)
                if end
                else (datetime(y, 1, 1, tzinfo=UTC))
            )
        if len(text) == 7:  # YYYY-MM
            y, m = int(parts[0]), int(parts[1])
            start = datetime(y, m, 1, tzinfo=UTC)
            if not end:
                return start
            nxt = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
            return nxt - timedelta(microseconds=1)
        if len(text) == 10:  # YYYY-MM-DD
            d = datetime.fromisoformat(text).replace(tzinfo=UTC)
            return d + timedelta(days=1, microseconds=-1) if end else d
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    except ValueError as e:
        raise ConfigError(
            f"datetime '{text}' is not ISO 8601", fix="use e.g. 2020-06-01/2020-08-31"
        ) from e


def parse_datetime_range(value: Any) -> tuple[datetime | None, datetime | None] | None:
    """``"2020-06"``, ``"2020-06-01/2020-08-31"``, ``"../2021"``, a datetime or a 2-tuple ->
    inclusive (start, end) in UTC (``None`` = open); ``None`` -> ``None``."""
    if value is None:
        return None
    if isinstance(value, datetime):
        v = value if value.tzinfo else value.replace(tzinfo=UTC)
        return v, v
    if isinstance(value, list | tuple):
        a, b = value
        s = _parse_instant(a, end=False) if isinstance(a, str) else a
        e = _parse_instant(b, end=True) if isinstance(b, str) else b
        return s, e
    text = str(value)
    if "/" in text:
        a, b = text.split("/", 1)
        return _parse_instant(a, end=False), _parse_instant(b, end=True)
    return _parse_instant(text, end=False), _parse_instant(text, end=True)


def iso_instant(dt: datetime | None) -> str:
    return ".." if dt is None else dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def item_interval(item: pystac.Item) -> tuple[datetime, datetime] | None:
    p = item.properties
    if p.get("start_datetime") and p.get("end_datetime"):
        s = _parse_instant(str(p["start_datetime"]), end=False)
        e = _parse_instant(str(p["end_datetime"]), end=True)
        if s and e:
            return s, e
    if item.datetime is not None:
        dt = item.datetime if item.datetime.tzinfo else item.datetime.replace(tzinfo=UTC)
        return dt, dt
    return None


def query_aoi(
    bbox: Sequence[float] | None, intersects: Mapping[str, Any] | BaseGeometry | None
) -> BaseGeometry | None:
    if bbox is not None and intersects is not None:
        raise ConfigError("give either bbox or intersects, not both", fix="drop one of them")
    if bbox is not None:
        if len(bbox) != 4 or bbox[0] > bbox[2] or bbox[1] > bbox[3]:
            raise ConfigError(
                f"bbox {list(bbox)} is not (minx, miny, maxx, maxy)",
                fix="give lon/lat in EPSG:4326 as minx,miny,maxx,maxy",
            )
        return box(*bbox)
    if intersects is not None:
        return intersects if isinstance(intersects, BaseGeometry) else shape(intersects)
    return None


def aoi_share(item_geometry: Mapping[str, Any], aoi: BaseGeometry | None) -> float | None:
    """Fraction (0-1) of the AOI's geodesic area covered by the item footprint (WGS84)."""
    if aoi is None or aoi.area == 0:
        return None
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    inter = shape(item_geometry).intersection(aoi)
    total = abs(geod.geometry_area_perimeter(aoi)[0])
    return (
        0.0 if inter.is_empty or total == 0 else abs(geod.geometry_area_perimeter(inter)[0]) / total
    )


def _same(value: Any, wanted: Any) -> bool:
    """Property equality; strings case-insensitively (``DESCENDING`` is ``descending``)."""
    if isinstance(value, str) and isinstance(wanted, str):
        return value.strip().lower() == wanted.strip().lower()
    return bool(value == wanted)


@dataclass(frozen=True)
class SearchQuery:
    """What to look for; all filters are ANDed. Coordinates in EPSG:4326 (lon, lat)."""

    collections: tuple[str, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    intersects: dict[str, Any] | None = None
    datetime: tuple[datetime | None, datetime | None] | None = None
    max_cloud: float | None = None
    max_items: int | None = None
    ids: tuple[str, ...] = ()
    modality: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def aoi(self) -> BaseGeometry | None:
        return query_aoi(self.bbox, self.intersects)

    def matches(self, item: pystac.Item) -> bool:
        """Client-side evaluation of every filter (used for local catalogs and as a re-check)."""
        if self.collections and item.collection_id not in self.collections:
            return False
        if self.ids and item.id not in self.ids:
            return False
        aoi = self.aoi
        if aoi is not None:
            geom = (
                shape(item.geometry) if item.geometry else (box(*item.bbox) if item.bbox else None)
            )
            if geom is None or not geom.intersects(aoi):
                return False
        if self.datetime is not None:
            iv = item_interval(item)
            start, end = self.datetime
            if iv is None or (start and iv[1] < start) or (end and iv[0] > end):
                return False
        if self.max_cloud is not None:
            cc = item.properties.get("eo:cloud_cover")
            if not isinstance(cc, int | float) or cc > self.max_cloud:
                return False
        return all(_same(item.properties.get(k), v) for k, v in self.properties.items())

    def cql2(self) -> dict[str, Any] | None:
        """The property filters as CQL2-JSON (``None`` when there are none)."""
        args: list[dict[str, Any]] = []
        if self.max_cloud is not None:
            args.append({"op": "<=", "args": [{"property": "eo:cloud_cover"}, self.max_cloud]})
        args += [{"op": "=", "args": [{"property": k}, v]} for k, v in self.properties.items()]
        if not args:
            return None
        return args[0] if len(args) == 1 else {"op": "and", "args": args}

    def query_ext(self) -> dict[str, Any] | None:
        """The property filters in the older Query-extension syntax."""
        q: dict[str, Any] = {k: {"eq": v} for k, v in self.properties.items()}
        if self.max_cloud is not None:
            q["eo:cloud_cover"] = {"lte": self.max_cloud}
        return q or None


def modality_ok(item: pystac.Item, query: SearchQuery) -> bool:
    """Whether ``item`` belongs to the query's modality."""
    # When the query named collections, those decide; otherwise the item's own modality.
    if query.collections or not query.modality:
        return True
    return guess_modality(item) == query.modality
