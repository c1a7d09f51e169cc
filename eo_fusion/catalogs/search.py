"""Search any catalog through one API: STAC APIs with pystac-client, local catalogs client-side.

``open_catalog(name_or_path)`` returns a :class:`Catalog`; ``Catalog.search(...)`` returns a
:class:`SearchResult` with ``.items`` (pystac ItemCollection), ``.normalized`` (NormalizedItem
list, hrefs signed where the catalog needs it and checked against its URL policy) and
``.to_geodataframe()``.

Network behaviour of STAC API searches (all bounded, all set per catalog in its YAML):

* explicit connect/read timeouts on every request;
* retries with exponential backoff on connection errors, 429 and 5xx, for GET and POST
  (``Retry-After`` honoured but capped);
* at most ``max_pages`` pages and ``item_cap`` items (the result is then marked ``truncated``
  and a warning logged); a ``next`` link seen twice, or a page that repeats only items already
  seen, is a paging loop and raises :class:`SearchError`;
* one overall deadline per search (``search_deadline_s``: all pages, retries and trickling
  bodies included), on top of the per-request timeouts;
* every request goes through :class:`~eo_fusion.catalogs.http.PolicySession`: the root URL,
  every link the API returns (``search``, ``next``, ``self``) and every redirect hop are checked
  by :func:`api_policy` before they are followed (declared hosts only, or the API's own host).

Filters: ``bbox``/``intersects``, ``datetime``, collections and ids go to the API; cloud cover and
property filters go as CQL2-JSON when the API conforms to the Filter extension, as ``query``
when it supports the Query extension, and are always re-checked client-side. Items without
``eo:cloud_cover`` do not pass a ``max_cloud`` filter (as on a STAC API).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pystac
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from eo_fusion.catalogs import diagnostics
from eo_fusion.catalogs.diagnostics import SkippedItem, drop_feature_problems, screen_item
from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.catalogs.normalize import guess_modality, normalize_item
from eo_fusion.catalogs.providers import CatalogSpec, load_catalog_spec
from eo_fusion.catalogs.safety import (
    URLPolicy,
    catalog_roots,
    check_url,
    redact_text,
    redact_url,
)
from eo_fusion.config import window_text
from eo_fusion.errors import CatalogError, ConfigError, EOFusionError, SearchError, UnsafeURLError
from eo_fusion.retry import DeadlineError, classify, find_cause

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
        skipped: items (or assets) left out, each with the reason (unknown collection, null
            geometry, asset without href, not normalisable); each was logged once as a
            warning. For the run report.
    """

    items: pystac.ItemCollection
    query: SearchQuery
    catalog: CatalogSpec
    pages: int = 0
    truncated: bool = False
    signer: Callable[[str], str] | None = None
    skipped: list[SkippedItem] = field(default_factory=list)
    source: Catalog | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.items)

    @cached_property
    def normalized(self) -> list[NormalizedItem]:
        """Items as :class:`NormalizedItem` (signed hrefs, each checked by the URL policy)."""
        policy = self.catalog.url_policy()
        out = []
        for item in self.items:
            try:
                n = normalize_item(item, modality=self.query.modality, sign=self.signer)
            except CatalogError as e:
                s = diagnostics.skip(item.id, item.collection_id, str(e))
                diagnostics.warn_skipped([s])
                self.skipped.append(s)
                continue
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
            try:
                n = normalize_item(item, modality=self.query.modality)
            except CatalogError as e:
                if not any(s.id == item.id for s in self.skipped):
                    s = diagnostics.skip(item.id, item.collection_id, str(e))
                    diagnostics.warn_skipped([s])
                    self.skipped.append(s)
                continue
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

    def explain_empty(self) -> list[str]:
        """Likely causes of an empty result, as sentences ([] when items were found).

        Checks the query itself (swapped coordinates, reversed or future dates), then asks the
        catalog: how many items the cloud limit removed, whether the AOI and dates lie inside
        the collections' extents. Catalog look-ups that fail are left out, never raised.
        """
        if len(self):
            return []
        return diagnostics.explain_empty(self.query, self.source, self.skipped)

    def require_items(self) -> SearchResult:
        """``self`` when it holds items, else :class:`EmptySearchError` with the likely causes."""
        if len(self):
            return self
        what = self.query.modality or ",".join(self.query.collections) or "items"
        err = empty_search_error({what: self}, f"catalog '{self.catalog.name}'")
        assert err is not None
        raise err

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
        colls = self._collections_for(modality, collections)
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
        skipped: list[SkippedItem] = []
        items, pages, truncated = self._run_query(query, skipped)
        diagnostics.warn_skipped(skipped)
        result = SearchResult(
            items=pystac.ItemCollection(items),
            query=query,
            catalog=self.spec,
            pages=pages,
            truncated=truncated,
            signer=_signer(self.spec),
            skipped=skipped,
            source=self,
        )
        if not items:
            self._warn_empty(result)
        return result

    def _warn_empty(self, result: SearchResult) -> None:
        """Log an empty search with its likely causes (a search that finds nothing is no error)."""
        log.warning(
            "search %s in catalog %s: 0 items. Likely causes: %s",
            result.query.modality or ",".join(result.query.collections) or "items",
            self.spec.name,
            "; ".join(result.explain_empty()) or "none detected",
        )

    def _collections_for(
        self, modality: str | None, collections: Sequence[str] | None
    ) -> tuple[str, ...]:
        """The collections a search asks for: explicit ones, else the modality's."""
        if collections:
            return tuple(collections)
        if modality and self.spec.modalities:
            return tuple(self.spec.collections_for(modality))
        if modality and self.spec.kind == "stac-api":
            return self._api_collections_for(modality)  # catalog given by URL: ask the API
        return ()  # ad-hoc catalog: items are matched by their own modality

    def _run_query(
        self, query: SearchQuery, skipped: list[SkippedItem]
    ) -> tuple[list[pystac.Item], int, bool]:
        """``(items, pages read, truncated by the page cap)`` from the catalog's backend."""
        if diagnostics.query_cannot_match(query):
            return [], 0, False  # reversed dates / |lat| > 90: not sent
        if self.spec.kind == "stac-api":
            return _api_search(self.spec, query, skipped)
        return self._local_search(query, skipped), 0, False

    # -- what empty-result diagnostics ask --------------------------------------------------------

    def count_matches(self, query: SearchQuery, limit: int = 1000) -> int:
        """How many items match ``query`` (at most ``limit``; one API page for STAC APIs)."""
        if self.spec.kind == "stac-api":
            probe = replace(query, max_items=min(limit, self.spec.page_size))
            return len(_api_search(self.spec, probe, [])[0])
        return len(self._local_search(replace(query, max_items=limit), []))

    def collection_extents(
        self, collections: Sequence[str], modality: str | None = None
    ) -> list[diagnostics.Extent]:
        """Spatial bboxes and time span of the collections (local: of their items)."""
        if self.spec.kind == "stac-api":
            client = open_client(self.spec)
            return [diagnostics.extent_of_collection(client.get_collection(c)) for c in collections]
        probe = SearchQuery(collections=tuple(collections), modality=modality)
        found = [it for it in self.all_items() if _modality_ok(it, probe) and probe.matches(it)]
        return [diagnostics.extent_of_items(found)] if found else []

    def _api_collections_for(self, modality: str) -> tuple[str, ...]:
        """The API's collection for ``modality`` (by the registry's collection ids), so that a
        catalog given only by URL filters on the server, not on the client."""
        try:
            ids = [c.id for c in open_client(self.spec).get_collections()]
        except Exception as e:  # a listing failure must not stop the search itself
            log.info("catalog %s: cannot list collections (%s)", self.spec.name, e)
            return ()
        chosen = diagnostics.collection_for_modality(ids, modality)
        if not chosen:
            log.warning(
                "catalog %s lists no collection the registry knows for %s; filtering every "
                "collection's items on the client (pass collections= to choose)",
                self.spec.name,
                modality,
            )
            return ()
        log.info("catalog %s: modality %s -> collection %s", self.spec.name, modality, chosen)
        return (chosen,)

    # -- local ------------------------------------------------------------------------------------

    def all_items(self) -> list[pystac.Item]:
        """Every item of a local catalog (loaded once; hrefs absolute)."""
        if self._local_items is None:
            self._local_items = _load_local_items(self.spec)
        return self._local_items

    def _local_search(self, query: SearchQuery, skipped: list[SkippedItem]) -> list[pystac.Item]:
        found = [
            it
            for it in self.all_items()
            if screen_item(it, query.modality, query.collections, skipped)
            and _modality_ok(it, query)
            and query.matches(it)
        ]
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
            drop_feature_problems(d, [])  # assets without href: warned about here
            for a in d.get("assets", {}).values():
                if "://" not in a["href"] and not Path(a["href"]).is_absolute():
                    a["href"] = str((path.parent / a["href"]).resolve())
            items.append(pystac.Item.from_dict(d, preserve_dict=False))
        return items
    if path.suffix == ".json" and json.loads(path.read_text()).get("type") == "FeatureCollection":
        coll = pystac.ItemCollection.from_file(str(path))
        return list(coll)
    # Child and item links of a static catalog are followed through the catalog's policy: a
    # hostile catalog.json cannot make pystac fetch an internal URL or a file outside its roots.
    try:
        cat = pystac.Catalog.from_file(str(path), stac_io=_checked_stac_io(spec))
        items = list(cat.get_items(recursive=True))
    except Exception as e:
        refused = find_cause(e, UnsafeURLError)
        if refused is not None:
            raise refused from e  # pystac wraps it in "does not resolve to a STAC object"
        raise
    for it in items:
        for a in it.assets.values():
            a.href = a.get_absolute_href() or a.href
    return items


