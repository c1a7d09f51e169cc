"""Search any catalog through one API: STAC APIs with pystac-client, local catalogs client-side.

``open_catalog(name_or_path)`` returns a :class:`Catalog`; ``Catalog.search(...)`` returns a
:class:`SearchResult` with ``.items`` (pystac ItemCollection), ``.normalized`` (NormalizedItem
list, hrefs signed where the catalog needs it and checked against its URL policy) and
``.to_geodataframe()``.

Backends: :mod:`~eo_fusion.catalogs.stac_api` (STAC APIs, bounded and policy-checked) and
:mod:`~eo_fusion.catalogs.static` (local files); queries in :mod:`~eo_fusion.catalogs.query`,
results in :mod:`~eo_fusion.catalogs.results`.

Filters: ``bbox``/``intersects``, ``datetime``, collections and ids go to the API; cloud cover and
property filters go as CQL2-JSON when the API conforms to the Filter extension, as ``query``
when it supports the Query extension, and are always re-checked client-side. Items without
``eo:cloud_cover`` do not pass a ``max_cloud`` filter (as on a STAC API).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pystac

from eo_fusion.catalogs import diagnostics
from eo_fusion.catalogs.diagnostics import SkippedItem, screen_item
from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.catalogs.providers import CatalogSpec, load_catalog_spec
from eo_fusion.catalogs.query import (
    SearchQuery,
    item_interval,
    modality_ok,
    parse_datetime_range,
    query_aoi,
)
from eo_fusion.catalogs.results import SearchResult
from eo_fusion.catalogs.safety import catalog_roots, redact_url
from eo_fusion.catalogs.stac_api import api_search, open_client
from eo_fusion.catalogs.static import load_items
from eo_fusion.config import window_text
from eo_fusion.errors import ConfigError

if TYPE_CHECKING:
    from datetime import date

    from odc.geo import Geometry

    from eo_fusion.config import ModalitySpec

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CATALOG",
    "Catalog",
    "open_catalog",
    "search_modalities",
    "search_modality_results",
]

DEFAULT_CATALOG = "sample"


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
        query_aoi(bbox, intersects)  # validate early, with a clear message
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
            return api_search(self.spec, query, skipped)
        return self._local_search(query, skipped), 0, False

    # -- what empty-result diagnostics ask --------------------------------------------------------

    def count_matches(self, query: SearchQuery, limit: int = 1000) -> int:
        """How many items match ``query`` (at most ``limit``; one API page for STAC APIs)."""
        if self.spec.kind == "stac-api":
            probe = replace(query, max_items=min(limit, self.spec.page_size))
            return len(api_search(self.spec, probe, [])[0])
        return len(self._local_search(replace(query, max_items=limit), []))

    def collection_extents(
        self, collections: Sequence[str], modality: str | None = None
    ) -> list[diagnostics.Extent]:
        """Spatial bboxes and time span of the collections (local: of their items)."""
        if self.spec.kind == "stac-api":
            client = open_client(self.spec)
            return [diagnostics.extent_of_collection(client.get_collection(c)) for c in collections]
        probe = SearchQuery(collections=tuple(collections), modality=modality)
        found = [it for it in self.all_items() if modality_ok(it, probe) and probe.matches(it)]
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
            self._local_items = load_items(self.spec)
        return self._local_items

    def _local_search(self, query: SearchQuery, skipped: list[SkippedItem]) -> list[pystac.Item]:
        found = [
            it
            for it in self.all_items()
            if screen_item(it, query.modality, query.collections, skipped)
            and modality_ok(it, query)
            and query.matches(it)
        ]
        found.sort(key=lambda i: (item_interval(i) or (datetime.min.replace(tzinfo=UTC),))[0])
        return found[: query.max_items] if query.max_items else found


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
