"""``run_job``: search → plan → lock → execute tiles on dask → assemble COG + STAC + QA report.

Run folder layout (``<output.dir>/<run-id>/``)::

    manifest.json            tile states, inputs, outputs, sha256, errors; provenance
    .lock                    present while a process writes the run
    tiles/r000_c000.tif      per-tile products (core only, halo cropped)
    <job>_classes.tif, ...   products (see eo_fusion.pipeline.assemble)

The run id is ``<job name>-<hash>`` of the job config and the resolved time window, so rerunning
the same job resumes the same run, while a changed job (or another run date of a ``last_days``
job) writes a new one. Only planning (:func:`~eo_fusion.pipeline.plan.plan_run`) reads the job;
the stages after it work from the frozen :class:`~eo_fusion.pipeline.plan.RunPlan`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import JobSpec
from eo_fusion.logs import get_logger
from eo_fusion.pipeline.assemble import assemble
from eo_fusion.pipeline.execute import Predictor, TileOutcome, dask_client, execute_tasks
from eo_fusion.pipeline.inputs import search_job
from eo_fusion.pipeline.manifest import RunManifest, open_manifest, provenance, run_lock
from eo_fusion.pipeline.plan import RunPlan, TileTask, describe_plan, job_area, plan_run
from eo_fusion.pipeline.progress import ProgressHook

log = get_logger(__name__)

#: Minimum seconds between manifest rewrites while tiles finish.
MANIFEST_SAVE_S = 1.0


@dataclass
class RunSummary:
    """What a run did.

    Attributes:
        run_id: the run folder's name.
        run_dir: the run folder.
        tiles_total: tiles in the plan.
        tiles_done: tiles with a verified output (computed now or reused).
        tiles_reused: tiles skipped because an earlier attempt's output verified.
        tiles_failed: tiles that failed after retries.
        failures: the failed tiles' outcomes.
        products: product name -> file.
        stac: STAC JSON files written.
        report: the Markdown report (``None`` if not written).
        seconds: wall time.
    """

    run_id: str
    run_dir: Path
    tiles_total: int = 0
    tiles_done: int = 0
    tiles_reused: int = 0
    tiles_failed: int = 0
    failures: list[TileOutcome] = field(default_factory=list)
    products: dict[str, Path] = field(default_factory=dict)
    stac: list[Path] = field(default_factory=list)
    report: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every tile succeeded and the products were written."""
        return self.tiles_failed == 0 and "classes" in self.products


def run_job(
    job: JobSpec,
    *,
    force: bool = False,
    scheduler: Any = None,
    run_date: date | None = None,
    predictor: Predictor | None = None,
    items: Mapping[str, Sequence[NormalizedItem]] | None = None,
    workers: int | None = None,
    progress: ProgressHook | None = None,
    notes: Sequence[str] = (),
) -> RunSummary:
    """Run a mapping job end to end; resumes an earlier attempt of the same run.

    Args:
        job: the validated job.
        force: recompute every tile even if an earlier attempt's output verifies.
        scheduler: an existing cluster (overrides ``job.dask.scheduler``): an address
            (``tcp://host:8786``), a connected ``distributed.Client`` or a cluster object with
            ``get_client()`` (Dask Gateway, dask-jobqueue, dask-kubernetes).
        run_date: the date a relative window (``time.last_days``) ends on; default today (UTC).
        predictor: computes tile probabilities; default: the job's model (``ModelPredictor``).
        items: search results per modality (skips the catalog search; for tests and notebooks).
        workers: LocalCluster workers (overrides ``job.dask.workers``).
        progress: receives progress events.
        notes: lines added to the report's notes.

    Returns:
        The run summary; ``summary.ok`` is False when any tile failed.

    Raises:
        LockError: another process is writing the same run.
        JobError: no items for a modality, or no tile touches the AOI.
    """
    t0 = time.perf_counter()
    progress = progress or ProgressHook()
    run_date = run_date or datetime.now(UTC).date()
    area = job_area(job, run_date)
    pred = predictor or _model_predictor(job)
    if items is None:
        progress.phase("search")
        items = search_job(job, area, require=True)  # say it once, before starting a cluster
    plan = plan_run(job, run_date, items, area=area)
    log.info("plan: %s", describe_plan(plan.tasks))
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(run_id=plan.run_id, run_dir=plan.run_dir, tiles_total=len(plan.tasks))
    with run_lock(plan.run_dir):
        manifest, todo = _start(plan, pred, force)
        summary.tiles_reused = len(plan.tasks) - len(todo)
        progress.start(len(plan.tasks), summary.tiles_reused)
        outcomes = _execute(plan, todo, pred, manifest, scheduler, workers, progress)
        summary.failures = [o for o in outcomes if not o.ok]
        summary.tiles_failed = len(summary.failures)
        summary.tiles_done = sum(manifest.tiles[t.tile_id].state == "done" for t in plan.tasks)
        if not (summary.tiles_failed and plan.on_failure == "stop"):
            progress.phase("products")
            _assemble(plan, manifest, pred, summary, notes)
    summary.seconds = time.perf_counter() - t0
    return summary


