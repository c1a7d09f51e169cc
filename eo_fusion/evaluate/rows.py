"""The compared models. Each *group* trains once per split and returns the confusion matrices
(test pixels only) of the rows it produces:

* ``ours``: our spectral ViT pretrained (MAE, :func:`eo_fusion.train.pretrain.pretrain`) on the
  split's training pixels only, then fine-tuned with the land-cover head
  (:func:`eo_fusion.train.finetune.finetune`) on the S2 composite + DEM; also scored with the
  masked modality removed at inference (``ours-pretrained-masked``), and a linear probe on the
  pretrained encoder's frozen features;
* ``random``: the same fine-tuning from a random initialisation, and a probe on a random encoder;
* ``galileo``: Galileo-nano frozen + the dense decoder on its per-patch features of the monthly
  series (+ elevation); also without elevation at inference; a probe on its features;
* ``presto``: Presto frozen + an MLP on its per-pixel embeddings of the monthly series
  (+ elevation); a probe on the embeddings;
* ``forest``: a per-pixel random forest on the raw composite bands; a probe on the same bands.

Frozen published encoders were never trained on these scenes, so their full-scene features are
computed once per scene (Presto's are per pixel and so cannot see the test blocks at all); the
training features of Galileo's head come from the split's training view, like every other row's.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from eo_fusion.evaluate import features as fx
from eo_fusion.evaluate.config import EvaluateSpec
from eo_fusion.evaluate.scenes import composite, monthly, without
from eo_fusion.models.predict import sliding_probs
from eo_fusion.train.data import Scene, band_stats, crop
from eo_fusion.train.finetune import finetune, task_input
from eo_fusion.train.metrics import confusion
from eo_fusion.train.pretrain import pretrain

CM = np.ndarray


@dataclass
class SceneSplit:
    """One labelled scene within a split (``full``/``train`` keep the series modality)."""

    full: Scene
    train: Scene
    pixels: fx.PixelSet
    latlon: tuple[float, float]


@dataclass
class SplitContext:
    """Everything a group needs for one split (one fold of one seed)."""

    spec: EvaluateSpec
    seed: int
    fold: int
    scenes: list[SceneSplit]
    class_ids: list[int]
    work: Path
    unlabelled: list[Scene] = field(default_factory=list)
    cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)

    @property
    def train_seed(self) -> int:
        return 1000 * self.seed + self.fold

    def wants(self, *rows: str) -> bool:
        return any(r in self.spec.rows for r in rows)

    def probe(self, train: list[np.ndarray], test: list[np.ndarray]) -> CM:
        p = self.spec.probe
        return fx.pixel_confusion(
            [s.pixels for s in self.scenes],
            train,
            test,
            fx.linear_probe(p.c, p.max_iter, self.train_seed),
            n_classes=self.n_classes,
            max_pixels=p.max_pixels,
            seed=self.train_seed,
        )


# ------------------------------------------------------------------------------------------------
# Our model.
# ------------------------------------------------------------------------------------------------


def _vit_features(encoder: Any, arr: np.ndarray, keys: list[str], win: int) -> CM:
    """Frozen per-patch features of a normalised ``(C, H, W)`` array, repeated to pixels:
    ``(D, H, W)`` (non-overlapping ``win`` px windows; NaN = no data, masked by the encoder)."""
    c, h, w = arr.shape
    hp, wp = -(-h // win) * win, -(-w // win) * win
    x = np.full((c, hp, wp), np.nan, dtype="float32")
    x[:, :h, :w] = arr
    p = int(encoder.cfg.patch_size)
    g = win // p
    out = np.zeros((int(encoder.dim), hp // p, wp // p), dtype="float32")
    spots = [(y, x0) for y in range(0, hp, win) for x0 in range(0, wp, win)]
    with torch.inference_mode():
        for i in range(0, len(spots), 16):
            chunk = spots[i : i + 16]
            batch = torch.from_numpy(np.stack([x[:, y : y + win, q : q + win] for y, q in chunk]))
            tok, _ = encoder(batch, keys)
            tok = tok[:, -g * g :]  # drop a CLS token if the encoder has one
            maps = tok.transpose(1, 2).reshape(len(chunk), -1, g, g).numpy()
            for (y, q), m in zip(chunk, maps, strict=True):
                out[:, y // p : y // p + g, q // p : q // p + g] = m
    return out.repeat(p, axis=1).repeat(p, axis=2)[:, :h, :w]


def _probe_vit(ctx: SplitContext, encoder: torch.nn.Module, stats: dict) -> CM:
    spec = ctx.spec
    win = int(spec.ours.finetune.get("image_size", 32))
    maps = []
    for view in ("train", "full"):
        per_scene = []
        for s in ctx.scenes:
            arr, keys, _ = task_input(
                composite(getattr(s, view), spec.series), spec.inputs, stats, False
            )
            per_scene.append(_vit_features(encoder, arr, keys, win))
        maps.append(per_scene)
    return ctx.probe(maps[0], maps[1])


def _score_finetuned(ctx: SplitContext, model: Any, drop: str | None) -> CM:
    """Confusion of a fine-tuned land-cover model on the test pixels of every scene."""
    card = model.card
    ids = [c.id for c in card.task("landcover").classes]
    to_global = np.array([ctx.class_ids.index(i) for i in ids], dtype="int64")
    win = int(card.window)
    cm = np.zeros((ctx.n_classes, ctx.n_classes), dtype="int64")
    for s in ctx.scenes:
        full = without(composite(s.full, ctx.spec.series), drop)
        arr, keys, _ = task_input(full, ctx.spec.inputs, card.normalization, False)
        probs = sliding_probs(model.landcover, arr, keys, n_classes=len(ids), window=win)
        pred = to_global[probs.argmax(0)]
        px = s.pixels
        cm += confusion(px.index, pred, ctx.n_classes, ignore=~px.test | (px.index < 0))
    return cm


def _finetune(ctx: SplitContext, base: Any, tag: str) -> Any:
    spec = ctx.spec
    train = [composite(s.train, spec.series) for s in ctx.scenes]
    whole = max(max(s.full.shape) for s in ctx.scenes)
    fspec = spec.finetune_spec(ctx.work / tag, ctx.train_seed, whole)
    return finetune(fspec, train, base, progress=False)


def group_ours(ctx: SplitContext) -> dict[str, CM]:
    """Pretrain on the training pixels, fine-tune, score with and without the masked modality."""
    spec = ctx.spec
    pre_scenes = [Scene(s.name, s.arrays, s.keys, s.times) for s in (x.train for x in ctx.scenes)]
    out = ctx.work / "pretrain"
    shutil.rmtree(out, ignore_errors=True)  # never resume another split's pretraining
    pspec = spec.pretrain_spec(out, ctx.train_seed)
    base = pretrain(pspec, pre_scenes + ctx.unlabelled, progress=False)
    res: dict[str, CM] = {}
    if ctx.wants("probe-ours-pretrained"):
        res["probe-ours-pretrained"] = _probe_vit(ctx, base.encoder, base.card.normalization)
    if ctx.wants("ours-pretrained", "ours-pretrained-masked"):
        model = _finetune(ctx, base, "finetune")
        res["ours-pretrained"] = _score_finetuned(ctx, model, None)
        if spec.masked_modality is not None:
            res["ours-pretrained-masked"] = _score_finetuned(ctx, model, spec.masked_modality)
    return res


def group_random(ctx: SplitContext) -> dict[str, CM]:
    """The same fine-tuning from a random initialisation; a probe on a random encoder."""
    model = _finetune(ctx, None, "finetune-random")
    res = {"ours-random": _score_finetuned(ctx, model, None)}
    if ctx.wants("probe-ours-random"):
        torch.manual_seed(ctx.train_seed)
        enc = type(model.landcover.encoder)(model.landcover.encoder.cfg).eval()
        stats, _ = band_stats([composite(s.train, ctx.spec.series) for s in ctx.scenes])
        res["probe-ours-random"] = _probe_vit(ctx, enc, stats)
    return res


# ------------------------------------------------------------------------------------------------
# Raw bands: random forest and probe.
# ------------------------------------------------------------------------------------------------


def _band_maps(ctx: SplitContext, view: str) -> list[np.ndarray]:
    """The composite input bands in physical units, ``(C, H, W)`` per scene."""
    out = []
    for s in ctx.scenes:
        comp = composite(getattr(s, view), ctx.spec.series)
        parts = [
            comp.arrays[m][[comp.keys[m].index(k) for k in keys if k in comp.keys[m]]]
            for m, keys in ctx.spec.inputs.items()
            if m in comp.arrays
        ]
        out.append(np.concatenate(parts))
    return out


def group_forest(ctx: SplitContext) -> dict[str, CM]:
    """Random forest and linear probe on the raw bands."""
    train, test = _band_maps(ctx, "train"), _band_maps(ctx, "full")
    res = {}
    if ctx.wants("forest"):
        f = ctx.spec.forest
        res["forest"] = fx.pixel_confusion(
            [s.pixels for s in ctx.scenes],
            train,
            test,
            fx.random_forest(f.n_estimators, f.min_samples_leaf, ctx.train_seed),
            n_classes=ctx.n_classes,
            max_pixels=None,
            seed=ctx.train_seed,
        )
    if ctx.wants("probe-bands"):
        res["probe-bands"] = ctx.probe(train, test)
    return res


def series_input(ctx: SplitContext, scene: Scene, drop: str | None = None) -> tuple:
    """Monthly series of ``scene`` with the other input modalities repeated over months:
    ``(x (1, M, C, H, W) physical units, keys, months (M,))``."""
    spec = ctx.spec
    arr, months = monthly(scene.arrays[spec.series], scene.times[spec.series])
    keys = list(scene.keys[spec.series])
    parts = [arr]
    for m, want in spec.inputs.items():
        if m == spec.series or m == drop or m not in scene.arrays:
            continue
        idx = [scene.keys[m].index(k) for k in want if k in scene.keys[m]]
        parts.append(np.broadcast_to(scene.arrays[m][idx], (len(arr), len(idx), *arr.shape[2:])))
        keys += [scene.keys[m][i] for i in idx]
    x = np.concatenate(parts, axis=1)[None]
    return torch.from_numpy(np.ascontiguousarray(x)), keys, months


def window_batches(
    ctx: SplitContext, maps: list[tuple[np.ndarray, ...]], labels: list[np.ndarray], win: int
):
    """Random ``win`` px crops of per-scene arrays (all ``(…, H, W)``) and labels, at origins on
    the 4 px patch grid, with at least 10 % labelled pixels where possible. Arrays may be on a
    coarser grid than the labels (per-patch features): they are cropped at the same place."""
    rng = np.random.default_rng(ctx.train_seed)
    while True:
        batch: list[list[np.ndarray]] = []
        for _ in range(ctx.spec.heads.batch_size):
            i = int(rng.integers(len(maps)))
            h, w = labels[i].shape
            for _try in range(20):
                y = 4 * int(rng.integers(0, max(1, (h - win) // 4 + 1)))
                x = 4 * int(rng.integers(0, max(1, (w - win) // 4 + 1)))
                lab = crop(labels[i], y, x, win, fill=-1)
                if (lab >= 0).mean() >= 0.1:
                    break
            batch.append([_crop_scaled(a, h, y, x, win) for a in maps[i]] + [lab])
        yield [torch.from_numpy(np.stack(parts)) for parts in zip(*batch, strict=True)]


def _crop_scaled(a: np.ndarray, h: int, y: int, x: int, win: int) -> np.ndarray:
    """Crop of ``a`` at the window ``(y, x, win)`` of an ``h``-row grid (``a`` may be coarser)."""
    f = h // a.shape[-2]
    return crop(a, y // f, x // f, win // f, fill=0)


def train_head(ctx: SplitContext, module: torch.nn.Module, loss_of: Callable, steps: int) -> None:
    """AdamW on the trainable parameters of ``module`` for ``steps`` steps of ``loss_of()``."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=ctx.spec.heads.lr, weight_decay=0.01)
    module.train()
    for _ in range(steps):
        loss = loss_of()
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()


def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target, ignore_index=-1)
