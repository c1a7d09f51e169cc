"""Batch mapping: plan tiles, run them on dask, assemble COG + STAC + QA products.

Public API: :func:`run_job`, :class:`RunSummary` and :class:`ProgressHook` (see docs/jobs.md).
Imported lazily, so that ``eo-fusion --help`` does not load dask, rasterio and pystac.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ProgressHook", "RunSummary", "run_job"]


def __getattr__(name: str) -> Any:
    if name == "ProgressHook":
        from eo_fusion.pipeline.progress import ProgressHook

        return ProgressHook
    if name in ("RunSummary", "run_job"):
        from eo_fusion.pipeline import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
