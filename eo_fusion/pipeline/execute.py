"""Running TileTasks on dask (a LocalCluster or an existing scheduler) in bounded waves.

* **Where**: :func:`dask_client` opens a LocalCluster sized by :class:`~eo_fusion.config.DaskSpec`
  or connects to an existing scheduler by address (``tcp://host:8786``). On a remote cluster the
  run folder must be on a filesystem the workers share with the client (they write tile files).
* **Bounded memory**: :func:`execute_tasks` keeps at most ``wave_size`` tiles in flight; a new tile
  is submitted only when one finishes. Workers write each tile's products to a file and return a
  small :class:`TileOutcome` (path, sha256, timings), so tile arrays never travel to the client.
  Peak memory therefore depends on the tile size and ``wave_size``, not on the AOI size.
* **Retries**: a tile that raises a transient error (network, timeouts, HTTP 429/5xx: the rule
  of :func:`eo_fusion.retry.classify`) is retried on the worker with exponential backoff, up to
  ``retries`` times; other errors (bad input, a missing or corrupt file, model errors) fail at
  once. A failed tile comes back as an outcome with its error, never as an
  exception that would stop the other tiles, unless ``on_failure="stop"``.
* **Storage**: a tile whose file cannot be written (disk full, read-only, permission denied)
  fails with a :class:`~eo_fusion.files.StorageError` naming the path and is *fatal*: no further
  tiles are submitted, whatever ``on_failure`` says (every one of them would fail the same way).
* **Neighbours in one process**: with several worker processes each tile is asked of the worker
  of its column strip (:func:`column_strips`; other workers may take it when that one is gone), so
  that windows straddling tile edges run once per process (:mod:`eo_fusion.models.shared_windows`)
  except on the few edges between strips.
* **Sidecars**: next to each tile file the worker writes ``tiles/<id>.json`` (sha256,
  fingerprint, inputs, input report), from which ``--reset`` rebuilds a lost or corrupt manifest.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import dask
import numpy as np

from eo_fusion.config import DaskSpec
from eo_fusion.errors import BadInputError, JobError
from eo_fusion.files import (
    STORAGE_ERRNOS,
    StorageError,
    atomic_write_text,
    sha256_file,
    storage_errors,
)
from eo_fusion.logs import get_logger
from eo_fusion.pipeline.input_checks import InputReport
from eo_fusion.pipeline.legend import NODATA_CLASS, ClassInfo
from eo_fusion.pipeline.plan import TileTask
from eo_fusion.pipeline.tiles import TileArrays, crop_core, finish_tile, write_tile
from eo_fusion.retry import classify

log = get_logger(__name__)


class Predictor(Protocol):
    """Computes class probabilities for one tile; must be picklable (it travels to workers)."""

    @property
    def classes(self) -> tuple[ClassInfo, ...]:
        """The output classes, in the order of the probability axis."""
        ...

    def predict(self, task: TileTask) -> np.ndarray:
        """float32 ``(class, y, x)`` probabilities on ``task.tile.padded`` (NaN: no valid input)."""
        ...

    def provenance(self) -> dict[str, Any]:
        """Model identity for the products' provenance (e.g. model card sha256)."""
        ...


class ReportingPredictor(Predictor, Protocol):
    """A predictor that also says what it found about the tile's inputs (the model does)."""

    def predict_with_report(self, task: TileTask) -> tuple[np.ndarray, InputReport]:
        """Probabilities as :meth:`Predictor.predict` and the tile's input report."""
        ...


@dataclass
class TileOutcome:
    """What a worker reports back for one tile (small: no pixel arrays).

    Attributes:
        tile_id: the tile.
        ok: True when the output file was written.
        output: output file relative to the run folder.
        sha256: hex sha256 of the output file.
        error: ``"<ExceptionType>: message"`` of the last failure.
        traceback: formatted traceback of the last failure (for logs; not shown by default).
        attempts: tries made (1 + retries used).
        seconds: wall time of all attempts.
        inputs: modality -> item ids the tile read.
        worker: address of the dask worker that ran it (``None`` outside a worker).
        fingerprint: the task's input fingerprint (recorded with the output).
        input_report: what the worker found about the inputs (``InputReport.to_dict``).
        fatal: the run cannot go on (the run folder cannot be written): stop submitting tiles.
        coreg: the tile's co-registration record, modality -> record
            (:mod:`eo_fusion.coreg.record`).
    """

    tile_id: str
    ok: bool
    output: str | None = None
    sha256: str | None = None
    error: str | None = None
    traceback: str | None = None
    attempts: int = 0
    seconds: float = 0.0
    inputs: dict[str, list[str]] = field(default_factory=dict)
    worker: str | None = None
    fingerprint: str = ""
    input_report: dict[str, Any] | None = None
    fatal: bool = False
    coreg: dict[str, Any] = field(default_factory=dict)


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return None


