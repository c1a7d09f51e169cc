"""``run_job``: search → plan → lock → execute tiles on dask → assemble COG + STAC + QA report.

Run folder layout (``<output.dir>/<run-id>/``)::

    manifest.json            tile states, inputs, fingerprints, outputs, sha256, errors; provenance
    .lock                    present while a process writes the run
    tiles/r000_c000.tif      per-tile products (core only, halo cropped)
    tiles/r000_c000.json     the tile's sidecar: sha256, fingerprint, input report (--reset)
    <job>_classes.tif, ...   products (see eo_fusion.pipeline.assemble)

The run id is ``<job name>-<hash>`` of the job config and the resolved time window, so rerunning
the same job resumes the same run, while a changed job (or another run date of a ``last_days``
job) writes a new one. Within a run, a tile is reused only when its file verifies and the
fingerprint of what it reads (AOI content, items and asset files, model, code version; see
:mod:`~eo_fusion.pipeline.fingerprint`) is unchanged: editing an input in place recomputes
exactly the tiles that read it. Only planning (:func:`~eo_fusion.pipeline.plan.plan_run`) reads
the job; the stages after it work from the frozen :class:`~eo_fusion.pipeline.plan.RunPlan`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.catalogs.safety import URLPolicy
from eo_fusion.config import DaskSpec, JobSpec
from eo_fusion.errors import JobError
from eo_fusion.files import remove_stale_partials, storage_errors
from eo_fusion.logs import get_logger
from eo_fusion.memory import return_freed_memory
from eo_fusion.pipeline.assemble import assemble
from eo_fusion.pipeline.execute import (
    Predictor,
    TileOutcome,
    close_unused,
    dask_client,
    execute_tasks,
    start_worker_processes,
)
from eo_fusion.pipeline.fingerprint import changes, flat_items
from eo_fusion.pipeline.input_checks import issues
from eo_fusion.pipeline.inputs import search_issues, search_job
from eo_fusion.pipeline.manifest import RunManifest, open_manifest, provenance, run_lock
from eo_fusion.pipeline.plan import (
    RunPlan,
    TileTask,
    bytes_needed,
    describe_plan,
    job_area,
    plan_run,
    submission_order,
)
from eo_fusion.pipeline.progress import ProgressHook
from eo_fusion.sources.open_files import release_files

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
        recomputed: why tiles were computed -> those tiles (``new``, ``inputs changed (...)``).
        input_issues: problems with the inputs (search, items, clouds, partial inputs, nodata).
        problem: why nothing was published although no tile failed (or none succeeded).
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
    recomputed: dict[str, list[str]] = field(default_factory=dict)
    input_issues: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when every tile succeeded and the products were written."""
        return self.tiles_failed == 0 and self.problem is None and "classes" in self.products


def run_job(
    job: JobSpec,
    *,
    force: bool = False,
    reset: bool = False,
    scheduler: Any = None,
    run_date: date | None = None,
    predictor: Predictor | None = None,
    items: Mapping[str, Sequence[NormalizedItem]] | None = None,
    workers: int | None = None,
    progress: ProgressHook | None = None,
    notes: Sequence[str] = (),
) -> RunSummary:
    """Run a mapping job end to end; resumes an earlier attempt of the same run, reusing a tile
    only when its output verifies and its input fingerprint (AOI content, items and asset
    files, model, code version) is the recorded one (the summary and report say why not).

    Args:
        job: the validated job.
        force: recompute every tile even if an earlier attempt's output verifies (an
            unreadable manifest is set aside).
        reset: set the manifest aside and rebuild it from the tile files whose checksums
            verify (recovers a corrupt ``manifest.json`` without recomputing those tiles).
        scheduler: an existing cluster (overrides ``job.dask.scheduler``): an address
            (``tcp://host:8786``), a connected ``distributed.Client`` or a cluster object with
            ``get_client()`` (Dask Gateway, dask-jobqueue, dask-kubernetes).
        run_date: the date a relative window (``time.last_days``) ends on; default today (UTC).
        predictor: computes tile probabilities; default: the job's model (``ModelPredictor``).
        items: search results per modality (skips the catalog search; for tests and notebooks).
        workers: LocalCluster workers (overrides ``job.dask.workers``).
        progress: receives progress events. notes: lines added to the report's notes.

    Returns:
        The run summary; ``summary.ok`` is False when any tile failed, no tile succeeded, or
        ``strict`` found input problems (then nothing is published).

    Raises:
        LockError: another process is writing the same run.
        JobError: no tile touches the AOI, an unreadable manifest (without ``reset`` or
            ``force``), or (``strict``) a truncated search. EmptySearchError: no items.
        CheckpointError: the model or its card does not verify.
        StorageError: the run folder cannot be written (disk full, read-only, permissions).
    """
    t0, progress = time.perf_counter(), progress or ProgressHook()
    dspec = job.dask if workers is None else job.dask.model_copy(update={"workers": workers})
    # Only for the job's own model: other predictors may need none of its imports.
    starting = start_worker_processes(dspec, scheduler) if predictor is None else None
    try:
        pred = predictor or _model_predictor(job)
        _verify(pred)  # once, here: a forged or mismatched model fails before any tile runs
        plan = _plan(job, run_date or datetime.now(UTC).date(), items, pred, progress)
        summary = RunSummary(run_id=plan.run_id, run_dir=plan.run_dir, tiles_total=len(plan.tasks))
        with run_lock(plan.run_dir):
            _run_locked(plan, pred, summary, (force, reset), (scheduler, starting), dspec,
                        progress, notes)  # fmt: skip
    finally:
        close_unused(starting)
    summary.seconds = time.perf_counter() - t0
    return summary