def _checked_stac_io(spec: CatalogSpec) -> pystac.StacIO:
    from pystac.stac_io import DefaultStacIO

    policy = spec.url_policy()

    class _CheckedStacIO(DefaultStacIO):
        def read_text_from_href(self, href: str) -> str:
            policy.check(href, what=f"catalog '{spec.name}' link")
            return str(super().read_text_from_href(href))

    return _CheckedStacIO()


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


def _stac_io(spec: CatalogSpec) -> Any:
    """pystac-client I/O whose every request, link and redirect goes through the API policy."""
    from pystac_client.stac_api_io import StacApiIO

    from eo_fusion.catalogs.http import PolicySession

    policy = api_policy(spec)

    class _CheckedStacApiIO(StacApiIO):
        def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
            # Links (search, next, self...) are checked before pystac-client follows them, also
            # the ones it would open as local files.
            href = source.to_dict()["href"] if hasattr(source, "to_dict") else str(source)
            policy.check(str(href), what=f"catalog '{spec.name}' link")
            return str(super().read_text(source, *args, **kwargs))

    timeout = (spec.timeout_s, spec.timeout_s)
    io = _CheckedStacApiIO(timeout=timeout, max_retries=None)
    io.session = PolicySession(policy, what=f"catalog '{spec.name}'", max_retries=_retry(spec))
    return io


