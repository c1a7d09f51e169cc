"""What a search found: the items, their normalised view, what was skipped and why none matched."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pystac
from shapely.geometry import shape

from eo_fusion.catalogs import diagnostics
from eo_fusion.catalogs.diagnostics import SkippedItem
from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.catalogs.normalize import normalize_item
from eo_fusion.catalogs.providers import CatalogSpec
from eo_fusion.catalogs.query import SearchQuery, aoi_share
from eo_fusion.catalogs.safety import check_url
from eo_fusion.errors import CatalogError, SearchError

if TYPE_CHECKING:
    from eo_fusion.catalogs.search import Catalog

__all__ = ["EmptySearchError", "SearchResult", "empty_search_error"]


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
