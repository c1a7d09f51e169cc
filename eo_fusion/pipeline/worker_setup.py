"""Run by every worker of a job's private LocalCluster when it starts (a dask worker preload).

A worker process imports torch, the model code and the readers when it starts instead of in
its first tile: with :func:`~eo_fusion.pipeline.execute.start_worker_processes` that happens
while the submitting process is still loading the model, searching and planning. Thread
workers share the submitting process's modules, which are imported already.
"""

from __future__ import annotations

from typing import Any


def dask_setup(worker: Any) -> None:
    """dask's preload hook: import the modules a tile uses (without the garbage collector,
    then frozen: :func:`eo_fusion.memory.frozen_imports`)."""
    from eo_fusion.memory import frozen_imports

    with frozen_imports():
        import torch  # noqa: F401

        import eo_fusion.models.predict
        import eo_fusion.pipeline.predictors
        import eo_fusion.stack  # noqa: F401
