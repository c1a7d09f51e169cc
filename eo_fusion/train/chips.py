"""The chip store: every sampled chip built once with the stack stage and kept as Zarr.

Layout of a training run folder (``<out>/<job name>-<12 hex of the chip hash>/``):

* ``chips.zarr/<chip id>/`` — one group per chip, written by
  :func:`eo_fusion.stack_io.write_stack_zarr`: the ModalityStack of the chip (every modality on
  the chip grid, ``<m>:valid`` masks, dates) plus ``label`` (int16 class index, -1 = no label for
  this chip's split) and ``field`` (int32 field index, -1 = none);
* ``chips.json`` — the chip manifest: per chip its origin, block, split, class, state, sha256 of
  its group and share of valid input pixels; the fields with their split; the classes; the grid.
  Rewritten atomically after every wave of chips, so a killed build resumes with the chips whose
  checksums still match.

Chips are built as dask tasks (threads of this process): each runs
:func:`eo_fusion.stack.build_stack` on the chip grid grown by the halo (as the map job's tiles
are) with the items whose footprint intersects it, crops the halo away and writes its group.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import ModalitySpec
from eo_fusion.errors import JobError
from eo_fusion.files import atomic_write_text
from eo_fusion.train.sampling import ChipPlan

log = logging.getLogger(__name__)

STORE = "chips.zarr"
MANIFEST = "chips.json"
CHIP_MANIFEST_VERSION = 1
#: Chips with a smaller share of valid input pixels are recorded as ``empty`` and not used.
MIN_VALID = 0.5


def sha256_tree(folder: Path) -> str:
    """sha256 over the relative paths and contents of every file below ``folder`` (sorted)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class ChipRecord:
    """What the manifest knows about one chip (see the module docstring)."""

    row: int
    col: int
    split: str
    block: tuple[int, int]
    field: int
    cls: int
    state: str = "pending"
    sha256: str | None = None
    valid: float | None = None
    dates: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    error: str | None = None
    labels: list[int] | None = None  # scene (multi-label) chips: class indices present