def open_client(spec: CatalogSpec, io: Any = None) -> Any:
    """A pystac-client Client with the catalog's timeouts, retry policy and URL policy."""
    from pystac_client import Client

    assert spec.url
    check_url(spec.url, api_policy(spec), what=f"catalog '{spec.name}'")
    io = io or _stac_io(spec)
    try:
        return Client.open(spec.url, stac_io=io, timeout=(spec.timeout_s, spec.timeout_s))
    except Exception as e:
        raise _search_error(spec, e, f"cannot open {redact_url(spec.url)}") from e


def api_policy(spec: CatalogSpec) -> URLPolicy:
    """The policy for a STAC API's root URL and every link it returns: https (http too when the
    catalog is declared local), and only the declared hosts, or the API's own host when the
    catalog declares none. Local files are never followed."""
    from urllib.parse import urlsplit

    hosts = tuple(spec.allowed_hosts) or (urlsplit(spec.url or "").hostname or "",)
    schemes = frozenset({"https", "http"} if spec.local else {"https"})
    return URLPolicy(schemes, hosts, spec.local, ())


def _search_error(spec: CatalogSpec, e: BaseException, where: str) -> EOFusionError:
    """The error to raise for a failed API request: the policy's own refusal, a deadline, or a
    SearchError whose fix fits the cause."""
    refused = find_cause(e, UnsafeURLError)
    if refused is not None:
        return refused
    if find_cause(e, DeadlineError) is not None:
        return SearchError(
            f"catalog '{spec.name}': {where}: the search ran past its overall deadline of "
            f"{spec.search_deadline_s:g} s",
            fix="the API is too slow or trickling data; retry later or raise "
            "'search_deadline_s' in the catalog YAML",
        )
    verdict = classify(e)
    retried = (
        f"{spec.retries} retries with backoff were already made (timeouts {spec.timeout_s:g} s)"
    )
    if verdict.transient:
        fix = f"retry later; {retried}"
    elif verdict.reason.startswith("http 4"):
        fix = (
            f"the API refused the request ({verdict.reason}): check the catalog URL, the "
            "collection ids and any credentials"
        )
    else:
        fix = verdict.fix
    return SearchError(
        f"catalog '{spec.name}': {where}: {type(e).__name__}: {redact_text(str(e))[:300]}",
        fix=fix,
    )