def is_transient(exc: BaseException) -> bool:
    """Whether a tile error may go away on retry.

    The read layer's rule (:func:`eo_fusion.retry.classify`: timeouts, resets, HTTP 408/425/429/
    5xx, anywhere in the chain of causes), so a tile is retried for the same reasons a read is;
    bad input and a full, read-only or forbidden run folder never heal in seconds.
    """
    if isinstance(exc, BadInputError | StorageError):
        return False
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return False
    return classify(exc).transient


def _short(text: str, limit: int = 600) -> str:
    # Some errors (e.g. torch state-dict mismatches) run to many kB; keep manifests readable.
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sidecar_path(run_dir: Path, task_relpath: str) -> Path:
    """``tiles/<id>.json`` beside ``tiles/<id>.tif``."""
    return (Path(run_dir) / task_relpath).with_suffix(".json")


def _predict(predictor: Predictor, task: TileTask) -> tuple[np.ndarray, InputReport | None]:
    with_report = getattr(predictor, "predict_with_report", None)
    if with_report is not None:
        probs, report = with_report(task)
        return np.asarray(probs, dtype=np.float32), report
    return np.asarray(predictor.predict(task), dtype=np.float32), None


def _report_dict(report: InputReport | None, arrays: TileArrays) -> dict[str, Any] | None:
    if report is None:
        return None
    return report.summary(arrays.classes != NODATA_CLASS)


def _attempt(task: TileTask, predictor: Predictor, run_dir: str, needed: int) -> TileOutcome:
    """One try at a tile: predict, finish, write the tile file and its sidecar."""
    probs, report = _predict(predictor, task)
    sy, sx = task.tile.core_in_padded
    arrays = finish_tile(crop_core(probs, task), task, predictor.classes)
    checked = _report_dict(report.crop(sy, sx) if report else None, arrays)
    path = Path(run_dir) / task.output_relpath
    with storage_errors(path, needed):
        write_tile(path, arrays, task.tile.core)
        sha = sha256_file(path)
        side = {
            "tile": task.tile_id,
            "output": task.output_relpath,
            "sha256": sha,
            "fingerprint": task.fingerprint,
            "inputs": task.input_ids(),
            "input_report": checked,
        }
        atomic_write_text(sidecar_path(Path(run_dir), task.output_relpath), json.dumps(side))
    return TileOutcome(
        tile_id=task.tile_id,
        ok=True,
        output=task.output_relpath,
        sha256=sha,
        inputs=task.input_ids(),
        fingerprint=task.fingerprint,
        input_report=checked,
        coreg=dict(report.coreg) if report else {},
    )


def compute_tile(
    task: TileTask,
    predictor: Predictor,
    run_dir: str,
    retries: int = 2,
    backoff_s: float = 0.5,
    needed_bytes: int = 0,
) -> TileOutcome:
    """Predict one tile, crop its halo, write its products file; runs on a dask worker.

    Args:
        task: the tile.
        predictor: computes probabilities on the padded tile.
        run_dir: the run folder (shared with the client); the file goes to
            ``run_dir/task.output_relpath``.
        retries: extra attempts for transient errors.
        backoff_s: delay before the first retry; doubled for each further retry (capped at 30 s).
        needed_bytes: the run's remaining bytes to write (named when the disk is full).

    Returns:
        An outcome; errors are reported in it rather than raised.
    """
    start = time.perf_counter()
    attempts = 0
    while True:
        attempts += 1
        try:
            outcome = _attempt(task, predictor, run_dir, needed_bytes)
        except Exception as e:
            if is_transient(e) and attempts <= retries:
                time.sleep(min(backoff_s * 2 ** (attempts - 1), 30.0))
                continue
            outcome = TileOutcome(
                tile_id=task.tile_id,
                ok=False,
                error=_short(f"{type(e).__name__}: {e}"),
                traceback=traceback.format_exc(),
                inputs=task.input_ids(),
                fatal=isinstance(e, StorageError) or _storage_errno(e),
            )
        outcome.attempts = attempts
        outcome.seconds = time.perf_counter() - start
        outcome.worker = _worker_address()
        return outcome


def _storage_errno(e: BaseException) -> bool:
    # An unwrapped disk-full or read-only error (e.g. from a temporary file): stop the run too.
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EROFS)