def _run_locked(
    plan: RunPlan,
    pred: Predictor,
    summary: RunSummary,
    force_reset: tuple[bool, bool],
    where: tuple[Any, Future[Any] | None],
    dspec: DaskSpec,
    progress: ProgressHook,
    notes: Sequence[str],
) -> None:
    """What :func:`run_job` does holding the run's lock: resume, tiles, products."""
    manifest, todo = _start(plan, pred, *force_reset, summary)
    progress.start(len(plan.tasks), summary.tiles_reused)
    outcomes = _execute(plan, todo, pred, manifest, where, dspec, progress)
    _summarise(summary, plan, manifest, outcomes)
    if summary.problem is None:
        progress.phase("products")
        _assemble(plan, manifest, pred, summary, notes)
    else:
        log.error("run %s: nothing published: %s", plan.run_id, summary.problem)


def _plan(
    job: JobSpec,
    run_date: date,
    items: Mapping[str, Sequence[NormalizedItem]] | None,
    pred: Predictor,
    progress: ProgressHook,
) -> RunPlan:
    """Search (unless ``items`` are given), plan, refuse what ``strict`` forbids, make the run
    folder: everything a run does before it takes the lock."""
    area = job_area(job, run_date)
    search: dict[str, dict[str, Any]] = {}
    if items is None:
        progress.phase("search")
        items = search_job(job, area, search, require=True)  # said once, before a cluster
    plan = plan_run(
        job, run_date, items, area=area, model=pred.provenance(), policy=_policy(job),
        search=search,
    )  # fmt: skip
    log.info("plan: %s", describe_plan(plan.tasks))
    for note in halo_notes(plan.halo, getattr(pred, "window", None)):
        log.warning("%s", note)
    if plan.strict and search_issues(plan.search):
        raise _strict_error(plan, search_issues(plan.search))
    with storage_errors(plan.run_dir):
        plan.run_dir.mkdir(parents=True, exist_ok=True)
    return plan


def _summarise(
    summary: RunSummary, plan: RunPlan, manifest: RunManifest, outcomes: Sequence[TileOutcome]
) -> None:
    summary.failures = [o for o in outcomes if not o.ok]
    summary.tiles_failed = len(summary.failures)
    summary.tiles_done = sum(manifest.tiles[t.tile_id].state == "done" for t in plan.tasks)
    summary.input_issues = run_input_issues(plan, manifest)
    summary.problem = _why_not_publish(plan, summary, outcomes)


def _verify(pred: Predictor) -> None:
    verify = getattr(pred, "verify", None)
    if verify is not None:
        verify()


