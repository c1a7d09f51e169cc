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
from eo_fusion.errors import BadInputError
from eo_fusion.models import checkpoint as ck
from eo_fusion.models.card import ModelCard
from eo_fusion.models.encoder import EncoderConfig, SpectralViT, feature_blocks
from eo_fusion.models.heads import CropModel, LandCoverModel, sensor_of
from eo_fusion.models.spectral import ALL_RANGES, native_range, resolve_band
from eo_fusion.pipeline.manifest import utc_now
from eo_fusion.train.chips import ChipManifest, ChipTask, build_store
from eo_fusion.train.datasets import ChipDataset, chip_stats
from eo_fusion.train.finetune import PALETTE, _set_trainable
from eo_fusion.train.job import TrainJobSpec
from eo_fusion.train.loop import LoopOptions, fit, write_curve
from eo_fusion.train.plan import TrainPlan, chip_tasks, describe, new_manifest, plan_training
from eo_fusion.train.plan import search_items as plan_search
from eo_fusion.train.report import write_train_report
from eo_fusion.train.scenes import (
    ScenePlan,
    describe_scenes,
    plan_scenes,
    scene_manifest,
    scene_tasks,
)
from eo_fusion.train.tasks import (
    ChipArrays,
    MultiLabelTask,
    SceneModel,
    chip_arrays,
    make_task,
    multilabel_scores,
    task_scores,
)

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


def _build(job: TrainJobSpec, plan: Any, force: bool) -> tuple[ChipManifest, int]:
    if isinstance(plan, TrainPlan):
        return build_chip_store(job, plan, force=force)
    fresh = scene_manifest(plan, job.sampling.chip_size)
    return build_store(
        plan.run_dir,
        fresh,
        lambda ids: scene_tasks(plan, job, ids),
        force=force,
        workers=job.workers,
        wave_size=job.wave_size,
    )


def build_chip_store(
    job: TrainJobSpec, plan: TrainPlan, *, force: bool = False
) -> tuple[ChipManifest, int]:
    """Build (or resume) the chip store of ``plan``; returns the manifest and reused chip count."""

    def make_tasks(ids: set[str]) -> list[ChipTask]:
        todo = [p for p in plan.chips if p.id in ids]
        return chip_tasks(plan, job, plan_search(job, plan), todo)

    fresh = new_manifest(plan, job.sampling.chip_size)
    return build_store(
        plan.run_dir, fresh, make_tasks, force=force, workers=job.workers, wave_size=job.wave_size
    )


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
                f"pretrained model {base.card.name} has no spectral range for {missing}",
                fix="drop those bands from training.inputs, or set training.pretrained: null",
            )
    else:
        cfg = EncoderConfig(t.size, t.patch_size, job.sampling.chip_size, _ranges(data.keys))
        encoder = SpectralViT(cfg)
    take = feature_blocks(cfg.shape.depth, 4)
    net: torch.nn.Module
    if data.temporal:
        if t.fusion != "early":
            raise BadInputError(
                f"training.fusion {t.fusion} does not apply to time series (the crop head's "
                "temporal attention already runs over per-modality, per-date tokens)",
                fix="set training.fusion: early",
            )
        net = CropModel(encoder, n_classes, take, t.channels)
    else:
        groups = tuple(dict.fromkeys(sensor_of(k) for k in data.keys))
        net = LandCoverModel(encoder, n_classes, take, t.channels, fusion=t.fusion, groups=groups)
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


def _predictor(net: torch.nn.Module, data: ChipArrays, device: torch.device, dtype, sigmoid=False):  # type: ignore[no-untyped-def]
    run = _forward(data)

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad(), autocast(device, dtype):
            logits = run(net, torch.from_numpy(x).to(device)).float()
        probs = torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=1)
        return probs.cpu().numpy()

    return predict


# -- training ---------------------------------------------------------------------------------


def resume_key(job: TrainJobSpec, store_hash: str) -> str:
    """What a resumed run must share: the chips and every training option but threads/device."""
    t = job.training.model_copy(update={"threads": 1, "device": "auto", "checkpoint_every": 1})
    return spec_hash(t) + store_hash[:16]


def _stats(train: ChipDataset, base: ck.LoadedModel | None) -> dict[str, dict[str, list[float]]]:
    stats = chip_stats(train)
    if base is not None:  # the pretrained statistics win for the bands the encoder knows
        for mod, per in base.card.normalization.items():
            if mod in stats:
                stats[mod].update({k: [v.mean, v.std] for k, v in per.items() if k in stats[mod]})
    return stats