@contextlib.contextmanager
def dask_client(
    spec: DaskSpec, scheduler: Any = None, starting: Future[Any] | None = None
) -> Iterator[Any]:
    """A dask ``Client``: on ``scheduler`` (argument, else ``spec.scheduler``) or a LocalCluster
    (``starting``: the one :func:`start_worker_processes` is starting for this run).

    ``scheduler`` may be an address (``tcp://host:8786``), a connected ``distributed.Client``
    (used as is and left open: e.g. one from Dask Gateway, which needs its own credentials) or a
    cluster object with ``get_client()`` (dask-jobqueue, dask-kubernetes, Gateway clusters).

    The LocalCluster listens on loopback only, its dashboard on a random port (a fixed port
    would clash between concurrent jobs), and it is closed when the block exits.

    Raises:
        JobError: the scheduler cannot be reached (names the address).
    """
    from distributed import Client

    if scheduler is not None and not isinstance(scheduler, str):
        # The caller owns this client/cluster (and its security settings): do not close it.
        yield scheduler.get_client() if hasattr(scheduler, "get_client") else scheduler
        return
    address = scheduler or spec.scheduler
    if address:
        try:
            client = Client(address, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise JobError(
                f"cannot connect to the dask scheduler at {address} ({e})",
                fix="check the address and that the scheduler runs, or omit --scheduler to "
                "use a LocalCluster",
            ) from e
        try:
            yield client
        finally:
            client.close()
        return
    # Waited for first: its thread sets the same dask settings while it starts the cluster.
    started = starting.result() if starting is not None else None
    with _worker_environ(), dask.config.set(PRIVATE_WORKER_CONFIG):  # for the cluster's life
        cluster = started or _local_cluster(spec)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()


def _local_cluster(spec: DaskSpec, preload: bool = False) -> Any:
    """A job's private LocalCluster (see :func:`dask_client`); ``preload``: its workers import
    the model's modules when they start (:mod:`~eo_fusion.pipeline.worker_setup`)."""
    from distributed import LocalCluster

    config: dict[str, Any] = dict(PRIVATE_WORKER_CONFIG)
    if preload:
        config["distributed.worker.preload"] = ["eo_fusion.pipeline.worker_setup"]
    with _worker_environ(), dask.config.set(config):
        return LocalCluster(
            n_workers=spec.workers,
            threads_per_worker=spec.threads_per_worker,
            processes=spec.processes,
            memory_limit=spec.memory_limit,
            # Loopback only: a job's private cluster must not listen on the network (and this
            # also spares dask a probe of an outside address to find the host's IP).
            host="127.0.0.1",
            protocol="tcp://",  # also for thread workers: inproc would probe the outside IP
            # "None" would still try port 8787 first (and leak a socket when it is taken).
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        )


def start_worker_processes(spec: DaskSpec, scheduler: Any = None) -> Future[Any] | None:
    """Start the private LocalCluster of worker processes of a run of the job's model in the
    background, or ``None`` when the run uses threads of this process or another scheduler.

    Why: a worker process imports torch and the model code (~3 s here) before its first tile
    can run; started when the job is read, with those imports in a preload
    (:mod:`~eo_fusion.pipeline.worker_setup`), that happens while this process loads the model,
    searches and plans. Pass the future to :func:`dask_client`, and :func:`close_unused` it when
    the run ends (a run that stops before its tiles never takes it).
    """
    if scheduler is not None or spec.scheduler or not spec.processes:
        return None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eo-fusion-cluster")
    starting = pool.submit(_local_cluster, spec, True)
    pool.shutdown(wait=False)  # its thread ends when the cluster is up
    return starting


def close_unused(starting: Future[Any] | None) -> None:
    """Close a cluster :func:`start_worker_processes` started (again, if a client closed it)."""
    if starting is None:
        return
    with contextlib.suppress(Exception):  # a failed start raised (or will) where it was taken
        starting.result().close()


_TRIM = "MALLOC_TRIM_THRESHOLD_"

#: Worker settings of a job's private LocalCluster, kept for its lifetime (a restarted worker is
#: spawned with the same ones):
#:
#: * no ``MALLOC_TRIM_THRESHOLD_`` in worker processes (``None`` is distributed's documented way
#:   to unset one of these variables). distributed sets it (65536) so that workers hand freed
#:   memory back to the OS; any such variable also turns off glibc's adaptive mmap threshold, so
#:   every freed array over 64 KiB is unmapped and faulted in again on the next allocation. The
#:   model's per-batch tensors made that 21 s of system time in a 53 s one-process job (34 s
#:   without it; threads of this process, the default, never had it);
#: * no statistical profiler: it samples every worker thread's stack every 10 ms for the
#:   dashboard's profile page, which nobody looks at here (py-spy: 1.3 s of CPU in a 55 s
#:   4000² px job, taken from the tiles on 2 cores), and memory polls every 0.5 s instead of
#:   0.1 s (0.6 s); ``memory_limit`` is still checked twice a second.
PRIVATE_WORKER_CONFIG = {
    f"distributed.nanny.pre-spawn-environ.{_TRIM}": None,
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "500ms",
}


@contextlib.contextmanager
def _worker_environ() -> Iterator[None]:
    """This process's environment without a ``MALLOC_TRIM_THRESHOLD_`` that distributed left in
    it, while a private LocalCluster lives (see :data:`PRIVATE_WORKER_CONFIG`).

    A nanny started earlier in this process (a notebook's own LocalCluster, say) leaves
    distributed's value in ``os.environ``, which workers would inherit; that value is taken out
    for the cluster's lifetime. A different value, set on purpose, is left alone.
    """
    inherited = os.environ.get(_TRIM)
    by_dask = dask.config.get(f"distributed.nanny.pre-spawn-environ.{_TRIM}", None)
    left_by_dask = inherited is not None and inherited == str(by_dask)
    if left_by_dask:
        del os.environ[_TRIM]
    try:
        yield
    finally:
        if left_by_dask:
            os.environ[_TRIM] = str(inherited)


def execute_tasks(
    client: Any,
    tasks: Sequence[TileTask],
    predictor: Predictor,
    run_dir: Path,
    *,
    wave_size: int,
    retries: int,
    on_failure: str = "continue",
    on_outcome: Callable[[TileOutcome], None] | None = None,
    backoff_s: float = 0.5,
    needed_bytes: int = 0,
) -> list[TileOutcome]:
    """Run ``tasks`` on ``client`` with at most ``wave_size`` tiles in flight.

    Args:
        client: a connected ``distributed.Client``.
        tasks: tiles to compute.
        predictor: sent to the workers with each task.
        run_dir: the run folder (must be visible to the workers).
        wave_size: maximum tiles submitted but not yet finished.
        retries: per-tile retries for transient errors.
        on_failure: ``"stop"`` cancels the remaining tiles after the first failure;
            ``"continue"`` finishes them. A fatal outcome (storage) always stops.
        on_outcome: called in the client for every finished tile (e.g. to update the manifest).
        backoff_s: first retry delay in seconds. needed_bytes: estimate of the bytes the run
            still writes (for disk-full messages).

    Returns: one outcome per finished tile in completion order (``stop``: none for tiles not run).
    """
    from distributed import as_completed

    pending = iter(tasks)
    by_key: dict[str, TileTask] = {}
    ac = as_completed()
    strips = column_strips(sorted(client.scheduler_info().get("workers", {})), tasks)

    def submit_next() -> None:
        task = next(pending, None)
        if task is not None:
            key, where = f"tile-{Path(run_dir).name}-{task.tile_id}", strips.get(task.tile.col)
            args = (task, predictor, str(run_dir), retries, backoff_s, needed_bytes)
            fut = client.submit(compute_tile, *args, key=key, pure=False, workers=where,
                                allow_other_workers=where is not None)  # fmt: skip
            by_key[fut.key] = task
            ac.add(fut)

    for _ in range(max(1, wave_size)):
        submit_next()
    outcomes: list[TileOutcome] = []
    for fut in ac:
        outcome = _result(fut, by_key.pop(fut.key))
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)
        if not outcome.ok and (on_failure == "stop" or outcome.fatal):
            _cancel_all(ac)
            break
        submit_next()
    return outcomes


