"""Search any catalog through one API: STAC APIs with pystac-client, local catalogs client-side.

``open_catalog(name_or_path)`` returns a :class:`Catalog`; ``Catalog.search(...)`` returns a
:class:`SearchResult` with ``.items`` (pystac ItemCollection), ``.normalized`` (NormalizedItem
list, hrefs signed where the catalog needs it and checked against its URL policy) and
``.to_geodataframe()``.

Network behaviour of STAC API searches (all bounded, all set per catalog in its YAML):

* explicit connect/read timeouts on every request;
* retries with exponential backoff on connection errors, 429 and 5xx, for GET and POST
  (``Retry-After`` honoured but capped);
* at most ``max_pages`` pages; a ``next`` link seen twice, or a page that repeats only items
  already seen, is a paging loop and raises :class:`SearchError`.

Filters: ``bbox``/``intersects``, ``datetime``, collections and ids go to the API; cloud cover and
property filters go as CQL2-JSON when the API conforms to the Filter extension, as ``query``
when it supports the Query extension, and are always re-checked client-side. Items without
``eo:cloud_cover`` do not pass a ``max_cloud`` filter (as on a STAC API).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pystac
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.catalogs.normalize import guess_modality, normalize_item
from eo_fusion.catalogs.providers import CatalogSpec, load_catalog_spec
from eo_fusion.catalogs.safety import check_url, redact_text, redact_url
from eo_fusion.config import window_text
from eo_fusion.errors import CatalogError, ConfigError, SearchError

if TYPE_CHECKING:
    from datetime import date

    from odc.geo import Geometry

    from eo_fusion.config import ModalitySpec

log = logging.getLogger(__name__)

DEFAULT_CATALOG = "sample"
_RETRY_STATUS = (429, 500, 502, 503, 504)
_MAX_RETRY_AFTER_S = 30.0  # a server asking for longer gets this, then the retry budget ends


# ------------------------------------------------------------------------------------------------
# time and space helpers (pure)
# ------------------------------------------------------------------------------------------------


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


def _iso(dt: datetime | None) -> str:
    return ".." if dt is None else dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _item_interval(item: pystac.Item) -> tuple[datetime, datetime] | None:
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


def _aoi(
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
        return _aoi(self.bbox, self.intersects)

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
            iv = _item_interval(item)
            start, end = self.datetime
            if iv is None or (start and iv[1] < start) or (end and iv[0] > end):
                return False
        if self.max_cloud is not None:
            cc = item.properties.get("eo:cloud_cover")
            if not isinstance(cc, int | float) or cc > self.max_cloud:
                return False
        return all(item.properties.get(k) == v for k, v in self.properties.items())

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


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """Items found by a search, with their normalised view.

    Attributes:
        items: the STAC items as returned (hrefs unsigned, absolute).
        query: the query that produced them.
        catalog: the catalog spec searched.
        pages: result pages read (0 for local catalogs).
        truncated: the page cap stopped the search before the API ran out of results.
    """

    items: pystac.ItemCollection
    query: SearchQuery
    catalog: CatalogSpec
    pages: int = 0
    truncated: bool = False
    signer: Callable[[str], str] | None = None

    def __len__(self) -> int:
        return len(self.items)

    @cached_property
    def normalized(self) -> list[NormalizedItem]:
        """Items as :class:`NormalizedItem` (signed hrefs, each checked by the URL policy)."""
        policy = self.catalog.url_policy()
        out = []
        for item in self.items:
            n = normalize_item(item, modality=self.query.modality, sign=self.signer)
            for b in n.bands.values():
                check_url(b.href, policy, what=f"item {n.id} asset '{b.asset_key}'")
            out.append(n)
        return out

    def to_geodataframe(self) -> Any:
        """One row per item: id, collection, datetime, cloud cover, bands, AOI share, footprint."""
        import geopandas as gpd

        aoi = self.query.aoi
        rows = []
        for item in self.items:
            # Unsigned: a summary table needs no signed URLs (no token requests).
            n = normalize_item(item, modality=self.query.modality)
            rows.append(
                {
                    "id": item.id,
                    "collection": item.collection_id,
                    "modality": n.modality,
                    "datetime": n.datetime,
                    "cloud_cover": item.properties.get("eo:cloud_cover"),
                    "bands": ",".join(k.split(":", 1)[1] for k in sorted(n.bands)),
                    "unplaced": ",".join(n.unplaced_assets),
                    "aoi_share": aoi_share(n.geometry, aoi),
                    "geometry": shape(n.geometry),
                }
            )
        cols = ["id", "collection", "modality", "datetime", "cloud_cover", "bands", "unplaced",
                "aoi_share", "geometry"]  # fmt: skip
        return gpd.GeoDataFrame(rows, columns=cols, geometry="geometry", crs="EPSG:4326")

    def __repr__(self) -> str:
        more = " (truncated by the page cap)" if self.truncated else ""
        return f"<SearchResult {self.query.modality or 'all'}: {len(self)} item(s){more}>"

    def _repr_html_(self) -> str:
        """Jupyter shows the item table (without footprints) under a one-line header."""
        table = self.to_geodataframe().drop(columns="geometry")
        header = repr(self).strip("<>")
        return f"<p><b>{header}</b></p>" + table.to_html(index=False, na_rep="–")

    def save(self, path: Path) -> Path:
        """Write the items as a FeatureCollection (``.json``) or stac-geoparquet (``.parquet``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".parquet":
            import stac_geoparquet.arrow as sga

            table = sga.parse_stac_items_to_arrow([i.to_dict() for i in self.items])
            sga.to_parquet(table, path)
        else:
            path.write_text(json.dumps(self.items.to_dict(), indent=1), encoding="utf-8")
        return path


# ------------------------------------------------------------------------------------------------
# catalogs
# ------------------------------------------------------------------------------------------------


class Catalog:
    """A searchable catalog (STAC API, static catalog or stac-geoparquet file)."""

    def __init__(self, spec: CatalogSpec) -> None:
        self.spec = spec
        self._local_items: list[pystac.Item] | None = None

    def __repr__(self) -> str:
        where = redact_url(self.spec.url) if self.spec.url else str(self.spec.path)
        return f"Catalog({self.spec.name!r}, {self.spec.kind}, {where})"

    # -- public API -------------------------------------------------------------------------------

    def search(
        self,
        modality: str | None = None,
        *,
        bbox: Sequence[float] | None = None,
        intersects: Mapping[str, Any] | None = None,
        datetime: Any = None,
        max_cloud: float | None = None,
        max_items: int | None = None,
        collections: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """Find items.

        Args:
            modality: ``s2-l2a``, ``s1-grd``, ``dem``, ... (mapped to the catalog's collections).
            bbox: (minx, miny, maxx, maxy) in EPSG:4326; or ``intersects``: a GeoJSON geometry.
            datetime: ``"2020-06-01/2020-08-31"``, ``"2020-06"``, open ``"../2021"``, a tuple.
            max_cloud: maximum ``eo:cloud_cover`` in percent.
            max_items: stop after this many items.
            collections: explicit collection ids (override the modality mapping).
            ids: only these item ids.
            properties: equality filters on item properties.
        """
        if collections:
            colls = tuple(collections)
        elif modality and self.spec.modalities:
            colls = tuple(self.spec.collections_for(modality))
        else:
            colls = ()  # ad-hoc catalog: items are matched by their own modality (below)
        if max_items is not None and max_items < 1:
            raise ConfigError(f"max_items={max_items}", fix="give a positive number")
        _aoi(bbox, intersects)  # validate early, with a clear message
        query = SearchQuery(
            collections=colls,
            bbox=tuple(bbox) if bbox is not None else None,  # type: ignore[arg-type]
            intersects=dict(intersects) if intersects is not None else None,
            datetime=parse_datetime_range(datetime),
            max_cloud=max_cloud,
            max_items=max_items,
            ids=tuple(ids or ()),
            modality=modality,
            properties=dict(properties or {}),
        )
        if self.spec.kind == "stac-api":
            items, pages, truncated = _api_search(self.spec, query)
        else:
            items, pages, truncated = self._local_search(query), 0, False
        return SearchResult(
            items=pystac.ItemCollection(items),
            query=query,
            catalog=self.spec,
            pages=pages,
            truncated=truncated,
            signer=_signer(self.spec),
        )

    # -- local ------------------------------------------------------------------------------------

    def all_items(self) -> list[pystac.Item]:
        """Every item of a local catalog (loaded once; hrefs absolute)."""
        if self._local_items is None:
            self._local_items = _load_local_items(self.spec)
        return self._local_items

    def _local_search(self, query: SearchQuery) -> list[pystac.Item]:
        found = [it for it in self.all_items() if _modality_ok(it, query) and query.matches(it)]
        found.sort(key=lambda i: (_item_interval(i) or (datetime.min.replace(tzinfo=UTC),))[0])
        return found[: query.max_items] if query.max_items else found


def _modality_ok(item: pystac.Item, query: SearchQuery) -> bool:
    # When the query named collections, those decide; otherwise the item's own modality.
    if query.collections or not query.modality:
        return True
    return guess_modality(item) == query.modality


def _load_local_items(spec: CatalogSpec) -> list[pystac.Item]:
    path = Path(spec.path or "")
    if not path.exists():
        raise CatalogError(
            f"catalog '{spec.name}': {path} does not exist",
            fix="build it with `eo-fusion catalog build` or fix 'path' in the catalog YAML",
        )
    if spec.kind == "geoparquet" or path.suffix == ".parquet":
        import pyarrow.parquet as pq
        import stac_geoparquet.arrow as sga

        items = []
        for d in sga.stac_table_to_items(pq.read_table(path)):
            for a in d.get("assets", {}).values():
                if "://" not in a["href"] and not Path(a["href"]).is_absolute():
                    a["href"] = str((path.parent / a["href"]).resolve())
            items.append(pystac.Item.from_dict(d, preserve_dict=False))
        return items
    if path.suffix == ".json" and json.loads(path.read_text()).get("type") == "FeatureCollection":
        coll = pystac.ItemCollection.from_file(str(path))
        return list(coll)
    cat = pystac.Catalog.from_file(str(path))
    items = list(cat.get_items(recursive=True))
    for it in items:
        for a in it.assets.values():
            a.href = a.get_absolute_href() or a.href
    return items


def _signer(spec: CatalogSpec) -> Callable[[str], str] | None:
    if spec.signing != "planetary-computer":
        return None
    import warnings

    with warnings.catch_warnings():
        # planetary-computer 1.0 still uses pydantic v1-style config: a DeprecationWarning on
        # import that says nothing about our use.
        warnings.simplefilter("ignore", DeprecationWarning)
        import planetary_computer

    return planetary_computer.sign  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------------
# STAC API
# ------------------------------------------------------------------------------------------------


def _retry(spec: CatalogSpec) -> Any:
    from urllib3.util.retry import Retry

    class _CappedRetry(Retry):
        def get_retry_after(self, response: Any) -> float | None:
            value = super().get_retry_after(response)
            return None if value is None else min(value, _MAX_RETRY_AFTER_S)

    return _CappedRetry(
        total=spec.retries,
        connect=spec.retries,
        read=spec.retries,
        status=spec.retries,
        backoff_factor=spec.backoff_s,
        status_forcelist=_RETRY_STATUS,
        allowed_methods=frozenset({"GET", "POST"}),  # STAC searches are POSTs; they are safe
        respect_retry_after_header=True,
        raise_on_status=True,
    )


def open_client(spec: CatalogSpec) -> Any:
    """A pystac-client Client with the catalog's timeouts and retry policy."""
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    assert spec.url
    check_url(spec.url, spec.url_policy() if spec.local else _api_policy(spec), what="catalog")
    timeout = (spec.timeout_s, spec.timeout_s)
    io = StacApiIO(timeout=timeout, max_retries=_retry(spec))
    try:
        return Client.open(spec.url, stac_io=io, timeout=timeout)
    except Exception as e:
        raise SearchError(
            f"catalog '{spec.name}': cannot open {redact_url(spec.url)}: "
            f"{redact_text(str(e))[:300]}",
            fix="check the URL and your network; the request was retried "
            f"{spec.retries} times with {spec.timeout_s:g} s timeouts",
        ) from e


def _api_policy(spec: CatalogSpec) -> Any:
    from eo_fusion.catalogs.safety import URLPolicy

    # The API root may use http only when local; hosts as declared.
    return URLPolicy(frozenset({"https"}), tuple(spec.allowed_hosts), False)


def _api_search(spec: CatalogSpec, query: SearchQuery) -> tuple[list[pystac.Item], int, bool]:
    from pystac_client import ConformanceClasses

    client = open_client(spec)
    kwargs: dict[str, Any] = {
        "collections": list(query.collections) or None,
        "ids": list(query.ids) or None,
        "bbox": list(query.bbox) if query.bbox else None,
        "intersects": query.intersects,
        "datetime": f"{_iso(query.datetime[0])}/{_iso(query.datetime[1])}"
        if query.datetime
        else None,
        "limit": min(spec.page_size, query.max_items or spec.page_size),
        "method": "POST",
    }
    cql = query.cql2()
    if cql is not None:
        if client.conforms_to(ConformanceClasses.FILTER):
            kwargs["filter"], kwargs["filter_lang"] = cql, "cql2-json"
        elif client.conforms_to(ConformanceClasses.QUERY):
            kwargs["query"] = query.query_ext()
        # else: client-side only (below)
    search = client.search(**{k: v for k, v in kwargs.items() if v is not None})
    items: list[pystac.Item] = []
    seen_next: set[str] = set()
    seen_ids: set[tuple[str | None, str]] = set()
    pages = 0
    truncated = False
    try:
        for page in search.pages_as_dicts():
            pages += 1
            feats = page.get("features", [])
            keys = [(f.get("collection"), f.get("id")) for f in feats]
            if keys and all(k in seen_ids for k in keys):
                raise SearchError(
                    f"catalog '{spec.name}': page {pages} repeats only items already seen "
                    "(paging loop)",
                    fix="report the API's broken paging; narrow the search meanwhile",
                )
            for f, k in zip(feats, keys, strict=True):
                if k in seen_ids:
                    continue  # an item repeated across pages is kept once
                seen_ids.add(k)
                it = pystac.Item.from_dict(f, preserve_dict=False)
                if _modality_ok(it, query) and query.matches(it):
                    items.append(it)
            if query.max_items and len(items) >= query.max_items:
                items = items[: query.max_items]
                break
            nxt = next((ln for ln in page.get("links", []) if ln.get("rel") == "next"), None)
            if nxt is None:
                break
            token = json.dumps([nxt.get("href"), nxt.get("body")], sort_keys=True, default=str)
            if token in seen_next:
                raise SearchError(
                    f"catalog '{spec.name}': the API sent the same 'next' link twice "
                    f"({redact_url(str(nxt.get('href')))}): paging loop",
                    fix="report the API's broken paging; narrow the search meanwhile",
                )
            seen_next.add(token)
            if pages >= spec.max_pages:
                truncated = True
                log.warning(
                    "catalog %s: stopped after %d pages (max_pages); results are incomplete",
                    spec.name,
                    pages,
                )
                break
    except SearchError:
        raise
    except Exception as e:
        raise SearchError(
            f"catalog '{spec.name}': search failed at page {pages + 1}: "
            f"{type(e).__name__}: {redact_text(str(e))[:300]}",
            fix=f"retry later; {spec.retries} retries with backoff were already made "
            f"(timeouts {spec.timeout_s:g} s)",
        ) from e
    return items, pages, truncated


# ------------------------------------------------------------------------------------------------
# opening
# ------------------------------------------------------------------------------------------------


def open_catalog(name_or_path: str | Path | None = None) -> Catalog:
    """Open a catalog by name (``catalogs/<name>.yaml``; default ``sample``), catalog YAML,
    static ``catalog.json``, folder containing one, ``.parquet`` file, or STAC API URL."""
    target = DEFAULT_CATALOG if name_or_path is None else name_or_path
    text = str(target)
    if text.startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        host = urlsplit(text).hostname or ""
        local = host in ("127.0.0.1", "localhost", "::1")
        spec = CatalogSpec(
            name=host or "api",
            kind="stac-api",
            url=text,
            local=local,
            allowed_schemes=["https", "s3"] + (["http"] if local else []),
        )
        return Catalog(spec)
    p = Path(text)
    if p.is_dir():
        for cand in (p / "catalog.json", p / "stac" / "catalog.json"):
            if cand.is_file():
                p = cand
                break
    if p.is_file() and p.suffix in (".json", ".parquet"):
        kind: Literal["geoparquet", "static"] = "geoparquet" if p.suffix == ".parquet" else "static"
        return Catalog(
            CatalogSpec(name=p.parent.name or "local", kind=kind, path=p.resolve(), local=True)
        )
    return Catalog(load_catalog_spec(target))


# ------------------------------------------------------------------------------------------------
# per-modality search (map jobs, stacks, training scenes)
# ------------------------------------------------------------------------------------------------


def search_modalities(
    catalog: Catalog,
    modalities: Mapping[str, ModalitySpec],
    *,
    aoi: Geometry,
    window: tuple[date | None, date | None],
    on_result: Callable[[str, SearchResult], None] | None = None,
) -> dict[str, list[NormalizedItem]]:
    """Search ``catalog`` once per modality over an AOI and a time window.

    The one search rule of map jobs, ``eo-fusion stack``, the API and training scenes: items
    intersecting the AOI polygon (not only its bounding box), acquired within the window's days,
    with each modality's ``max_cloud`` and ``collections``.

    Args:
        catalog: the catalog.
        modalities: modality name -> its options.
        aoi: the AOI (any CRS; searched as EPSG:4326 GeoJSON).
        window: (first day, last day), inclusive; ``None`` = open. Resolve relative windows
            first (``TimeSpec.resolve(run_date)``).
        on_result: called with each modality's :class:`SearchResult` (pages, truncation).

    Returns:
        modality -> normalised items, in the catalog's order (possibly empty).
    """
    intersects = aoi.to_crs("EPSG:4326").json
    when = window_text(window) if any(window) else None
    out: dict[str, list[NormalizedItem]] = {}
    for modality, spec in modalities.items():
        result = catalog.search(
            modality,
            intersects=intersects,
            datetime=when,
            max_cloud=spec.max_cloud,
            collections=spec.collections or None,
        )
        out[modality] = list(result.normalized)
        log.info("search %s: %d item(s)", modality, len(out[modality]))
        if on_result is not None:
            on_result(modality, result)
    return out


__all__ = [
    "Catalog",
    "SearchQuery",
    "SearchResult",
    "aoi_share",
    "open_catalog",
    "parse_datetime_range",
    "search_modalities",
]