def _page_items(
    feats: list[dict[str, Any]],
    keys: list[tuple[Any, Any]],
    seen_ids: set[tuple[Any, Any]],
    query: SearchQuery,
    skipped: list[SkippedItem],
) -> list[pystac.Item]:
    """The items of one page that match ``query``; broken ones go to ``skipped``. An item
    repeated across pages is kept once."""
    out = []
    for f, k in zip(feats, keys, strict=True):
        if k in seen_ids:
            continue
        seen_ids.add(k)
        it = drop_feature_problems(f, skipped)
        if it is None or not screen_item(it, query.modality, query.collections, skipped):
            continue
        if _modality_ok(it, query) and query.matches(it):
            out.append(it)
    return out


def _api_search(
    spec: CatalogSpec, query: SearchQuery, skipped: list[SkippedItem]
) -> tuple[list[pystac.Item], int, bool]:
    from pystac_client import ConformanceClasses

    io = _stac_io(spec)
    io.session.start_deadline(spec.search_deadline_s)
    client = open_client(spec, io)
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
    pager = _Pager(spec, query, skipped)
    try:
        for page in search.pages_as_dicts():
            if not pager.take(page):
                break
    except (SearchError, UnsafeURLError):
        raise
    except Exception as e:
        raise _search_error(spec, e, f"search failed at page {pager.pages + 1}") from e
    finally:
        io.session.close()
    return pager.items, pager.pages, pager.truncated


class _Pager:
    """Collects result pages: de-duplicates items, enforces the caps, detects paging loops and
    checks each ``next`` link before pystac-client follows it."""

    def __init__(self, spec: CatalogSpec, query: SearchQuery, skipped: list[SkippedItem]) -> None:
        self.spec, self.query, self.skipped = spec, query, skipped
        self.items: list[pystac.Item] = []
        self.pages = 0
        self.truncated = False
        self._seen_next: set[str] = set()
        self._seen_ids: set[tuple[Any, Any]] = set()

    def take(self, page: dict[str, Any]) -> bool:
        """Add one page; False when the search should stop here."""
        self.pages += 1
        self._add_features(page.get("features", []))
        spec, query = self.spec, self.query
        if query.max_items and len(self.items) >= query.max_items:
            self.items = self.items[: query.max_items]
            return False
        if len(self.items) >= spec.item_cap:
            self.items, self.truncated = self.items[: spec.item_cap], True
            log.warning(
                "catalog %s: stopped at %d items (item_cap); results are incomplete",
                spec.name,
                spec.item_cap,
            )
            return False
        nxt = next((ln for ln in page.get("links", []) if ln.get("rel") == "next"), None)
        if nxt is None:
            return False
        self._check_next(nxt)
        if self.pages >= spec.max_pages:
            self.truncated = True
            log.warning(
                "catalog %s: stopped after %d pages (max_pages); results are incomplete",
                spec.name,
                self.pages,
            )
            return False
        return True

    def _add_features(self, feats: list[dict[str, Any]]) -> None:
        keys = [(f.get("collection"), f.get("id")) for f in feats]
        if keys and all(k in self._seen_ids for k in keys):
            raise SearchError(
                f"catalog '{self.spec.name}': page {self.pages} repeats only items already seen "
                "(paging loop)",
                fix="report the API's broken paging; narrow the search meanwhile",
            )
        self.items += _page_items(feats, keys, self._seen_ids, self.query, self.skipped)

    def _check_next(self, nxt: dict[str, Any]) -> None:
        name = self.spec.name
        check_url(str(nxt.get("href")), api_policy(self.spec), what=f"catalog '{name}' next link")
        token = json.dumps([nxt.get("href"), nxt.get("body")], sort_keys=True, default=str)
        if token in self._seen_next:
            raise SearchError(
                f"catalog '{name}': the API sent the same 'next' link twice "
                f"({redact_url(str(nxt.get('href')))}): paging loop",
                fix="report the API's broken paging; narrow the search meanwhile",
            )
        self._seen_next.add(token)


# ------------------------------------------------------------------------------------------------
# opening
# ------------------------------------------------------------------------------------------------