def _class_weights(task, n: int, kind: str) -> torch.Tensor | None:  # type: ignore[no-untyped-def]
    if kind != "inverse_sqrt":
        return None
    w = 1.0 / np.sqrt(np.maximum(task.class_counts(n), 1))
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def train_dir(job: TrainJobSpec, run_dir: Path, manifest: ChipManifest) -> Path:
    """``<run>/train-<12 hex>``: one folder per set of training options over the same chips."""
    return run_dir / f"train-{resume_key(job, manifest.store_hash)[:12]}"


@dataclass
class _Setup:
    """The inputs of one training run, shared by every task."""

    base: ck.LoadedModel | None
    inputs: dict[str, list[str]]
    stats: dict[str, dict[str, list[float]]]
    data: ChipArrays
    device: torch.device
    dtype: torch.dtype | None


def _setup(job: TrainJobSpec, run_dir: Path, dist: DistInfo) -> _Setup:
    t = job.training
    torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    base = _base_model(job)
    raw = ChipDataset(run_dir, "train", inputs=t.inputs)
    stats = _stats(raw, base)
    data = chip_arrays(ChipDataset(run_dir, "train", inputs=raw.inputs, stats=stats))
    device = resolve_device(t.device, local_rank=dist.local_rank)
    return _Setup(base, raw.inputs, stats, data, device, autocast_dtype(device, t.precision))


def _held_out(run_dir: Path, s: _Setup) -> dict[str, ChipArrays]:
    out = {}
    for split in ("val", "test"):
        chips = ChipDataset(run_dir, split, inputs=s.inputs, stats=s.stats)
        if len(chips):
            out[split] = chip_arrays(chips)
    return out


def _targets(manifest: ChipManifest, ids: list[str]) -> np.ndarray:
    hot = np.zeros((len(ids), len(manifest.classes)), dtype=np.float32)
    for i, cid in enumerate(ids):
        hot[i, manifest.chips[cid].labels or []] = 1.0
    return hot


def _task_and_net(job: TrainJobSpec, s: _Setup, manifest: ChipManifest):  # type: ignore[no-untyped-def]
    n = len(manifest.classes)
    net, cfg, take = build_net(job, s.data, n, s.base)
    if job.training.task == "multilabel":
        net = SceneModel(net.encoder, n)
        return MultiLabelTask(s.data, _targets(manifest, s.data.ids)), net, cfg, take
    field_cls = {int(k): int(v["cls"]) for k, v in manifest.fields.items()}
    task = make_task(job.training.task, s.data, field_cls, job.training.modality_dropout)
    return task, net, cfg, take


def _evaluate(job: TrainJobSpec, s: _Setup, net, run_dir: Path, manifest: ChipManifest):  # type: ignore[no-untyped-def]
    metrics: dict[str, Any] = {}
    ids = [int(c["id"]) for c in manifest.classes]
    field_cls = {int(k): int(v["cls"]) for k, v in manifest.fields.items()}
    for split, arrays in _held_out(run_dir, s).items():
        predict = _predictor(net, arrays, s.device, s.dtype, job.training.task == "multilabel")
        if job.training.task == "multilabel":
            names = [c["name"] for c in manifest.classes]
            truth = _targets(manifest, arrays.ids)
            probs = np.stack([predict(arrays.x[i : i + 1])[0] for i in range(len(arrays.ids))])
            metrics[split] = multilabel_scores(truth, probs, names)
        else:
            cm = make_task(job.training.task, arrays, field_cls).evaluate(predict, len(ids))
            metrics[split] = task_scores(cm, ids)
    return metrics


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
    s = _setup(job, run_dir, dist)
    task, net, cfg, take = _task_and_net(job, s, manifest)
    opts = LoopOptions(
        t.steps,
        t.batch_size,
        t.lr,
        t.warmup_steps,
        t.weight_decay,
        t.checkpoint_every,
        t.seed,
        resume_key(job, manifest.store_hash),
        s.device,
        s.dtype,
        t.compile,
    )
    t0 = time.perf_counter()
    weight = _class_weights(task, len(manifest.classes), t.class_weights)
    if t.task == "multilabel":
        weight = None
    curve = fit(
        net,
        task,
        _forward(s.data),
        opts,
        train_dir(job, run_dir, manifest),
        dist=dist,
        weight=weight,
        on_step=on_step,
    )
    seconds = time.perf_counter() - t0
    metrics = _evaluate(job, s, net, run_dir, manifest) if dist.is_main else {}
    trained = t.steps - (curve[0][0] - 1 if curve else 0)
    run_info = {
        "seconds": round(seconds, 2),
        "processes": dist.world,
        "samples_per_s": round(trained * t.batch_size / max(seconds, 1e-9), 2),
        **describe_device(s.device, s.dtype),
    }
    model = _model_card(job, manifest, net, cfg, take, s, metrics, run_info)
    return model, metrics, curve