def _policy(job: JobSpec) -> URLPolicy | None:
    """The catalog's URL policy (applied before fingerprinting HEAD requests)."""
    from eo_fusion.catalogs import open_catalog
    from eo_fusion.errors import EOFusionError

    try:
        return open_catalog(job.catalog).spec.url_policy()
    except (EOFusionError, OSError) as e:  # items given without a usable catalog (tests, API)
        log.warning(
            "catalog %r cannot be opened (%s): asset HEAD requests follow the default URL "
            "policy (public HTTPS hosts only)", job.catalog, e,
        )  # fmt: skip
        return URLPolicy()


def _strict_error(plan: RunPlan, problems: Sequence[str]) -> JobError:
    shown = "; ".join(problems[:5]) + (f"; … (+{len(problems) - 5})" if len(problems) > 5 else "")
    return JobError(
        f"job {plan.job_name} (strict): {len(problems)} input problem(s): {shown}",
        fix="fix the inputs (search window, max_cloud, catalog, nodata), or set strict: false "
        "to publish with these problems listed in the report",
    )


def _why_not_publish(
    plan: RunPlan, summary: RunSummary, outcomes: Sequence[TileOutcome]
) -> str | None:
    """Why the products must not be written (``None``: write them)."""
    if summary.tiles_failed and plan.on_failure == "stop":
        return "a tile failed and on_failure is stop"
    fatal = next((o for o in outcomes if o.fatal), None)
    if fatal is not None:
        return f"the run folder cannot be written: {fatal.error}"
    if summary.tiles_done == 0:
        return f"no tile succeeded ({summary.tiles_failed} failed): no product or STAC Item"
    if plan.strict and summary.input_issues:
        return str(_strict_error(plan, summary.input_issues))
    return None


def run_input_issues(plan: RunPlan, manifest: RunManifest) -> list[str]:
    """Every input problem of the run: the search's, skipped items, then each tile's."""
    out = search_issues(plan.search)
    for m, ids in sorted(plan.skipped_items.items()):
        out += [f"{m} item {i} skipped: {why}" for i, why in sorted(ids.items())]
    for t in plan.tasks:
        rec = manifest.tiles.get(t.tile_id)
        if rec is not None and rec.state == "done" and rec.input_report:
            out += [f"tile {t.tile_id}: {line}" for line in issues(rec.input_report)]
    return out


def _explain(plan: RunPlan, manifest: RunManifest, old_prov: Mapping[str, Any],
             todo: Sequence[tuple[TileTask, str]]) -> dict[str, list[str]]:  # fmt: skip
    """Why each tile is computed, grouped: reason -> tile ids (inputs changed: which ones)."""
    old_items = flat_items(old_prov.get("inputs", {}).get("items", {}))
    new_items = flat_items(plan.prints.to_dict()["items"]) if plan.prints else {}
    out: dict[str, list[str]] = {}
    for task, why in todo:
        if why == "inputs changed":
            rec = manifest.tiles[task.tile_id]
            what = changes(rec.parts, plan.tile_parts[task.tile_id], old_items, new_items)
            why = f"inputs changed ({'; '.join(what)})"
        out.setdefault(why, []).append(task.tile_id)
    return out


def _start(
    plan: RunPlan, predictor: Predictor, force: bool, reset: bool, summary: RunSummary
) -> tuple[RunManifest, list[TileTask]]:
    """Open the manifest, clear stale temporaries, mark the tiles to compute, record the
    provenance (run locked)."""
    removed = remove_stale_partials(plan.run_dir)
    if removed:
        log.info("removed %d stale temporary file(s) of a killed run", len(removed))
    manifest = open_manifest(plan, reset=reset, force=force)
    old_prov = dict(manifest.provenance)
    todo = manifest.resume(plan.tasks, plan.run_dir, force=force)
    summary.recomputed = _explain(plan, manifest, old_prov, todo)
    summary.tiles_reused = len(plan.tasks) - len(todo)
    manifest.provenance = provenance(plan, predictor.provenance())
    manifest.save(plan.run_dir)
    log.info(
        "run %s: %d tile(s), %d to compute, %d reused",
        plan.run_id,
        len(plan.tasks),
        len(todo),
        summary.tiles_reused,
    )
    for why, tiles in summary.recomputed.items():
        log.info("recomputed %d tile(s): %s", len(tiles), why)
    return manifest, submission_order([t for t, _ in todo])


