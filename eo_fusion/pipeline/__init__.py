"""Batch mapping: plan tiles, run them on dask, assemble COG + STAC + QA products.

Public API: :func:`run_job` and :class:`RunSummary` (see docs/jobs.md).
"""

from __future__ import annotations

from eo_fusion.pipeline.run import ProgressHook, RunSummary, run_job

__all__ = ["ProgressHook", "RunSummary", "run_job"]