def _classes(manifest: ChipManifest, base: ck.LoadedModel | None) -> list[dict[str, Any]]:
    """Class id, name and colour (the pretrained card's colour for a class of the same name)."""
    known = {
        str(c["name"]).lower(): c.get("color")
        for sec in (base.card.model_dump(mode="json")["tasks"].values() if base else [])
        for c in sec.get("classes", [])
    }
    return [
        {
            "id": int(c["id"]),
            "name": c["name"],
            "color": known.get(str(c["name"]).lower()) or PALETTE[i % len(PALETTE)],
        }
        for i, c in enumerate(manifest.classes)
    ]


def _model_card(job, manifest, net, cfg, take, s, metrics, run_info):  # type: ignore[no-untyped-def]
    """A model card in the fine-tuning format (the map job can run the dense heads)."""
    t = job.training
    base, stats, data, inputs = s.base, s.stats, s.data, s.inputs
    head = "crops" if data.temporal else "landcover"
    if t.task == "multilabel":
        head = "scene"
    card: dict[str, Any] = base.card.model_dump(mode="json") if base is not None else {}
    card.update(name=job.name, tasks={}, normalization=stats)
    card["architecture"] = {
        "encoder": cfg.to_dict(),
        "mae": False,
        head: {"n_classes": len(manifest.classes), "take": list(take), "channels": t.channels},
    }
    if isinstance(net, LandCoverModel) and net.fusion != "early":
        card["architecture"][head] |= {"fusion": net.fusion, "groups": list(net.groups)}
    card.setdefault("inference", {}).update(
        window=job.sampling.chip_size, stride=job.sampling.chip_size // 2
    )
    card["tasks"][head] = {
        "inputs": {m: list(keys) for m, keys in inputs.items()},
        "optional": list(job.optional_inputs),
        "mode": "scene" if head == "scene" else "timeseries" if data.temporal else "composite",
        "classes": _classes(manifest, base),
        "ignore_index": 0,
        "metrics": dict(metrics)
        if head == "scene"
        else {"holdout": metrics.get("val", {}), **metrics},
        "training": {
            "job": portable_dump(job),
            "job_sha256": spec_hash(job),
            "trained_as": t.task,
            "pretrained": base.card.name if base is not None else None,
            "chip_store": manifest.store_hash,
            **run_info,
        },
    }
    if head == "scene":  # not a map-job head: the encoder is the fine-tuned one, head saved apart
        card["tasks"][head]["head_file"] = SCENE_HEAD
        model = ck.LoadedModel(card=ModelCard.model_validate(card), encoder=net.encoder.cpu())
        model.scene = net.cpu()  # type: ignore[attr-defined]
        return model
    encoder = base.encoder if base is not None else net.encoder
    model = ck.LoadedModel(card=ModelCard.model_validate(card), encoder=encoder)
    setattr(model, head, net.cpu())
    return model


SCENE_HEAD = "scene_head.safetensors"


def save_model(model: ck.LoadedModel, folder: Path) -> Path:
    """``ck.save``, plus the scene head's weights for multi-label models."""
    from safetensors.torch import save_file

    ck.save(model, folder)
    scene = getattr(model, "scene", None)
    if scene is not None:
        state = {k: v.contiguous() for k, v in scene.head.state_dict().items()}
        save_file(state, str(folder / SCENE_HEAD))
    return folder


def run_train_job(
    job: TrainJobSpec,
    *,
    force: bool = False,
    run_date: date | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainSummary:
    """Run a training job end to end (see the module docstring)."""
    dist = init_distributed(job.training.device)
    resolve_device(job.training.device, local_rank=dist.local_rank)  # fail before any work
    plan: TrainPlan | ScenePlan
    plan = plan_training(job, run_date) if job.scene_labels is None else plan_scenes(job, run_date)
    if dist.is_main:
        manifest, reused = _build(job, plan, force)
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
        summary.model = save_model(model, out / "model")
        counts = describe(plan) if isinstance(plan, TrainPlan) else describe_scenes(plan)
        summary.report = write_train_report(
            out,
            job,
            counts,
            manifest,
            metrics,
            model.card.model_dump(mode="json"),
            finished=utc_now(),
        )
    return summary