@dataclass
class ChipManifest:
    """``chips.json``: the chips, fields, classes and grid of a chip store."""

    store_hash: str
    grid: dict[str, Any]
    chip_size: int
    classes: list[dict[str, Any]]
    fields: dict[str, dict[str, Any]]
    chips: dict[str, ChipRecord]
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    inputs: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    version: int = CHIP_MANIFEST_VERSION

    def save(self, run_dir: Path) -> None:
        """Write ``chips.json`` atomically."""
        atomic_write_text(Path(run_dir) / MANIFEST, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> ChipManifest | None:
        """Read ``chips.json``; ``None`` when there is none (raises when it is unreadable)."""
        path = Path(run_dir) / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            chips = {
                k: ChipRecord(**{**v, "block": tuple(v["block"])})
                for k, v in data.pop("chips").items()
            }
            manifest = cls(**data, chips=chips)
        except (ValueError, TypeError, KeyError) as e:
            raise JobError(
                f"chip manifest {path} is unreadable ({e})",
                fix="delete the run folder (or rerun with --force) to rebuild the chips",
            ) from e
        if manifest.version != CHIP_MANIFEST_VERSION:
            raise JobError(
                f"chip manifest {path} has version {manifest.version}",
                fix="rerun with --force to rebuild the chips with this eo-fusion",
            )
        return manifest

    def verified(self, chip_id: str, run_dir: Path) -> bool:
        """The chip is ``done`` or ``empty`` and its group still has the recorded sha256."""
        rec = self.chips.get(chip_id)
        if rec is None or rec.state not in ("done", "empty") or not rec.sha256:
            return False
        group = Path(run_dir) / STORE / chip_id
        return group.is_dir() and sha256_tree(group) == rec.sha256

    def usable(self, split: str | None = None) -> list[str]:
        """Ids of built chips with enough valid input (optionally of one split), sorted."""
        return sorted(
            k
            for k, r in self.chips.items()
            if r.state == "done" and (split is None or r.split == split)
        )


def chip_grids(grid: GeoBox, plan: ChipPlan, size: int, halo: int) -> tuple[GeoBox, GeoBox]:
    """The chip's own grid (a window of the job grid) and that grid grown by the halo."""
    core = grid[plan.row : plan.row + size, plan.col : plan.col + size]
    return core, (core.pad(halo) if halo else core)


@dataclass(frozen=True)
class ChipTask:
    """Everything one dask task needs to build a chip (picklable)."""

    chip_id: str
    core: GeoBox
    padded: GeoBox
    halo: int
    items: Mapping[str, tuple[NormalizedItem, ...]]
    modalities: Mapping[str, ModalitySpec]
    label: np.ndarray
    fields: np.ndarray
    store: str


def _valid_share(ds: xr.Dataset) -> float:
    """Share of chip pixels where at least one input modality has a valid value."""
    masks = [
        np.asarray(ds[v].values, bool)
        for v in ds.data_vars
        if str(v).endswith(":valid") and ds[v].dims[-2:] == ("y", "x")
    ]
    if not masks:
        return 0.0
    any_valid = np.zeros(masks[0].shape[-2:], bool)
    for m in masks:
        any_valid |= m.reshape(-1, *m.shape[-2:]).any(axis=0)
    return float(any_valid.mean())


def build_chip(task: ChipTask) -> dict[str, Any]:
    """Build, crop and write one chip; returns its sha256, valid share and dates per modality."""
    from eo_fusion.stack import build_stack
    from eo_fusion.stack_io import write_stack_zarr

    ds = build_stack(task.padded, task.items, task.modalities)
    h = task.halo
    if h:
        ds = ds.isel(y=slice(h, ds.sizes["y"] - h), x=slice(h, ds.sizes["x"] - h))
    ds = ds.assign(
        label=(("y", "x"), task.label.astype(np.int16)),
        field=(("y", "x"), task.fields.astype(np.int32)),
    )
    ds.attrs.update(chip_id=task.chip_id, transform=list(task.core.transform)[:6])
    dates = {
        str(v).split(":")[0]: [str(t)[:19] for t in ds[v].values]
        for v in ds.coords
        if str(v).endswith(":time")
    }
    valid = _valid_share(ds)
    group = write_stack_zarr(ds, task.store, task.chip_id)
    return {"id": task.chip_id, "sha256": sha256_tree(group), "valid": valid, "dates": dates}


def run_chip_tasks(
    tasks: Sequence[ChipTask],
    manifest: ChipManifest,
    run_dir: Path,
    *,
    workers: int,
    wave_size: int,
) -> None:
    """Build the chips in waves of dask tasks; the manifest is saved after every wave.

    A chip that fails is recorded as ``failed`` with its error (naming the chip) and the others
    go on; the caller decides whether enough chips were built.
    """
    import dask

    for start in range(0, len(tasks), wave_size):
        wave = tasks[start : start + wave_size]
        delayed = [dask.delayed(_safe_build)(t) for t in wave]
        for out in dask.compute(*delayed, scheduler="threads", num_workers=workers):
            rec = manifest.chips[out["id"]]
            if "error" in out:
                rec.state, rec.error = "failed", out["error"]
                log.warning("chip %s failed: %s", out["id"], out["error"])
                continue
            rec.sha256, rec.valid, rec.dates, rec.error = (
                out["sha256"],
                round(out["valid"], 4),
                out["dates"],
                None,
            )
            rec.state = "done" if out["valid"] >= MIN_VALID else "empty"
        manifest.save(run_dir)
        log.info("chips: %d/%d built", min(start + wave_size, len(tasks)), len(tasks))


def _safe_build(task: ChipTask) -> dict[str, Any]:
    try:
        return build_chip(task)
    except Exception as e:  # recorded per chip in the manifest; the build goes on
        return {"id": task.chip_id, "error": f"chip {task.chip_id}: {type(e).__name__}: {e}"}


def open_chip(run_dir: Path, chip_id: str) -> xr.Dataset:
    """One chip's dataset, loaded into memory (in-memory variable names)."""
    from eo_fusion.stack_io import open_stack_zarr

    path = Path(run_dir) / STORE
    if not (path / chip_id).is_dir():
        raise JobError(
            f"chip {chip_id} is missing from {path}", fix="rerun the training job to rebuild it"
        )
    return open_stack_zarr(path, chip_id).load()


def build_store(
    run_dir: Path,
    fresh: ChipManifest,
    make_tasks: Callable[[set[str]], list[ChipTask]],
    *,
    force: bool = False,
    workers: int = 2,
    wave_size: int = 16,
) -> tuple[ChipManifest, int]:
    """Build or resume a chip store: chips whose group still has its recorded sha256 are kept,
    the others built (``make_tasks(ids)``); returns the manifest and the number reused.

    The run folder is locked (the map job's run lock) while the store is written.
    """
    from eo_fusion.pipeline.manifest import run_lock

    if force:
        shutil.rmtree(run_dir / STORE, ignore_errors=True)
        (run_dir / MANIFEST).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        old = ChipManifest.load(run_dir)
        manifest, reused = fresh, 0
        if old is not None and old.store_hash == fresh.store_hash:
            for cid in list(manifest.chips):
                if old.verified(cid, run_dir):
                    manifest.chips[cid] = old.chips[cid]
                    reused += 1
        remove_stale(run_dir, list(manifest.chips))
        todo = {k for k, r in manifest.chips.items() if r.state == "pending"}
        if todo:
            run_chip_tasks(
                make_tasks(todo), manifest, run_dir, workers=workers, wave_size=wave_size
            )
        manifest.save(run_dir)
    failed = [k for k, r in manifest.chips.items() if r.state == "failed"]
    if failed and not manifest.usable("train"):
        raise JobError(
            f"every chip failed, e.g. {manifest.chips[failed[0]].error}",
            fix="check the catalog and modalities (eo-fusion stack on the AOI)",
        )
    return manifest, reused


def remove_stale(run_dir: Path, keep: Sequence[str]) -> None:
    """Delete chip groups (and temporary groups) that the manifest does not list."""
    store = Path(run_dir) / STORE
    if not store.is_dir():
        return
    wanted = set(keep)
    for entry in os.scandir(store):
        if entry.is_dir() and entry.name not in wanted:
            shutil.rmtree(entry.path, ignore_errors=True)
