"""MAE pretraining loop: random windows of every scene, cross-sensor mixup, band dropout.

Each step draws one *view* (a modality of a scene, or a co-located pair of modalities), a batch
of random windows of it (random date for time series, random flips/rotations), optionally a
random subset of its bands (band/modality dropout: the spectral embedding accepts any subset), and,
for pairs, mixes the two sensors' patch tokens before masking (see :mod:`eo_fusion.models.mae`).
Inputs are normalised as SMARTIES does (1st/99th-percentile clip, then standardisation) or by
mean/std (``normalization: standard``); the statistics go into the model card.

Outputs in ``spec.out``: ``last/`` (resumable checkpoint: model + optimiser + RNG state),
``model/`` (final encoder + MAE), ``loss.csv`` and ``loss.png``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file

from eo_fusion.config import portable_dump, spec_hash
from eo_fusion.errors import ModelError
from eo_fusion.files import atomic_write_text
from eo_fusion.models import checkpoint as ck
from eo_fusion.models.card import Architecture, BandNorm, InferenceSpec
from eo_fusion.models.config import PretrainSpec
from eo_fusion.models.encoder import EncoderConfig, SpectralViT
from eo_fusion.models.mae import MAE
from eo_fusion.models.spectral import ALL_RANGES, native_range, resolve_band
from eo_fusion.train.data import (
    Scene,
    View,
    band_stats,
    band_subset,
    crop,
    normalise,
    pick_date,
    pretrain_views,
    random_origin,
)

log = logging.getLogger(__name__)


def ranges_of(scenes: Sequence[Scene]) -> tuple[str, ...]:
    """The spectral ranges the scenes' bands fall into, in :data:`ALL_RANGES` order."""
    seen = {
        r
        for sc in scenes
        for keys in sc.keys.values()
        for k in keys
        if (r := native_range(resolve_band(k))) is not None
    }
    return tuple(r for r in ALL_RANGES if r in seen)


def percentile_stats(
    scenes: Sequence[Scene],
) -> tuple[dict[str, dict[str, BandNorm]], dict[str, BandNorm]]:
    """SMARTIES normalisation per modality and band, and pooled per band kind (physical units).

    1st/99th percentiles of the finite values, then mean and std of the values clipped to them
    and scaled to 0–1. A near-constant band (p99 = p1, e.g. an empty OSM layer) falls back to
    mean/std with a 1e-3 floor on the spread.
    """
    acc: dict[str, dict[str, list[np.ndarray]]] = {}
    kinds: dict[str, list[np.ndarray]] = {}
    for sc in scenes:
        for mod, arr in sc.arrays.items():
            for i, key in enumerate(sc.keys[mod]):
                v = arr[..., i, :, :].ravel()
                v = v[np.isfinite(v)]
                if v.size:
                    acc.setdefault(mod, {}).setdefault(key, []).append(v)
                    kinds.setdefault(resolve_band(key).kind, []).append(v)
    stats = {
        mod: {key: _percentile_norm(np.concatenate(parts)) for key, parts in per.items()}
        for mod, per in acc.items()
    }
    return stats, {k: _percentile_norm(np.concatenate(p)) for k, p in kinds.items()}


def _percentile_norm(v: np.ndarray) -> BandNorm:
    p1, p99 = (float(q) for q in np.percentile(v, [1, 99]))
    if not p99 > p1:
        return BandNorm(mean=float(v.mean()), std=float(max(v.std(), 1e-3)))
    u = np.clip((v - p1) / (p99 - p1), 0, 1)
    return BandNorm(mean=float(u.mean()), std=float(max(u.std(), 1e-3)), p1=p1, p99=p99)


