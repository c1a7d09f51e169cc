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
from dataclasses import dataclass
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
from eo_fusion.models.heads import CropModel, LandCoverModel, sensor_of, union_dates
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
    """Normalised input array of a scene for a task: ``(C, H, W)`` or ``(T, C, H, W)``.

    Time series keep each modality's own dates: the rows are the union of their dates
    (:func:`~eo_fusion.models.heads.union_dates`; NaN in the other modalities' channels).
    """
    parts, keys, times = [], [], []
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
            times.append(scene.times[mod])
    if not parts:
        raise BadInputError(
            f"scene '{scene.name}' has none of the input modalities {list(inputs)}",
            fix="check `inputs` against the scene's modalities",
        )
    if temporal:
        arr, when = union_dates(list(zip(parts, times, strict=True)))
        return arr, keys, when
    return np.concatenate(parts, axis=-3), keys, None


def _set_trainable(enc: SpectralViT, mode: str, blocks: int) -> None:
    for p in enc.parameters():
        p.requires_grad = mode == "full"
    if mode == "partial":
        for blk in list(enc.blocks)[len(enc.blocks) - blocks :]:
            for p in blk.parameters():
                p.requires_grad = True
        for p in enc.norm.parameters():
            p.requires_grad = True


@dataclass(frozen=True)
class _SceneData:
    """One labelled scene made ready for training and evaluation."""

    scene: Scene
    #: Normalised input, ``(C, H, W)`` or ``(T, C, H, W)``.
    x: np.ndarray
    #: Band registry key of each channel of ``x``.
    keys: list[str]
    #: Day of year of each date (time series), else ``None``.
    doy: np.ndarray | None
    #: Per pixel: position of its class in the class list, -1 = ignored or unlabelled.
    classes: np.ndarray
    #: True on the held-out pixels.
    holdout: np.ndarray
    #: ``classes`` with the held-out pixels set to -1 (what training sees).
    train_classes: np.ndarray
    #: Channel indices of each input modality (what modality dropout drops together).
    groups: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class _Head:
    """The network being fine-tuned: encoder configuration, tapped blocks and the task model."""

    cfg: EncoderConfig
    take: tuple[int, ...]
    net: torch.nn.Module
    #: sensor groups of the input bands (late fusion)
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Outcome:
    """What training and the hold-out evaluation measured."""

    confusion: np.ndarray
    train_pixels: int
    seconds: float


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
    stats, by_kind = _normalization(labelled, base)
    ids, indices = class_indices(labelled, spec.ignore_index)
    data = [_scene_data(s, idx, spec, stats) for s, idx in zip(labelled, indices, strict=True)]
    head = _build_head(spec, base, labelled, len(ids), data[0].keys)
    train_pixels = np.concatenate([d.classes[~d.holdout & (d.classes >= 0)] for d in data])
    counts = np.bincount(train_pixels, minlength=len(ids)).astype("float64")
    t0 = time.perf_counter()
    _train(head.net, data, spec, _class_weight(spec, counts), rng, progress=progress)
    seconds = time.perf_counter() - t0
    cm = _holdout_confusion(head.net, data, len(ids), spec.image_size)
    outcome = _Outcome(cm, int(counts.sum()), seconds)
    card = _card(spec, base, head, ids, (stats, by_kind), data, outcome)
    model = ck.LoadedModel(
        card=ck.ModelCard.model_validate(card),
        encoder=base.encoder if base is not None else SpectralViT(head.cfg),
    )
    setattr(model, spec.task, head.net)
    return model