def column_strips(workers: Sequence[str], tasks: Sequence[TileTask]) -> dict[int, list[str]]:
    """Tile column -> the worker asked to run it: equal strips of columns, one per worker.

    None with fewer than two workers (every tile runs in the one process anyway) or fewer than
    two columns per worker: the scheduler keeps a tile for its worker while others may be idle,
    so narrow strips would leave workers without tiles.
    """
    cols = sorted({t.tile.col for t in tasks})
    if len(workers) < 2 or len(cols) < 2 * len(workers):
        return {}
    return {c: [workers[i * len(workers) // len(cols)]] for i, c in enumerate(cols)}


def _cancel_all(ac: Any) -> None:
    """Cancel every tile still in flight (``on_failure: stop`` or a fatal storage error)."""
    for other in list(ac.futures):
        other.cancel()
    ac.clear()


def _result(fut: Any, task: TileTask) -> TileOutcome:
    """The finished future's outcome, releasing it; a lost worker becomes a failed outcome."""
    try:
        outcome: TileOutcome = fut.result()
    except Exception as e:  # the worker died or the task was lost: record, do not raise
        outcome = TileOutcome(
            tile_id=task.tile_id,
            ok=False,
            error=_short(f"{type(e).__name__}: {e}"),
            attempts=1,
            inputs=task.input_ids(),
        )
    fut.release()
    return outcome
