"""The inputs of a job: its catalog searched once per modality over the job's AOI and window.

The I/O edge of planning, shared by ``eo-fusion map`` (:func:`~eo_fusion.pipeline.run.run_job`),
``eo-fusion stack`` and the API, so that a ``last_days`` window or an AOI means the same in each.
The search rule itself is :func:`eo_fusion.catalogs.search.search_modalities` (training scenes use
it too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import JobSpec, window_text
from eo_fusion.errors import JobError
from eo_fusion.pipeline.plan import JobArea


def search_job(
    job: JobSpec, area: JobArea, info: dict[str, dict[str, Any]] | None = None
) -> dict[str, list[NormalizedItem]]:
    """Items of every modality of ``job`` over ``area`` (``plan.job_area(job, run_date)``).

    ``info`` (if given) receives, per modality, what the search did: ``items``, ``pages`` and
    ``truncated`` (the page cap stopped it: the catalog holds more than was seen) and the items
    with assets the band registry could not place (``unplaced``: item id -> asset keys).
    """
    from eo_fusion.catalogs import open_catalog
    from eo_fusion.catalogs.search import SearchResult, search_modalities

    def note(modality: str, result: SearchResult) -> None:
        if info is None:
            return
        unplaced = {n.id: list(n.unplaced_assets) for n in result.normalized if n.unplaced_assets}
        info[modality] = {
            "items": len(result),
            "pages": result.pages,
            "truncated": bool(result.truncated),
            "unplaced": unplaced,
        }

    catalog = open_catalog(job.catalog)
    return search_modalities(
        catalog, job.modalities, aoi=area.aoi, window=area.window, on_result=note
    )


def search_issues(search: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per search problem: truncated searches, assets the registry could not place."""
    out = []
    for m, s in sorted(search.items()):
        if s.get("truncated"):
            out.append(
                f"{m}: the search was truncated by the page cap after {s.get('pages')} page(s) "
                f"({s.get('items')} item(s) kept; the catalog holds more)"
            )
        for item_id, keys in sorted(s.get("unplaced", {}).items()):
            out.append(f"{m} item {item_id}: asset(s) {', '.join(keys)} not used (unplaced)")
    return out


def require_items(
    job: JobSpec, area: JobArea, items: Mapping[str, Sequence[NormalizedItem]]
) -> None:
    """Refuse a search that found nothing for some modality (every tile would fail alike).

    Raises:
        JobError: names the modalities, the catalog and the window.
    """
    empty = [m for m in job.modalities if not items.get(m)]
    if empty:
        raise JobError(
            f"job {job.name}: the catalog {job.catalog!r} has no items for "
            f"{', '.join(empty)} over the AOI in {window_text(area.window)}",
            fix="check the time window (and --run-date for last_days), the AOI and max_cloud",
        )