def open_catalog(
    name_or_path: str | Path | None = None,
    *,
    roots: Sequence[str | Path] | None = None,
) -> Catalog:
    """Open a catalog by name (``catalogs/<name>.yaml``; default ``sample``), catalog YAML,
    static ``catalog.json``, folder containing one, ``.parquet`` file, or STAC API URL.

    A catalog opened by file path is *not* declared local: its local asset files must lie in its
    own folder (see :func:`~eo_fusion.catalogs.safety.catalog_roots`) or in ``roots``, and its
    remote hrefs get the public rules. A STAC API URL on a loopback host counts as declared local
    (the user typed it); any other URL does not.
    """
    target = DEFAULT_CATALOG if name_or_path is None else name_or_path
    text = str(target)
    extra_roots = [Path(r).resolve() for r in roots or ()]
    if text.startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        from eo_fusion.catalogs.safety import normalize_host

        host = normalize_host(urlsplit(text).hostname or "")
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
        own = [Path(r) for r in catalog_roots(p)]
        spec = CatalogSpec(
            name=p.parent.name or "local",
            kind=kind,
            path=p.resolve(),
            local=False,
            allowed_schemes=["file", "https", "s3", "gs", "az"],
            roots=own + extra_roots,
        )
        return Catalog(spec)
    spec = load_catalog_spec(target)
    if extra_roots:
        spec = spec.model_copy(update={"roots": [*spec.roots, *extra_roots]})
    return Catalog(spec)


# ------------------------------------------------------------------------------------------------
# per-modality search (map jobs, stacks, training scenes)
# ------------------------------------------------------------------------------------------------


def search_modality_results(
    catalog: Catalog,
    modalities: Mapping[str, ModalitySpec],
    *,
    aoi: Geometry,
    window: tuple[date | None, date | None],
) -> dict[str, SearchResult]:
    """Search ``catalog`` once per modality over an AOI and a time window.

    The one search rule of map jobs, ``eo-fusion stack``, the API and training scenes: items
    intersecting the AOI polygon (not only its bounding box), acquired within the window's days,
    with each modality's ``max_cloud``, ``collections`` and registry search properties (e.g. the
    S1 orbit filters).

    Args:
        catalog: the catalog.
        modalities: modality name -> its options.
        aoi: the AOI (any CRS; searched as EPSG:4326 GeoJSON).
        window: (first day, last day), inclusive; ``None`` = open. Resolve relative windows
            first (``TimeSpec.resolve(run_date)``).

    Returns:
        modality -> its :class:`SearchResult` (items in the catalog's order, skipped items,
        truncation and the diagnostics of an empty result).
    """
    from eo_fusion.modalities import search_properties

    intersects = aoi.to_crs("EPSG:4326").json
    when = window_text(window) if any(window) else None
    out: dict[str, SearchResult] = {}
    for modality, spec in modalities.items():
        out[modality] = result = catalog.search(
            modality,
            intersects=intersects,
            datetime=when,
            max_cloud=spec.max_cloud,
            collections=spec.collections or None,
            properties=search_properties(modality, spec.options),
        )
        log.info("search %s: %d item(s), %d skipped", modality, len(result), len(result.skipped))
    return out


def search_modalities(
    catalog: Catalog,
    modalities: Mapping[str, ModalitySpec],
    *,
    aoi: Geometry,
    window: tuple[date | None, date | None],
) -> dict[str, list[NormalizedItem]]:
    """Normalised items per modality of :func:`search_modality_results` (possibly empty)."""
    results = search_modality_results(catalog, modalities, aoi=aoi, window=window)
    return {m: list(r.normalized) for m, r in results.items()}


class EmptySearchError(SearchError):
    """A search that a job needs found nothing; the message names the modality and the likely
    causes (exit code 1, like every job that cannot run on the data it was given)."""


def empty_search_error(
    results: Mapping[str, SearchResult], who: str, where: str = ""
) -> EmptySearchError | None:
    """One error for every modality in ``results`` that found nothing (``None``: all found
    items), e.g. ``who`` = "job x: the catalog 'sample'", ``where`` = "over the AOI in ..."."""
    empty = {m: r for m, r in results.items() if not len(r)}
    if not empty:
        return None
    parts = [
        f"{m} ({'; '.join(r.explain_empty()) or 'no cause detected'})" for m, r in empty.items()
    ]
    return EmptySearchError(
        f"{who} has no items for {', '.join(parts)}" + (f" {where}" if where else ""),
        fix="fix what the causes name (AOI lon/lat order, dates, max_cloud), check the time "
        "window (and --run-date for last_days), or drop the modality",
    )


__all__ = [
    "Catalog",
    "EmptySearchError",
    "SearchQuery",
    "SearchResult",
    "aoi_share",
    "empty_search_error",
    "open_catalog",
    "parse_datetime_range",
    "search_modalities",
]