def augment(arrs: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip / 90° rotation applied to co-located windows."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrs:
        a = np.rot90(a, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(a[..., ::-1] if flip else a))
    return out


def draw_batch(
    scenes: Sequence[Scene],
    view: View,
    spec: PretrainSpec,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, list[str], tuple[torch.Tensor, list[str]] | None]:
    """One batch of a view: ``(x, keys, pair)`` with NaN for no data."""
    sc = scenes[view.scene]
    partner = view.partner
    use_pair = partner is not None and rng.random() < spec.mixup_prob
    mods = [view.modality] + ([partner] if use_pair and partner is not None else [])
    subsets = [band_subset(len(sc.keys[m]), rng, spec.band_dropout) for m in mods]
    batches: list[list[np.ndarray]] = [[] for _ in mods]
    for _ in range(spec.batch_size):
        for _try in range(10):  # avoid windows that are mostly no data
            y, x = random_origin(rng, sc.shape, spec.image_size)
            wins = [
                crop(pick_date(sc.arrays[m], rng)[sub], y, x, spec.image_size)
                for m, sub in zip(mods, subsets, strict=True)
            ]
            if np.isfinite(wins[0]).mean() >= 0.3:
                break
        for i, w in enumerate(augment(wins, rng)):
            batches[i].append(w)
    xs = [torch.from_numpy(np.stack(b)) for b in batches]
    keys = [[sc.keys[m][j] for j in sub] for m, sub in zip(mods, subsets, strict=True)]
    pair = (xs[1], keys[1]) if use_pair else None
    return xs[0], keys[0], pair


def resume_key(spec: PretrainSpec) -> str:
    """Hash of the settings a resumed run must share (steps, threads and checkpointing may
    change between runs)."""
    return spec_hash(spec.model_copy(update={"steps": 1, "threads": 1, "checkpoint_every": 1}))


def lr_at(step: int, spec: Any) -> float:
    """Linear warm-up then cosine decay to 5 % of the peak."""
    warm = getattr(spec, "warmup_steps", 0)
    if step < warm:
        return spec.lr * (step + 1) / warm
    t = (step - warm) / max(1, spec.steps - warm)
    return spec.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def _save_state(folder: Path, model: ck.LoadedModel, opt: torch.optim.Optimizer, meta: dict):
    ck.save(model, folder)
    flat = {}
    for idx, st in opt.state_dict()["state"].items():
        for name, v in st.items():
            flat[f"{idx}.{name}"] = v.contiguous() if torch.is_tensor(v) else torch.tensor(v)
    save_file(flat, str(folder / "optimizer.safetensors"))
    atomic_write_text(folder / "train_state.json", json.dumps(meta))


def _load_state(folder: Path, opt: torch.optim.Optimizer) -> None:
    flat = load_file(folder / "optimizer.safetensors")
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in flat.items():
        idx, name = k.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def new_model(spec: PretrainSpec, scenes: Sequence[Scene]) -> tuple[ck.LoadedModel, list[Scene]]:
    """A fresh encoder + MAE whose card holds the scenes' normalisation, and the normalised
    scenes."""
    stats: Mapping[str, Mapping[str, Any]]
    by_kind: Mapping[str, Any]
    if spec.normalization == "percentile":
        stats, by_kind = percentile_stats(scenes)
    else:
        stats, by_kind = band_stats(scenes)
    cfg = EncoderConfig(spec.size, spec.patch_size, spec.image_size, ranges_of(scenes))
    encoder = SpectralViT(cfg)
    provenance: dict[str, Any] = {
        "spec": portable_dump(spec),
        "spec_sha256": spec_hash(spec),
        "scenes": [
            {"name": s.name, "shape": list(s.shape), "modalities": s.keys, "sources": s.sources}
            for s in scenes
        ],
    }
    card = ck.ModelCard(
        name=spec.name,
        architecture=Architecture(encoder=cfg, mae=True),
        normalization=stats,  # type: ignore[arg-type]  # lists are validated into BandNorm
        normalization_by_kind=by_kind,  # type: ignore[arg-type]
        inference=InferenceSpec(window=spec.image_size, stride=spec.image_size // 2),
        training={"pretrain": provenance},
    )
    model = ck.LoadedModel(card=card, encoder=encoder, mae=MAE(encoder))
    return model, [normalise(sc, stats) for sc in scenes]


def _resume(
    spec: PretrainSpec,
    last: Path,
    model: ck.LoadedModel,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
) -> tuple[int, list]:
    """Restore a run of the same settings from ``last``; returns (start step, loss curve)."""
    if not (last / "train_state.json").is_file():
        return 0, []
    meta = json.loads((last / "train_state.json").read_text(encoding="utf-8"))
    if meta.get("resume_key") != resume_key(spec):
        log.warning("%s holds a run of a different config; starting afresh", last)
        return 0, []
    resumed = ck.load(last)
    model.mae.load_state_dict(resumed.mae.state_dict())  # type: ignore[union-attr]
    _load_state(last, opt)
    rng.bit_generator.state = meta["rng"]
    torch.manual_seed(spec.seed + meta["step"])
    log.info("resuming pretraining at step %d from %s", meta["step"], last)
    return meta["step"], meta["curve"]


def pretrain(
    spec: PretrainSpec,
    scenes: Sequence[Scene],
    *,
    progress: bool = True,
) -> ck.LoadedModel:
    """Pretrain an encoder + MAE on ``scenes`` (physical units); resumes from ``out/last``."""
    if not scenes:
        raise ModelError("no training scenes", fix="check the pretraining config's data section")
    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    model, normed = new_model(spec, scenes)
    views = pretrain_views(normed, spec.data.pairs)
    mae = model.mae
    assert mae is not None
    opt = torch.optim.AdamW(mae.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    start, curve = _resume(spec, out / "last", model, opt, rng)
    mae.train()
    t0 = time.perf_counter()
    with Progress(
        TextColumn("pretrain"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task("pretrain", total=spec.steps, completed=start, loss=float("nan"))
        for step in range(start, spec.steps):
            view = views[int(rng.integers(len(views)))]
            x, keys, pair = draw_batch(normed, view, spec, rng)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, spec)
            res = mae(
                x, keys, pair=pair, mask_ratio=spec.mask_ratio, mix_ratio=spec.mix_ratio,
                target_norm=spec.target_norm, mixup=spec.mixup,
            )  # fmt: skip
            opt.zero_grad()
            res.loss.backward()
            torch.nn.utils.clip_grad_norm_(mae.parameters(), 1.0)
            opt.step()
            curve.append([step + 1, res.loss.item(), view.modality, view.partner or ""])
            bar.update(task, advance=1, loss=curve[-1][1])
            if (step + 1) % spec.checkpoint_every == 0 or step + 1 == spec.steps:
                meta = {"step": step + 1, "curve": curve, "rng": rng.bit_generator.state,
                        "resume_key": resume_key(spec)}  # fmt: skip
                _save_state(out / "last", model, opt, meta)
    mae.eval()
    provenance = {
        **model.card.training["pretrain"],
        "seconds": round(time.perf_counter() - t0, 1),
        "final_loss_mean_last_20": float(np.mean([c[1] for c in curve[-20:]])),
    }
    model.card = model.card.updated(training={"pretrain": provenance})
    write_curve(curve, out)
    ck.save(model, out / "model")
    return model


def write_curve(curve: Sequence[Sequence[Any]], out: Path) -> None:
    """``loss.csv`` (step, loss, modality, partner) and ``loss.png`` (with a running mean)."""
    with open(out / "loss.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "modality", "partner"])
        w.writerows(curve)
    # A bare Figure (no pyplot): draws off-screen without switching the caller's backend,
    # so notebooks keep their inline figures.
    from matplotlib.figure import Figure

    steps = np.array([c[0] for c in curve])
    loss = np.array([c[1] for c in curve])
    k = max(1, len(loss) // 20)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot(steps, loss, lw=0.5, alpha=0.4, label="per step")
    ax.plot(steps[k - 1 :], smooth, lw=2, label=f"running mean ({k} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("masked reconstruction MSE (normalised)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
