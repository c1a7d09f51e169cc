"""Fine-tuning of the land-cover (dense) and crop (temporal) heads, with a spatial hold-out.

The hold-out is made of whole square blocks (``holdout_block`` pixels) chosen at random with the
seed: their labels are never seen in training, and the metrics (OA, mIoU, per-class IoU and F1)
are computed on them only, from sliding-window predictions over the whole scene (exactly what
:func:`eo_fusion.models.predict` does). Images of the hold-out blocks are visible in training
(unlabelled), as they are to the self-supervised pretraining.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from eo_fusion.config import portable_dump, spec_hash
from eo_fusion.errors import BadInputError
from eo_fusion.models import checkpoint as ck
from eo_fusion.models.card import BandNorm, normalize_bands
from eo_fusion.models.config import FinetuneSpec
from eo_fusion.models.encoder import EncoderConfig, SpectralViT, feature_blocks
from eo_fusion.models.heads import CropModel, LandCoverModel
from eo_fusion.models.predict import sliding_probs
from eo_fusion.train.data import Scene, band_stats, crop, random_origin
from eo_fusion.train.metrics import confusion, scores
from eo_fusion.train.pretrain import augment, lr_at, ranges_of

log = logging.getLogger(__name__)

#: Default class colours (a qualitative palette; cards may override per class).
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
    "#e6550d", "#31a354", "#756bb1", "#636363", "#9ecae1", "#fdae6b", "#a1d99b",
)  # fmt: skip


def holdout_mask(shape: tuple[int, int], block: int, fraction: float, seed: int) -> np.ndarray:
    """True on the pixels of the held-out blocks (at least one block, never all)."""
    h, w = shape
    by, bx = -(-h // block), -(-w // block)
    n = by * bx
    k = min(max(1, round(n * fraction)), n - 1)
    chosen = np.random.default_rng(seed).choice(n, size=k, replace=False)
    flat = np.zeros(n, dtype=bool)
    flat[chosen] = True
    grid = flat.reshape(by, bx)
    return np.kron(grid, np.ones((block, block), dtype=bool))[:h, :w]


def class_indices(
    labelled: Sequence[Scene], ignore_index: int
) -> tuple[list[int], list[np.ndarray]]:
    """Class ids present in the labels (``ignore_index`` left out) and, per scene, each pixel's
    position in that list (-1 = ignored or unlabelled)."""
    ids = sorted(
        {int(v) for s in labelled if s.labels is not None for v in np.unique(s.labels)}
        - {ignore_index}
    )
    table = np.asarray(ids, dtype="int64")
    out = []
    for s in labelled:
        lab = np.nan_to_num(np.asarray(s.labels, dtype="float64"), nan=-1).astype("int64")
        pos = np.searchsorted(table, lab).clip(max=max(len(ids) - 1, 0))
        found = (table[pos] == lab) if len(ids) else np.zeros(lab.shape, bool)
        out.append(np.where(found, pos, -1))
    return ids, out


def task_input(
    scene: Scene, inputs: dict[str, list[str]], stats: dict, temporal: bool
) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """Normalised input array of a scene for a task: ``(C, H, W)`` or ``(T, C, H, W)``."""
    parts, keys, times = [], [], None
    for mod, want in inputs.items():
        if mod not in scene.arrays:
            continue
        have = scene.keys[mod]
        idx = [have.index(k) for k in want if k in have]
        arr = scene.arrays[mod][..., idx, :, :]
        if temporal != (arr.ndim == 4):
            raise BadInputError(
                f"scene '{scene.name}': modality '{mod}' has {arr.ndim - 2}-D bands; the task "
                f"needs {'a time series' if temporal else 'a composite'}",
                fix="set the modality's mode in the scene config",
            )
        # BandNorm also applies a pretrained card's percentile clip (imported SMARTIES models).
        norms = [BandNorm.model_validate(stats[mod][have[i]]) for i in idx]
        parts.append(normalize_bands(arr, norms, axis=-3))
        keys += [have[i] for i in idx]
        if temporal:
            times = scene.times[mod]
    if not parts:
        raise BadInputError(
            f"scene '{scene.name}' has none of the input modalities {list(inputs)}",
            fix="check `inputs` against the scene's modalities",
        )
    return np.concatenate(parts, axis=-3), keys, times


def _set_trainable(enc: SpectralViT, mode: str, blocks: int) -> None:
    for p in enc.parameters():
        p.requires_grad = mode == "full"
    if mode == "partial":
        for blk in list(enc.blocks)[len(enc.blocks) - blocks :]:
            for p in blk.parameters():
                p.requires_grad = True
        for p in enc.norm.parameters():
            p.requires_grad = True


def finetune(
    spec: FinetuneSpec,
    scenes: Sequence[Scene],
    base: ck.LoadedModel | None,
    *,
    progress: bool = True,
) -> ck.LoadedModel:
    """Train the ``spec.task`` head on labelled ``scenes``; returns a model with that task.

    ``base``: a pretrained model (its encoder and normalisation are reused) or ``None`` for a
    random initialisation. The returned card holds the hold-out metrics under
    ``tasks[<task>]["metrics"]``.
    """
    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    labelled = [s for s in scenes if s.labels is not None]
    if not labelled:
        raise BadInputError("no scene has labels", fix="set `labels:` on the training scenes")
    temporal = spec.task == "crops"
    own, own_by_kind = band_stats(labelled)
    stats: dict[str, dict[str, Any]] = {m: dict(v) for m, v in own.items()}
    by_kind: dict[str, Any] = dict(own_by_kind)
    if base is not None:  # keep the pretrained statistics for the bands it knows
        for mod, per_key in base.card.normalization.items():
            stats.setdefault(mod, {}).update(per_key)
        by_kind.update(base.card.normalization_by_kind)
    ids, indices = class_indices(labelled, spec.ignore_index)
    data = []
    for s, idx in zip(labelled, indices, strict=True):
        arr, keys, times = task_input(s, spec.inputs, stats, temporal)
        hold = holdout_mask(s.shape, spec.holdout_block, spec.holdout_fraction, spec.seed)
        doy = None if times is None else pd.DatetimeIndex(times).day_of_year.values
        data.append((s, arr, keys, doy, idx, hold, np.where(hold, -1, idx)))
    keys = data[0][2]
    if base is not None:
        cfg = base.encoder.cfg
        encoder = copy.deepcopy(base.encoder)
    else:
        cfg = EncoderConfig(spec.size, spec.patch_size, spec.image_size, ranges_of(labelled))
        encoder = SpectralViT(cfg)
    take = feature_blocks(cfg.shape.depth, 4)
    cls = CropModel if temporal else LandCoverModel
    net = cls(encoder, len(ids), take, spec.channels)
    _set_trainable(encoder, spec.mode, spec.trainable_blocks)
    counts = np.bincount(
        np.concatenate([d[4][~d[5] & (d[4] >= 0)] for d in data]), minlength=len(ids)
    ).astype("float64")
    weight = None
    if spec.class_weights == "inverse_sqrt":
        w = 1.0 / np.sqrt(np.maximum(counts, 1))
        weight = torch.tensor(w / w.mean(), dtype=torch.float32)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    size = spec.image_size
    t0 = time.perf_counter()
    net.train()
    with Progress(
        TextColumn(f"finetune {spec.task}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
        disable=not progress,
    ) as bar:
        job = bar.add_task("ft", total=spec.steps, loss=float("nan"))
        for step in range(spec.steps):
            xb, yb = [], []
            # One scene per batch: its dates (time series) are shared by the whole batch.
            s, arr, _, doy, idx, hold, train_lab = data[int(rng.integers(len(data)))]
            for _ in range(spec.batch_size):
                for _try in range(20):
                    y, x = random_origin(rng, s.shape, size)
                    lab = crop(train_lab, y, x, size, fill=-1)
                    if (lab >= 0).mean() >= 0.1:
                        break
                win, lab3 = augment([crop(arr, y, x, size), lab[None]], rng)
                xb.append(win)
                yb.append(lab3[0])
            xt = torch.from_numpy(np.stack(xb))
            yt = torch.from_numpy(np.stack(yb))
            for g in opt.param_groups:
                g["lr"] = lr_at(step, spec)
            if temporal:
                if doy is None:
                    raise BadInputError(
                        f"scene '{s.name}': the crop task needs dated (time-series) inputs",
                        fix="set the input modalities' mode to a time series",
                    )
                dt = torch.tensor(np.stack([doy] * len(xb)), dtype=torch.float32)
                logits = net(xt, keys, dt)
            else:
                logits = net(xt, keys)
            loss = F.cross_entropy(logits, yt, weight=weight, ignore_index=-1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(job, advance=1, loss=loss.item())
    seconds = time.perf_counter() - t0
    net.eval()
    cm = np.zeros((len(ids), len(ids)), dtype="int64")
    for _s, arr, k, doy, idx, hold, _train_lab in data:
        doy_t = None if doy is None else torch.tensor(doy, dtype=torch.float32)[None]
        probs = sliding_probs(net, arr, k, n_classes=len(ids), window=size, doy=doy_t)
        cm += confusion(idx, probs.argmax(0), len(ids), ignore=~hold | (idx < 0))
    metrics = scores(cm, ids)
    metrics["confusion"] = cm.tolist()
    classes = [
        {
            "id": c,
            "name": spec.class_names.get(c, f"class {c}"),
            "color": spec.class_colors.get(c, PALETTE[i % len(PALETTE)]),
        }
        for i, c in enumerate(ids)
    ]
    card: dict[str, Any] = base.card.model_dump(mode="json") if base is not None else {}
    card["name"] = spec.name
    # only the head trained here; merge_tasks() combines heads
    card["architecture"] = {"encoder": cfg.to_dict()}
    card["architecture"]["mae"] = False
    card["architecture"][spec.task] = {
        "n_classes": len(ids),
        "take": list(take),
        "channels": spec.channels,
    }
    card["normalization"] = stats
    card["normalization_by_kind"] = by_kind
    card["inference"] = {"window": size, "stride": size // 2}
    card["tasks"] = {}
    card["tasks"][spec.task] = {
        "inputs": {m: [k for k in keys if k in v] for m, v in spec.inputs.items()},
        "optional": list(spec.optional_inputs),
        "mode": "timeseries" if temporal else "composite",
        "classes": classes,
        "ignore_index": spec.ignore_index,
        "metrics": {"holdout": metrics},
        "training": {
            "spec": portable_dump(spec),
            "spec_sha256": spec_hash(spec),
            "pretrained": base.card.name if base is not None else None,
            "scenes": [d[0].name for d in data],
            "holdout": {
                "block_px": spec.holdout_block,
                "fraction": spec.holdout_fraction,
                "seed": spec.seed,
                "train_pixels": int(counts.sum()),
                "holdout_pixels": int(cm.sum()),
            },
            "seconds": round(seconds, 1),
        },
    }
    model = ck.LoadedModel(
        card=ck.ModelCard.model_validate(card),
        encoder=base.encoder if base is not None else SpectralViT(cfg),
    )
    setattr(model, spec.task, net)
    return model


def merge_tasks(models: Sequence[ck.LoadedModel], name: str) -> ck.LoadedModel:
    """One checkpoint with the task heads of several fine-tuned models sharing an encoder."""
    first = models[0]
    tasks = {t: s for m in models for t, s in m.card.tasks.items()}
    heads = {t: getattr(m.card.architecture, t) for m in models for t in m.card.tasks}
    arch = first.card.architecture.model_copy(update=heads)
    card = first.card.updated(name=name, tasks=tasks, architecture=arch)
    merged = ck.LoadedModel(card=card, encoder=first.encoder)
    for m in models:
        for task in m.card.tasks:
            setattr(merged, task, getattr(m, task))
    return merged


def describe(metrics: dict[str, Any]) -> str:
    """One line: OA and mIoU in percent."""
    return f"OA {100 * metrics['oa']:.1f} %, mIoU {100 * metrics['miou']:.1f} %"