def _start(plan: RunPlan, predictor: Predictor, force: bool) -> tuple[RunManifest, list[TileTask]]:
    """Open the manifest, mark the tiles to compute and record the provenance (run locked)."""
    manifest = open_manifest(plan)
    todo = manifest.tiles_to_run(plan.tasks, plan.run_dir, force=force)
    manifest.provenance = provenance(plan, predictor.provenance())
    manifest.save(plan.run_dir)
    log.info(
        "run %s: %d tile(s), %d to compute, %d reused",
        plan.run_id,
        len(plan.tasks),
        len(todo),
        len(plan.tasks) - len(todo),
    )
    return manifest, todo


def _assemble(
    plan: RunPlan,
    manifest: RunManifest,
    predictor: Predictor,
    summary: RunSummary,
    notes: Sequence[str],
) -> None:
    """Write the products and report, then record them in the summary and the manifest."""
    built = assemble(plan, manifest, predictor.classes, reused=summary.tiles_reused, notes=notes)
    summary.products, summary.stac, summary.report = built.products, built.stac, built.report
    manifest.products = {k: str(p.relative_to(plan.run_dir)) for k, p in built.products.items()}
    manifest.save(plan.run_dir)


def _model_predictor(job: JobSpec) -> Predictor:
    from eo_fusion.pipeline.predictors import ModelPredictor

    return ModelPredictor.from_ref(job.model)


def _execute(
    plan: RunPlan,
    todo: Sequence[TileTask],
    predictor: Predictor,
    manifest: RunManifest,
    scheduler: Any,
    workers: int | None,
    progress: ProgressHook,
) -> list[TileOutcome]:
    """Run the ``todo`` tiles on dask, recording each outcome in the manifest as it arrives."""
    progress.phase("tiles")
    if not todo:
        return []
    last_save = [time.monotonic()]

    def on_outcome(outcome: TileOutcome) -> None:
        manifest.record(outcome)
        # Rewriting the manifest after every tile is O(tiles²) on big jobs: save at most once a
        # second (a tile finished since then is recomputed after a crash).
        if not outcome.ok or time.monotonic() - last_save[0] >= MANIFEST_SAVE_S:
            manifest.save(plan.run_dir)
            last_save[0] = time.monotonic()
        progress.tile_done(outcome)
        if not outcome.ok:
            log.warning("tile %s failed: %s", outcome.tile_id, outcome.error)

    dspec = plan.dask if workers is None else plan.dask.model_copy(update={"workers": workers})
    with dask_client(dspec, scheduler) as client:
        progress.phase("compute")  # the cluster is up; tiles are being submitted
        outcomes = execute_tasks(
            client,
            todo,
            predictor,
            plan.run_dir,
            wave_size=dspec.wave_size,
            retries=plan.retries,
            on_failure=plan.on_failure,
            on_outcome=on_outcome,
        )
    manifest.save(plan.run_dir)
    return outcomes
