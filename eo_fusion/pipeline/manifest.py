"""The run manifest and the run lock: what makes a mapping run resumable and safe to re-run.

A run folder ``<output.dir>/<run-id>/`` holds:

* ``manifest.json`` — one record per tile (state, input item ids, output file, sha256, error,
  attempts, seconds), the job config hash and the run's provenance. It is rewritten atomically
  (temporary file in the same folder, then ``os.replace``) after every tile, so a run killed at
  any moment leaves either the previous or the next complete manifest, never a torn one.
* ``.lock`` — created exclusively (``O_CREAT | O_EXCL``) by the process that writes the run, with
  its PID, host and start time. A lock whose process no longer exists on this host is stale and
  is taken over; any other lock makes a second copy fail with :class:`~eo_fusion.errors.LockError`.

Only the client process (the one that called ``run_job``) writes these files; dask workers write
tile outputs and return their checksums. The provenance recorded here (inputs, model, code
version, config hash, window) is what the STAC items and the QA report cite.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from eo_fusion.errors import JobError, LockError
from eo_fusion.files import atomic_write_text, sha256_file, storage_errors
from eo_fusion.logs import get_logger

if TYPE_CHECKING:
    from eo_fusion.pipeline.execute import TileOutcome
    from eo_fusion.pipeline.plan import RunPlan, TileTask

log = get_logger(__name__)

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"
MANIFEST_VERSION = 1

TileState = Literal["pending", "done", "failed"]


def utc_now() -> str:
    """Current time as an ISO 8601 UTC string (second precision)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass
class TileRecord:
    """What the manifest knows about one tile.

    Attributes:
        state: ``pending`` (not finished), ``done`` (output written and checksummed) or ``failed``.
        inputs: modality -> ids of the STAC items the tile reads.
        output: tile output file, relative to the run folder (``None`` until written).
        sha256: hex sha256 of ``output`` as written by the worker.
        error: last error message (``failed`` tiles), naming the tile and the cause.
        attempts: tries made by the last run (1 + retries used).
        seconds: wall time of the successful or last attempt.
        finished: UTC time the state was last set.
        worker: dask worker that ran the last attempt.
        fingerprint: sha256 of everything the tile read when its output was written (see
            :mod:`eo_fusion.pipeline.fingerprint`); a resume reuses the output only if it is
            the plan's fingerprint for the tile.
        parts: the fingerprint's components (AOI, model, code, item digests), to say what
            changed.
        input_report: what the worker found about the tile's inputs (see
            :mod:`eo_fusion.pipeline.input_checks`).
        coreg: co-registration record of the tile, modality -> record (shift, confidence,
            applied or not and why; :mod:`eo_fusion.coreg.record`).
    """

    state: TileState = "pending"
    inputs: dict[str, list[str]] = field(default_factory=dict)
    output: str | None = None
    sha256: str | None = None
    error: str | None = None
    attempts: int = 0
    seconds: float | None = None
    finished: str | None = None
    worker: str | None = None
    fingerprint: str | None = None
    parts: dict[str, Any] | None = None
    input_report: dict[str, Any] | None = None
    coreg: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunManifest:
    """The per-run record of every tile; saved as ``manifest.json`` in the run folder.

    Attributes:
        run_id: ``<job name>-<first 12 hex of the run hash>``.
        job_name: the job's name.
        config_hash: sha256 of the job config (``eo_fusion.config.spec_hash``).
        run_hash: sha256 of the config hash and the resolved time window (names the run folder).
        created: UTC time the run folder was created.
        tiles: tile id -> record.
        provenance: input item ids, model card sha256, code version, time window, run date.
        products: product name -> file (relative to the run folder) once assembled.
    """

    run_id: str
    job_name: str
    config_hash: str
    run_hash: str
    created: str = field(default_factory=utc_now)
    tiles: dict[str, TileRecord] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    products: dict[str, str] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    # -- persistence ---------------------------------------------------------------------------

    def save(self, run_dir: Path, needed_bytes: int | None = None) -> None:
        """Write ``manifest.json`` atomically.

        ``needed_bytes``: what the run still writes (named if the disk is full).

        Raises:
            StorageError: the disk is full, read-only or not writable (names the file).
        """
        payload = asdict(self)
        path = Path(run_dir) / MANIFEST_NAME
        with storage_errors(path, needed_bytes):
            atomic_write_text(path, json.dumps(payload, indent=1) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> RunManifest | None:
        """Read the run folder's manifest; ``None`` if there is none yet.

        Raises:
            JobError: the file exists but is not a manifest this version understands.
        """
        path = Path(run_dir) / MANIFEST_NAME
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            tiles = {k: TileRecord(**v) for k, v in data.pop("tiles").items()}
            manifest = cls(**data, tiles=tiles)
        except (ValueError, TypeError, KeyError) as e:
            raise JobError(
                f"run manifest {path} is unreadable ({e})",
                fix="rerun with --reset to set it aside and rebuild it from the tile files that "
                "verify (or --force to recompute every tile)",
            ) from e
        if manifest.version != MANIFEST_VERSION:
            raise JobError(
                f"run manifest {path} has version {manifest.version}, expected {MANIFEST_VERSION}",
                fix="rerun with --reset to rebuild it from the tile files that verify (or --force "
                "to recompute the run with this version of eo-fusion)",
            )
        return manifest

    # -- tile bookkeeping ------------------------------------------------------------------------

    def verified(self, tile_id: str, run_dir: Path) -> bool:
        """True when the tile is ``done`` and its output file exists with the recorded sha256.

        A resume trusts a tile only through this check, never because a file exists.
        """
        rec = self.tiles.get(tile_id)
        if rec is None or rec.state != "done" or not rec.output or not rec.sha256:
            return False
        path = Path(run_dir) / rec.output
        return path.is_file() and sha256_file(path) == rec.sha256

    def why_rerun(self, task: TileTask, run_dir: Path, *, force: bool = False) -> str | None:
        """Why ``task`` must be computed, or ``None`` when its recorded output can be reused.

        Reused only when the output verifies (sha256) *and* its recorded fingerprint is the
        task's: a tile whose inputs changed is recomputed even though its file is intact.
        """
        rec = self.tiles.get(task.tile_id)
        if force:
            return "--force"
        if rec is None:
            return "new"
        if rec.state != "done":
            return "failed earlier" if rec.state == "failed" else "not finished"
        if not self.verified(task.tile_id, run_dir):
            return "output missing or its checksum does not match"
        if task.fingerprint and rec.fingerprint != task.fingerprint:
            return "inputs changed"
        return None

    def tiles_to_run(
        self, tasks: Sequence[TileTask], run_dir: Path, *, force: bool = False
    ) -> list[TileTask]:
        """The tasks to compute (all with ``force``, else those not reusable), marked pending."""
        return [t for t, _ in self.resume(tasks, run_dir, force=force)]

    def resume(
        self, tasks: Sequence[TileTask], run_dir: Path, *, force: bool = False
    ) -> list[tuple[TileTask, str]]:
        """(task, why it is computed) for each task to compute (:meth:`why_rerun`), in order;
        each is marked pending."""
        todo: list[tuple[TileTask, str]] = []
        for t in tasks:
            why = self.why_rerun(t, run_dir, force=force)
            if why is None:
                continue
            old = self.tiles.get(t.tile_id)
            self.tiles[t.tile_id] = TileRecord(
                state="pending",
                inputs=t.input_ids(),
                fingerprint=old.fingerprint if old else None,  # kept to explain changes
                parts=old.parts if old else None,
            )
            todo.append((t, why))
        return todo

    def record(self, outcome: TileOutcome, parts: Mapping[str, Any] | None = None) -> None:
        """Record a finished tile's outcome (``done`` with its output and sha256, or ``failed``).

        ``parts``: the tile's fingerprint components from the plan (kept to explain changes).
        """
        rec = self.tiles.setdefault(outcome.tile_id, TileRecord())
        rec.inputs = outcome.inputs or rec.inputs
        rec.attempts = outcome.attempts
        rec.seconds = round(outcome.seconds, 3)
        rec.finished = utc_now()
        rec.worker = outcome.worker
        rec.input_report = outcome.input_report
        if outcome.ok:
            rec.state, rec.output, rec.sha256 = "done", outcome.output, outcome.sha256
            rec.fingerprint = outcome.fingerprint or None
            rec.parts = dict(parts) if parts is not None else None
            rec.coreg = dict(getattr(outcome, "coreg", {}) or {})
            rec.error = None
        else:
            rec.state, rec.error = "failed", outcome.error

    def counts(self) -> dict[str, int]:
        """Number of tiles per state."""
        out = {"pending": 0, "done": 0, "failed": 0}
        for rec in self.tiles.values():
            out[rec.state] += 1
        return out


def quarantine(run_dir: Path) -> Path | None:
    """Move ``manifest.json`` aside as ``manifest.json.corrupt-<UTC time>`` (returned)."""
    path = Path(run_dir) / MANIFEST_NAME
    if not path.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    dst = path.with_name(f"{MANIFEST_NAME}.corrupt-{stamp}")
    os.replace(path, dst)
    return dst


def _sidecar_record(task: TileTask, run_dir: Path) -> TileRecord | None:
    """The record of a tile file found on disk, from its sidecar ``tiles/<id>.json``.

    ``done`` with the sidecar's sha256; a file that does not match it (or has no readable
    sidecar) gets no checksum, so :meth:`RunManifest.verified` refuses it and it is recomputed.
    ``None`` when there is no tile file.
    """
    tile = Path(run_dir) / task.output_relpath
    if not tile.is_file():
        return None
    try:
        data = json.loads(tile.with_suffix(".json").read_text(encoding="utf-8"))
        sha = str(data["sha256"]) if data.get("output") == task.output_relpath else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        data, sha = {}, None
    ok = sha is not None and sha256_file(tile) == sha
    return TileRecord(
        state="done",
        inputs=task.input_ids(),
        output=task.output_relpath,
        sha256=sha if ok else None,
        fingerprint=(data.get("fingerprint") or None) if ok else None,
        input_report=data.get("input_report") if ok else None,
    )


def rebuild_tiles(tasks: Sequence[TileTask], run_dir: Path) -> dict[str, TileRecord]:
    """Tile records rebuilt from the tile files and their sidecars (``--reset``).

    Only files whose sha256 is the sidecar's keep a checksum (and can be reused).
    """
    out = {}
    for t in tasks:
        rec = _sidecar_record(t, run_dir)
        if rec is not None:
            out[t.tile_id] = rec
    return out


def _new_manifest(plan: RunPlan) -> RunManifest:
    return RunManifest(
        run_id=plan.run_id,
        job_name=plan.job_name,
        config_hash=plan.config_hash,
        run_hash=plan.run_hash,
    )


def open_manifest(plan: RunPlan, *, reset: bool = False, force: bool = False) -> RunManifest:
    """The run folder's manifest (a new one for a new run).

    Args:
        plan: the run.
        reset: set the manifest aside (``manifest.json.corrupt-<time>``) and rebuild it from the
            tile files whose sidecar checksums verify; works when the manifest is unreadable.
        force: every tile is recomputed anyway: an unreadable manifest is set aside.

    Raises:
        JobError: the manifest is unreadable (without ``reset``/``force``), or the folder holds
            a run of a different job config (same name and window).
    """
    try:
        manifest = RunManifest.load(plan.run_dir)
    except JobError as e:
        if not (reset or force):
            raise
        moved = quarantine(plan.run_dir)
        log.warning("%s; set aside as %s", e.message, moved)
        manifest = None
    if reset:
        if manifest is not None:
            log.warning("--reset: manifest set aside as %s", quarantine(plan.run_dir))
        manifest = _new_manifest(plan)
        manifest.tiles = rebuild_tiles(plan.tasks, plan.run_dir)
        log.warning("--reset: manifest rebuilt from %d verified tile file(s)", len(manifest.tiles))
    manifest = manifest or _new_manifest(plan)
    if manifest.config_hash != plan.config_hash:  # same folder name, different job: refuse
        raise JobError(
            f"run folder {plan.run_dir} belongs to a different job config",
            fix="rename the job or remove that folder",
        )
    return manifest


# -- provenance ----------------------------------------------------------------------------------


def provenance(plan: RunPlan, model: Mapping[str, Any]) -> dict[str, Any]:
    """The run's provenance: what the pixels came from.

    Input item ids, model identity, code version, config hash, window, and the fingerprints of
    every input (``inputs``: AOI sha256, each item's content hash and each asset file's size,
    ETag/Last-Modified or content sha256; see :mod:`eo_fusion.pipeline.fingerprint`).

    Args:
        plan: the run.
        model: the predictor's ``provenance()`` (model card sha256, task, ...).
    """
    from eo_fusion.pipeline.fingerprint import code_version

    prints = plan.prints
    return {
        "input_items": {m: list(ids) for m, ids in plan.inputs.items()},
        **model,
        "code_version": prints.code_version if prints else code_version(),
        "job_config_hash": plan.config_hash,
        "run_date": plan.run_date.isoformat(),
        "time_window": [d.isoformat() if d else None for d in plan.window],
        **({"inputs": prints.to_dict()} if prints else {}),
    }


# -- lock ----------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class LockInfo:
    """Who holds a run lock."""

    pid: int
    host: str
    started: str


def read_lock(path: Path) -> LockInfo | None:
    """The lock's holder, or ``None`` if the file is missing or unreadable (a torn write)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return LockInfo(pid=int(data["pid"]), host=str(data["host"]), started=str(data["started"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def _is_stale(info: LockInfo | None) -> bool:
    # A lock from another host cannot be checked from here: never treat it as stale.
    if info is None:
        return True
    return info.host == socket.gethostname() and not _pid_alive(info.pid)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[LockInfo]:
    """Hold the run folder's lock for the duration of the ``with`` block.

    Raises:
        LockError: another live process (or a process on another host) holds the lock; the
            message names the lock file, PID, host and start time and how to clear it.
        StorageError: the folder is read-only, full or not writable.
    """
    path = Path(run_dir) / LOCK_NAME
    me = LockInfo(pid=os.getpid(), host=socket.gethostname(), started=utc_now())
    for _ in range(2):  # second pass after removing a stale lock
        try:
            with storage_errors(path):
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(path)
            if _is_stale(holder):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            assert holder is not None
            raise LockError(
                f"run folder {run_dir} is locked by PID {holder.pid} on {holder.host} "
                f"since {holder.started} ({path})",
                fix="wait for that run to finish; if it is gone (e.g. another host crashed), "
                f"delete {path}",
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(me), f)
        break
    else:
        raise LockError(
            f"could not take the lock {path} (it keeps reappearing)",
            fix="check whether another copy of the job is starting at the same time",
        )
    try:
        yield me
    finally:
        holder = read_lock(path)
        if holder is not None and holder.pid == me.pid and holder.host == me.host:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