def _normalization(
    labelled: Sequence[Scene], base: ck.LoadedModel | None
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Band statistics (per modality and band; per band kind) of the labelled scenes, with a
    pretrained model's own statistics winning for the bands it knows."""
    own, own_by_kind = band_stats(labelled)
    stats: dict[str, dict[str, Any]] = {m: dict(v) for m, v in own.items()}
    by_kind: dict[str, Any] = dict(own_by_kind)
    if base is not None:
        for mod, per_key in base.card.normalization.items():
            stats.setdefault(mod, {}).update(per_key)
        by_kind.update(base.card.normalization_by_kind)
    return stats, by_kind


def _scene_data(scene: Scene, classes: np.ndarray, spec: FinetuneSpec, stats: dict) -> _SceneData:
    x, keys, times = task_input(scene, spec.inputs, stats, spec.task == "crops")
    hold = holdout_mask(scene.shape, spec.holdout_block, spec.holdout_fraction, spec.seed)
    doy = None if times is None else pd.DatetimeIndex(times).day_of_year.values
    groups = tuple(
        idx
        for m, want in spec.inputs.items()
        if m in scene.arrays and (idx := tuple(i for i, k in enumerate(keys) if k in want))
    )
    train = np.where(hold, -1, classes)
    return _SceneData(scene, x, keys, doy, classes, hold, train, groups)


def drop_modalities(
    x: np.ndarray, groups: Sequence[Sequence[int]], prob: float, rng: np.random.Generator
) -> np.ndarray:
    """Modality dropout: each channel group (one input modality) is set to NaN — no data, so
    masked by the model — with probability ``prob``; at least one group always stays.

    ``x``: ``(C, H, W)`` or ``(T, C, H, W)``; returns ``x`` itself when nothing is dropped.
    """
    if prob <= 0 or len(groups) < 2:
        return x
    drop = rng.random(len(groups)) < prob
    if drop.all():
        drop[int(rng.integers(len(groups)))] = False
    if not drop.any():
        return x
    out = x.copy()
    for g in np.flatnonzero(drop):
        out[..., list(groups[int(g)]), :, :] = np.nan
    return out


def _build_head(
    spec: FinetuneSpec,
    base: ck.LoadedModel | None,
    labelled: Sequence[Scene],
    n_classes: int,
    keys: Sequence[str] = (),
) -> _Head:
    """The task model on a copy of the pretrained encoder (or a new one), with the encoder
    parameters frozen or not as ``spec.mode`` says; ``keys``: the input bands (their sensor
    groups are what ``late_concat`` fusion concatenates)."""
    if base is not None:
        cfg = base.encoder.cfg
        encoder = copy.deepcopy(base.encoder)
    else:
        cfg = EncoderConfig(spec.size, spec.patch_size, spec.image_size, ranges_of(labelled))
        encoder = SpectralViT(cfg)
    take = feature_blocks(cfg.shape.depth, 4)
    net: torch.nn.Module
    groups: tuple[str, ...] = ()
    if spec.task == "crops":
        net = CropModel(encoder, n_classes, take, spec.channels)
    else:
        groups = tuple(dict.fromkeys(sensor_of(k) for k in keys))
        net = LandCoverModel(
            encoder, n_classes, take, spec.channels, fusion=spec.fusion, groups=groups
        )
    _set_trainable(encoder, spec.mode, spec.trainable_blocks)
    return _Head(cfg, take, net, groups)


def _class_weight(spec: FinetuneSpec, counts: np.ndarray) -> torch.Tensor | None:
    """Loss weight per class from its training-pixel count (``None``: unweighted)."""
    if spec.class_weights != "inverse_sqrt":
        return None
    w = 1.0 / np.sqrt(np.maximum(counts, 1))
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def _train(
    net: torch.nn.Module,
    data: Sequence[_SceneData],
    spec: FinetuneSpec,
    weight: torch.Tensor | None,
    rng: np.random.Generator,
    *,
    progress: bool,
) -> None:
    """``spec.steps`` AdamW steps of cross-entropy on random windows of the training labels."""
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    keys = data[0].keys  # the first scene's band order is the one the network is fed
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
            # One scene per batch: its dates (time series) are shared by the whole batch.
            d = data[int(rng.integers(len(data)))]
            xt, yt = _batch(d, spec, rng)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, spec)
            logits = _forward(net, xt, keys, d, spec.task == "crops")
            loss = F.cross_entropy(logits, yt, weight=weight, ignore_index=-1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(job, advance=1, loss=loss.item())


def _batch(
    d: _SceneData, spec: FinetuneSpec, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``spec.batch_size`` augmented windows of one scene and their training labels; each
    window is redrawn (up to 20 times) until at least 10 % of it is labelled."""
    size = spec.image_size
    xb, yb = [], []
    for _ in range(spec.batch_size):
        for _try in range(20):
            y, x = random_origin(rng, d.scene.shape, size)
            lab = crop(d.train_classes, y, x, size, fill=-1)
            if (lab >= 0).mean() >= 0.1:
                break
        win, lab3 = augment([crop(d.x, y, x, size), lab[None]], rng)
        win = drop_modalities(win, d.groups, spec.modality_dropout, rng)
        xb.append(win)
        yb.append(lab3[0])
    return torch.from_numpy(np.stack(xb)), torch.from_numpy(np.stack(yb))


def _forward(
    net: torch.nn.Module, xt: torch.Tensor, keys: list[str], d: _SceneData, temporal: bool
) -> torch.Tensor:
    """Logits of a batch; the crop model also takes each date's day of year."""
    if not temporal:
        return net(xt, keys)
    if d.doy is None:
        raise BadInputError(
            f"scene '{d.scene.name}': the crop task needs dated (time-series) inputs",
            fix="set the input modalities' mode to a time series",
        )
    dt = torch.tensor(np.stack([d.doy] * len(xt)), dtype=torch.float32)
    return net(xt, keys, dt)


def _holdout_confusion(
    net: torch.nn.Module, data: Sequence[_SceneData], n_classes: int, window: int
) -> np.ndarray:
    """Confusion matrix on the held-out labelled pixels, from sliding-window predictions over
    each whole scene (as :func:`eo_fusion.models.predict` makes them)."""
    net.eval()
    cm = np.zeros((n_classes, n_classes), dtype="int64")
    for d in data:
        doy_t = None if d.doy is None else torch.tensor(d.doy, dtype=torch.float32)[None]
        probs = sliding_probs(net, d.x, d.keys, n_classes=n_classes, window=window, doy=doy_t)
        cm += confusion(d.classes, probs.argmax(0), n_classes, ignore=~d.holdout | (d.classes < 0))
    return cm


def _card(
    spec: FinetuneSpec,
    base: ck.LoadedModel | None,
    head: _Head,
    ids: list[int],
    normalization: tuple[dict[str, Any], dict[str, Any]],
    data: Sequence[_SceneData],
    outcome: _Outcome,
) -> dict[str, Any]:
    """The model card of the fine-tuned model: the base's card (if any) with only this task."""
    size = spec.image_size
    card: dict[str, Any] = base.card.model_dump(mode="json") if base is not None else {}
    card["name"] = spec.name
    card["tasks"] = {}  # only the head trained here; merge_tasks() combines heads
    card["architecture"] = {"encoder": head.cfg.to_dict()}
    card["architecture"]["mae"] = False
    card["architecture"][spec.task] = {
        "n_classes": len(ids),
        "take": list(head.take),
        "channels": spec.channels,
    }
    if spec.task == "landcover" and spec.fusion != "early":
        card["architecture"][spec.task] |= {"fusion": spec.fusion, "groups": list(head.groups)}
    card["normalization"], card["normalization_by_kind"] = normalization
    card["inference"] = {"window": size, "stride": size // 2}
    card["tasks"][spec.task] = _task_section(spec, base, ids, data, outcome)
    return card


def _task_section(
    spec: FinetuneSpec,
    base: ck.LoadedModel | None,
    ids: list[int],
    data: Sequence[_SceneData],
    outcome: _Outcome,
) -> dict[str, Any]:
    """The card's ``tasks[<task>]`` entry: inputs, classes, hold-out metrics, how it trained."""
    metrics = scores(outcome.confusion, ids)
    metrics["confusion"] = outcome.confusion.tolist()
    keys = data[0].keys
    return {
        "inputs": {m: [k for k in keys if k in v] for m, v in spec.inputs.items()},
        "optional": list(spec.optional_inputs),
        "mode": "timeseries" if spec.task == "crops" else "composite",
        "classes": [
            {
                "id": c,
                "name": spec.class_names.get(c, f"class {c}"),
                "color": spec.class_colors.get(c, PALETTE[i % len(PALETTE)]),
            }
            for i, c in enumerate(ids)
        ],
        "ignore_index": spec.ignore_index,
        "metrics": {"holdout": metrics},
        "training": {
            "spec": portable_dump(spec),
            "spec_sha256": spec_hash(spec),
            "pretrained": base.card.name if base is not None else None,
            "scenes": [d.scene.name for d in data],
            "holdout": {
                "block_px": spec.holdout_block,
                "fraction": spec.holdout_fraction,
                "seed": spec.seed,
                "train_pixels": outcome.train_pixels,
                "holdout_pixels": int(outcome.confusion.sum()),
            },
            "seconds": round(outcome.seconds, 1),
        },
    }


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