def _assemble(
    plan: RunPlan,
    manifest: RunManifest,
    predictor: Predictor,
    summary: RunSummary,
    notes: Sequence[str],
) -> None:
    """Write the products and report, then record them in the summary and the manifest."""
    need = bytes_needed(plan, 0, len(predictor.classes))
    with storage_errors(plan.run_dir, need):
        notes = [*notes, *halo_notes(plan.halo, getattr(predictor, "window", None))]
        built = assemble(
            plan, manifest, predictor.classes, reused=summary.tiles_reused, notes=notes,
            recomputed=summary.recomputed, input_issues=summary.input_issues,
        )  # fmt: skip
    summary.products, summary.stac, summary.report = built.products, built.stac, built.report
    manifest.products = {k: str(p.relative_to(plan.run_dir)) for k, p in built.products.items()}
    manifest.save(plan.run_dir)


def halo_notes(halo: int, window: int | None) -> list[str]:
    """A warning (for the log and the report) when the halo is narrower than the model's
    windows need: tiles then see NaN instead of their neighbours' pixels near their edges."""
    if window is None or halo >= window - 1:
        return []
    return [
        f"grid.halo is {halo} px, less than the model's window - 1 ({window - 1} px): windows "
        "near tile edges see no data beyond the halo, so the map depends on the tile size; "
        f"set grid.halo: {window - 1} or more"
    ]


def _model_predictor(job: JobSpec) -> Predictor:
    from eo_fusion.pipeline.predictors import ModelPredictor

    return ModelPredictor.from_ref(job.model)


def _row_release(todo: Sequence[TileTask]) -> Callable[[str], None]:
    """A callback for each finished tile that closes this process's pooled source files when
    a whole row of tiles is done.

    Why: tiles run row by row, and tiles running in this process (threads) keep the decoded
    blocks of their files in GDAL's cache until the files close; closing them once a row is
    done keeps the cache to about the rows in flight instead of growing with the AOI (the next
    row decodes again the few blocks it shares with the row above). With worker processes
    this process reads nothing and the call does nothing. The heap the finished tiles freed
    is given back to the OS at the same time (:func:`~eo_fusion.memory.return_freed_memory`).
    """
    row_of = {t.tile_id: t.tile.row for t in todo}
    left = Counter(row_of.values())

    def done(tile_id: str) -> None:
        row = row_of.get(tile_id)
        if row is None:
            return
        left[row] -= 1
        if left[row] == 0:
            release_files()
            return_freed_memory()

    return done


def _execute(
    plan: RunPlan,
    todo: Sequence[TileTask],
    predictor: Predictor,
    manifest: RunManifest,
    where: tuple[Any, Future[Any] | None],
    dspec: DaskSpec,
    progress: ProgressHook,
) -> list[TileOutcome]:
    """Run the ``todo`` tiles on dask, recording each outcome in the manifest as it arrives.

    ``where``: the caller's scheduler (or ``None``) and the private cluster being started for
    the run (or ``None``); ``dspec``: the job's dask section with ``--workers`` applied.
    """
    progress.phase("tiles")
    if not todo:
        return []
    last_save = [time.monotonic()]
    need = bytes_needed(plan, len(todo), len(predictor.classes))
    row_done = _row_release(todo)

    def on_outcome(outcome: TileOutcome) -> None:
        row_done(outcome.tile_id)
        manifest.record(outcome, plan.tile_parts.get(outcome.tile_id))
        # Rewriting the manifest after every tile is O(tiles²) on big jobs: save at most once a
        # second (a tile finished since then is recomputed after a crash).
        if not outcome.ok or time.monotonic() - last_save[0] >= MANIFEST_SAVE_S:
            manifest.save(plan.run_dir, need)
            last_save[0] = time.monotonic()
        progress.tile_done(outcome)
        if not outcome.ok:
            log.warning("tile %s failed: %s", outcome.tile_id, outcome.error)

    with dask_client(dspec, *where) as client:
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
            needed_bytes=need,
        )
    # Tiles that ran in this process (threads) left their source files open, with their
    # decoded blocks in GDAL's cache: free them, and the heap the tiles left, before the
    # products are mosaicked.
    release_files()
    return_freed_memory()
    manifest.save(plan.run_dir)
    return outcomes
