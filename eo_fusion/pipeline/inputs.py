"""The inputs of a job: its catalog searched once per modality over the job's AOI and window.

The I/O edge of planning, shared by ``eo-fusion map`` (:func:`~eo_fusion.pipeline.run.run_job`),
``eo-fusion stack`` and the API, so that a ``last_days`` window or an AOI means the same in each.
The search rule itself is :func:`eo_fusion.catalogs.search.search_modalities` (training scenes use
it too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import JobSpec, window_text
from eo_fusion.errors import JobError
from eo_fusion.pipeline.plan import JobArea


def search_job(job: JobSpec, area: JobArea) -> dict[str, list[NormalizedItem]]:
    """Items of every modality of ``job`` over ``area`` (``plan.job_area(job, run_date)``)."""
    from eo_fusion.catalogs import open_catalog
    from eo_fusion.catalogs.search import search_modalities

    catalog = open_catalog(job.catalog)
    return search_modalities(catalog, job.modalities, aoi=area.aoi, window=area.window)


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
