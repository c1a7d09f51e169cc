"""The inputs of a job: its catalog searched once per modality over the job's AOI and window.

The I/O edge of planning, shared by ``eo-fusion map`` (:func:`~eo_fusion.pipeline.run.run_job`),
``eo-fusion stack`` and the API, so that a ``last_days`` window or an AOI means the same in each.
The search rule itself is :func:`eo_fusion.catalogs.search.search_modalities` (training scenes use
it too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import JobSpec, window_text
from eo_fusion.pipeline.plan import JobArea, Window

if TYPE_CHECKING:
    from odc.geo import Geometry

    from eo_fusion.catalogs.results import SearchResult


def search_job(
    job: JobSpec,
    area: JobArea,
    info: dict[str, dict[str, Any]] | None = None,
    *,
    require: bool = False,
) -> dict[str, list[NormalizedItem]]:
    """Items of every modality of ``job`` over ``area`` (``plan.job_area(job, run_date)``);
    see :func:`search_window` for ``info`` and ``require``."""
    return search_window(job, area.aoi, area.window, info, require=require)


def search_window(
    job: JobSpec,
    aoi: Geometry,
    window: Window,
    info: dict[str, dict[str, Any]] | None = None,
    *,
    require: bool = False,
) -> dict[str, list[NormalizedItem]]:
    """Items of every modality of ``job`` over ``aoi`` (any CRS) within ``window`` (resolved
    first and last day, inclusive); training and embedding jobs, which plan their own AOI, use it.

    ``info`` (if given) receives, per modality, what the search did: ``items``, ``pages``,
    ``truncated`` (a cap stopped it: the catalog holds more than was seen), ``skipped`` (item
    id -> why) and the items with assets the band registry could not place (``unplaced``: item
    id -> asset keys).

    With ``require`` (the map job: every tile would fail alike), a modality that found nothing
    raises one :class:`~eo_fusion.catalogs.results.EmptySearchError` naming every such modality
    and the likely causes it can detect (swapped coordinates, reversed dates, the cloud limit,
    an AOI outside the collections), before any cluster starts.
    """
    from eo_fusion.catalogs import open_catalog
    from eo_fusion.catalogs.results import empty_search_error
    from eo_fusion.catalogs.search import search_modality_results

    catalog = open_catalog(job.catalog)
    results = search_modality_results(catalog, job.modalities, aoi=aoi, window=window)
    if info is not None:
        info.update({m: _search_info(r) for m, r in results.items()})
    if require:
        who = f"job {job.name}: the catalog {job.catalog!r}"
        where = f"over the AOI in {window_text(window)}"
        if (err := empty_search_error(results, who, where)) is not None:
            raise err
    return {m: list(r.normalized) for m, r in results.items()}


def _search_info(result: SearchResult) -> dict[str, Any]:
    unplaced = {n.id: list(n.unplaced_assets) for n in result.normalized if n.unplaced_assets}
    return {
        "items": len(result),
        "pages": result.pages,
        "truncated": bool(result.truncated),
        "skipped": [str(s) for s in result.skipped],
        "unplaced": unplaced,
    }


def search_issues(search: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per search problem: truncated searches, skipped items, unplaced assets."""
    out = []
    for m, s in sorted(search.items()):
        if s.get("truncated"):
            out.append(
                f"{m}: the search was truncated by the page cap after {s.get('pages')} page(s) "
                f"({s.get('items')} item(s) kept; the catalog holds more)"
            )
        out += [f"{m}: skipped {what}" for what in s.get("skipped", [])]
        for item_id, keys in sorted(s.get("unplaced", {}).items()):
            out.append(f"{m} item {item_id}: asset(s) {', '.join(keys)} not used (unplaced)")
    return out
