"""``eo-fusion train JOB.yaml``: plan -> chip store -> fine-tuning -> model + metrics report.

The run folder ``<out>/<job name>-<12 hex>`` (the hash covers data, grid, labels, sampling and
split, so changing only training options reuses the chips) holds ``chips.zarr`` + ``chips.json``
(see :mod:`eo_fusion.train.chips`) and one ``train-<12 hex>/`` folder per set of training
options (the hash covers them and the chips): ``last/`` (resumable checkpoint), ``loss.csv``,
``model/`` (safetensors + model card, usable by the map job) and ``report.json``/``report.md``.

Under ``torchrun`` every process plans the same chips; rank 0 builds the chip store while the
others wait, then all train data-parallel and rank 0 evaluates and writes the model and report.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eo_fusion.config import portable_dump, spec_hash
from eo_fusion.devices import (
    DistInfo,
    autocast,
    autocast_dtype,
    describe_device,
    init_distributed,
    resolve_device,
)
from eo_fusion.errors import BadInputError, JobError
from eo_fusion.models import checkpoint as ck
from eo_fusion.models.encoder import EncoderConfig, SpectralViT, feature_blocks
from eo_fusion.models.heads import CropModel, LandCoverModel
from eo_fusion.models.spectral import ALL_RANGES, native_range, resolve_band
from eo_fusion.pipeline.manifest import run_lock, utc_now
from eo_fusion.train.chips import ChipManifest, remove_stale, run_chip_tasks
from eo_fusion.train.datasets import ChipDataset, chip_stats
from eo_fusion.train.finetune import PALETTE, _set_trainable
from eo_fusion.train.job import TrainJobSpec
from eo_fusion.train.loop import LoopOptions, fit, write_curve
from eo_fusion.train.plan import TrainPlan, chip_tasks, describe, new_manifest, plan_training
from eo_fusion.train.plan import search_items as plan_search
from eo_fusion.train.report import write_train_report
from eo_fusion.train.tasks import ChipArrays, chip_arrays, make_task, task_scores

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    """What a training job produced (paths, counts, metrics)."""

    run_dir: Path
    train_dir: Path | None = None
    chips: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    model: Path | None = None
    report: Path | None = None
    curve: list[list[float]] = field(default_factory=list)
    reused_chips: int = 0


# -- chip store --------------------------------------------------------------------------------


def build_chip_store(
    job: TrainJobSpec, plan: TrainPlan, *, force: bool = False
) -> tuple[ChipManifest, int]:
    """Build (or resume) the chip store of ``plan``; returns the manifest and reused chip count."""
    run_dir = plan.run_dir
    if force:
        shutil.rmtree(run_dir / "chips.zarr", ignore_errors=True)
        (run_dir / "chips.json").unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        old = ChipManifest.load(run_dir)
        manifest = new_manifest(plan, job.sampling.chip_size)
        reused = 0
        if old is not None and old.store_hash == plan.store_hash:
            for cid in list(manifest.chips):
                if old.verified(cid, run_dir):
                    manifest.chips[cid] = old.chips[cid]
                    reused += 1
        remove_stale(run_dir, list(manifest.chips))
        todo = [p for p in plan.chips if manifest.chips[p.id].state == "pending"]
        if todo:
            items = plan_search(job, plan)
            tasks = chip_tasks(plan, job, items, todo)
            run_chip_tasks(tasks, manifest, run_dir, workers=job.workers, wave_size=job.wave_size)
        manifest.save(run_dir)
    failed = [k for k, r in manifest.chips.items() if r.state == "failed"]
    if failed and not manifest.usable("train"):
        raise JobError(
            f"every chip failed, e.g. {manifest.chips[failed[0]].error}",
            fix="check the catalog and modalities (eo-fusion stack on the AOI)",
        )
    return manifest, reused


# -- model ------------------------------------------------------------------------------------


def _ranges(keys: list[str]) -> tuple[str, ...]:
    seen = {r for k in keys if (r := native_range(resolve_band(k))) is not None}
    return tuple(r for r in ALL_RANGES if r in seen)


def _base_model(job: TrainJobSpec) -> ck.LoadedModel | None:
    ref = job.training.pretrained
    if ref is None:
        return None
    return ck.load(None if ref == "bundled" else Path(ref))


def build_net(job: TrainJobSpec, data: ChipArrays, n_classes: int, base: ck.LoadedModel | None):
    """The dense model of the task (crop model for time series), on a pretrained encoder."""
    t = job.training
    if base is not None:
        encoder = copy.deepcopy(base.encoder)
        cfg = encoder.cfg
        missing = [k for k in data.keys if native_range(resolve_band(k)) not in cfg.ranges]
        if missing:
            raise BadInputError(
                f"pretrained model {base.card.get('name')} has no spectral range for {missing}",
                fix="drop those bands from training.inputs, or set training.pretrained: null",
            )
    else:
        cfg = EncoderConfig(t.size, t.patch_size, job.sampling.chip_size, _ranges(data.keys))
        encoder = SpectralViT(cfg)
    take = feature_blocks(cfg.shape.depth, 4)
    cls = CropModel if data.temporal else LandCoverModel
    net = cls(encoder, n_classes, take, t.channels)
    _set_trainable(encoder, t.mode, t.trainable_blocks)
    return net, cfg, take


def _forward(data: ChipArrays) -> Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]:
    keys = data.keys
    doy = None if data.doy is None else torch.tensor(data.doy, dtype=torch.float32)

    def run(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if doy is None:
            return model(x, keys)
        return model(x, keys, doy.to(x.device)[None].expand(x.shape[0], -1))

    return run


def _predictor(net: torch.nn.Module, data: ChipArrays, device: torch.device, dtype):  # type: ignore[no-untyped-def]
    run = _forward(data)

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad(), autocast(device, dtype):
            logits = run(net, torch.from_numpy(x).to(device))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    return predict


# -- training ---------------------------------------------------------------------------------


def resume_key(job: TrainJobSpec, store_hash: str) -> str:
    """What a resumed run must share: the chips and every training option but threads/device."""
    t = job.training.model_copy(update={"threads": 1, "device": "auto", "checkpoint_every": 1})
    return spec_hash(t) + store_hash[:16]


def _stats(train: ChipDataset, base: ck.LoadedModel | None) -> dict[str, dict[str, list[float]]]:
    stats = chip_stats(train)
    if base is not None:  # the pretrained statistics win for the bands the encoder knows
        for mod, per in base.card.get("normalization", {}).items():
            if mod in stats:
                stats[mod].update({k: v for k, v in per.items() if k in stats[mod]})
    return stats


def _class_weights(task, n: int, kind: str) -> torch.Tensor | None:  # type: ignore[no-untyped-def]
    if kind != "inverse_sqrt":
        return None
    w = 1.0 / np.sqrt(np.maximum(task.class_counts(n), 1))
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def train_dir(job: TrainJobSpec, run_dir: Path, manifest: ChipManifest) -> Path:
    """``<run>/train-<12 hex>``: one folder per set of training options over the same chips."""
    return run_dir / f"train-{resume_key(job, manifest.store_hash)[:12]}"


def train_on_store(
    job: TrainJobSpec,
    run_dir: Path,
    manifest: ChipManifest,
    *,
    dist: DistInfo = DistInfo(),
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[ck.LoadedModel, dict[str, Any], list[list[float]]]:
    """Fine-tune on the train chips and score the val/test chips; returns model, metrics, curve."""
    t = job.training
    torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    base = _base_model(job)
    raw = ChipDataset(run_dir, "train", inputs=t.inputs)
    stats = _stats(raw, base)
    data = chip_arrays(ChipDataset(run_dir, "train", inputs=raw.inputs, stats=stats))
    field_cls = {int(k): int(v["cls"]) for k, v in manifest.fields.items()}
    task = make_task(t.task, data, field_cls)
    n_classes = len(manifest.classes)
    net, cfg, take = build_net(job, data, n_classes, base)
    device = resolve_device(t.device, local_rank=dist.local_rank)
    dtype = autocast_dtype(device, t.precision)
    opts = LoopOptions(
        t.steps,
        t.batch_size,
        t.lr,
        t.warmup_steps,
        t.weight_decay,
        t.checkpoint_every,
        t.seed,
        resume_key(job, manifest.store_hash),
        device,
        dtype,
        t.compile,
    )
    t0 = time.perf_counter()
    curve = fit(
        net,
        task,
        _forward(data),
        opts,
        train_dir(job, run_dir, manifest),
        dist=dist,
        weight=_class_weights(task, n_classes, t.class_weights),
        on_step=on_step,
    )
    seconds = time.perf_counter() - t0
    ids = [int(c["id"]) for c in manifest.classes]
    metrics: dict[str, Any] = {}
    for split in ("val", "test"):
        chips = ChipDataset(run_dir, split, inputs=raw.inputs, stats=stats)
        if len(chips):
            arrays = chip_arrays(chips)
            cm = make_task(t.task, arrays, field_cls).evaluate(
                _predictor(net, arrays, device, dtype), n_classes
            )
            metrics[split] = task_scores(cm, ids)
    run_info = {
        "seconds": round(seconds, 2),
        "samples_per_s": round(
            (t.steps - (curve[0][0] - 1 if curve else 0)) * t.batch_size / max(seconds, 1e-9), 2
        ),
        "processes": dist.world,
        **describe_device(device, dtype),
    }
    model = _model_card(
        job, manifest, net, cfg, take, stats, data, raw.inputs, metrics, run_info, base
    )
    return model, metrics, curve


def _model_card(job, manifest, net, cfg, take, stats, data, inputs, metrics, run_info, base):  # type: ignore[no-untyped-def]
    """A model card in the fine-tuning format (the map job can run the head)."""
    t = job.training
    head = "crops" if data.temporal else "landcover"
    card: dict[str, Any] = copy.deepcopy(base.card) if base is not None else {}
    card.update(name=job.name, tasks={}, normalization=stats)
    card["architecture"] = {
        "encoder": cfg.to_dict(),
        "mae": False,
        head: {"n_classes": len(manifest.classes), "take": list(take), "channels": t.channels},
    }
    card.setdefault("inference", {}).update(
        window=job.sampling.chip_size, stride=job.sampling.chip_size // 2
    )
    card["tasks"][head] = {
        "inputs": {m: list(keys) for m, keys in inputs.items()},
        "optional": list(job.optional_inputs),
        "mode": "timeseries" if data.temporal else "composite",
        "classes": [
            {"id": int(c["id"]), "name": c["name"], "color": PALETTE[i % len(PALETTE)]}
            for i, c in enumerate(manifest.classes)
        ],
        "ignore_index": 0,
        "metrics": {"holdout": metrics.get("val", {}), **metrics},
        "training": {
            "job": portable_dump(job),
            "job_sha256": spec_hash(job),
            "trained_as": t.task,
            "pretrained": base.card.get("name") if base is not None else None,
            "chip_store": manifest.store_hash,
            **run_info,
        },
    }
    model = ck.LoadedModel(card=card, encoder=base.encoder if base is not None else net.encoder)
    setattr(model, head, net.cpu())
    return model


def run_train_job(
    job: TrainJobSpec,
    *,
    force: bool = False,
    run_date: date | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainSummary:
    """Run a training job end to end (see the module docstring)."""
    dist = init_distributed(job.training.device)
    plan = plan_training(job, run_date)
    if dist.is_main:
        manifest, reused = build_chip_store(job, plan, force=force)
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
    if not dist.is_main:
        loaded = ChipManifest.load(plan.run_dir)
        assert loaded is not None
        manifest, reused = loaded, 0
    summary = TrainSummary(plan.run_dir, reused_chips=reused)
    out = train_dir(job, plan.run_dir, manifest)
    summary.train_dir = out
    summary.chips = {s: len(manifest.usable(s)) for s in ("train", "val", "test")}
    model, metrics, curve = train_on_store(job, plan.run_dir, manifest, dist=dist, on_step=on_step)
    summary.metrics, summary.curve = metrics, curve
    if dist.is_main:
        write_curve(curve, out / "loss.csv")
        summary.model = ck.save(model, out / "model")
        summary.report = write_train_report(
            out, job, describe(plan), manifest, metrics, model.card, finished=utc_now()
        )
    return summary
