"""Rows of the published encoders, frozen: Galileo-nano + dense decoder, Presto + MLP head.

Both take the monthly series of the labelled scene in physical units (plus elevation, repeated
over months) through their model cards (:mod:`eo_fusion.models.galileo`,
:mod:`eo_fusion.models.presto`); a missing group (Slovenia has no S1) is masked, not zero-filled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from eo_fusion.errors import ModelError
from eo_fusion.evaluate.rows import (
    CM,
    SplitContext,
    ce,
    series_input,
    train_head,
    window_batches,
)
from eo_fusion.models.encoders import load_encoder
from eo_fusion.models.galileo import GalileoLandCover
from eo_fusion.models.presto import PrestoCrop
from eo_fusion.train.data import Scene
from eo_fusion.train.metrics import confusion

GALILEO_PATCH = 4


def _encoder(ctx: SplitContext, name: str) -> tuple[Any, dict]:
    if name not in ctx.cache:
        ctx.cache[name] = load_encoder(name)
    return ctx.cache[name]


def galileo_maps(
    model: GalileoLandCover, x: torch.Tensor, keys: list[str], months: np.ndarray, win: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch features ``(D, Hp/4, Wp/4)`` and per-pixel inputs ``(n, Hp, Wp)`` of a series
    ``x`` ``(1, T, C, H, W)``, on ``win`` px tiles of the scene padded (NaN) to ``Hp × Wp``."""
    _, t, c, h, w = x.shape
    hp, wp = -(-h // win) * win, -(-w // win) * win
    pad = torch.full((t, c, hp, wp), float("nan"))
    pad[..., :h, :w] = x[0]
    spots = [  # a window without any data (all test block / buffer) keeps zero features
        (y, q)
        for y in range(0, hp, win)
        for q in range(0, wp, win)
        if bool(torch.isfinite(pad[..., y : y + win, q : q + win]).any())
    ]
    p, g = GALILEO_PATCH, win // GALILEO_PATCH
    feats = np.zeros((int(model.encoder.dim), hp // p, wp // p), dtype="float32")
    n_pix = int(model.pixel[0].in_channels)  # type: ignore[index, arg-type]
    pix = np.zeros((n_pix, hp, wp), dtype="float32")
    mon = torch.as_tensor(months, dtype=torch.long)
    with torch.inference_mode():
        for i in range(0, len(spots), 8):
            chunk = spots[i : i + 8]
            xb = torch.stack([pad[..., y : y + win, q : q + win] for y, q in chunk])
            got = _embed_windows(model, xb, keys, mon)
            if got is None:
                continue
            f, px, chunk = got[0], got[1], [chunk[j] for j in got[2]]
            for (y, q), fm, pm in zip(chunk, f, px, strict=True):
                feats[:, y // p : y // p + g, q // p : q // p + g] = fm
                pix[:, y : y + win, q : q + win] = pm
    return feats, pix


def _embed_windows(
    model: GalileoLandCover, xb: torch.Tensor, keys: list[str], months: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, list[int]] | None:
    """Features and pixel inputs of a batch of windows, and which windows they are: a window
    in which no patch has a complete band group (blanked test block or buffer) is left out."""
    try:
        f, inp = model.embed(xb, keys, months[None].expand(len(xb), -1))
    except ModelError:
        if len(xb) == 1:
            return None
        parts = [_embed_windows(model, xb[j : j + 1], keys, months) for j in range(len(xb))]
        kept = [(j, p) for j, p in enumerate(parts) if p is not None]
        if not kept:
            return None
        feats = np.concatenate([p[0] for _, p in kept])
        pix = np.concatenate([p[1] for _, p in kept])
        return feats, pix, [j for j, _ in kept]
    px = torch.cat([inp.s_t_x.mean(dim=3), inp.sp_x], dim=-1).permute(0, 3, 1, 2)
    return f.numpy(), px.numpy(), list(range(len(xb)))


def _galileo_logits(model: GalileoLandCover, feats: torch.Tensor, pix: torch.Tensor):
    """Logits ``(B, K, H, W)`` from features ``(B, D, h, w)`` and pixels ``(B, n, H, W)``."""
    grid = tuple(feats.shape[-2:])
    tokens = feats.flatten(2).transpose(1, 2)
    return model.decoder([tokens], grid, tuple(pix.shape[-2:]), model.pixel(pix))


def _scene_maps(ctx, model, scene: Scene, drop: str | None, tag: str | None):
    """Galileo maps of a scene view; full-scene views are cached across splits."""
    key = ("galileo", scene.name, tag, drop)
    if tag is not None and key in ctx.cache:
        return ctx.cache[key]
    x, keys, months = series_input(ctx, scene, drop)
    maps = galileo_maps(model, x, keys, months, ctx.spec.heads.window)
    if tag is not None:
        ctx.cache[key] = maps
    return maps


def _pad_labels(index: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.full(shape, -1, dtype="int64")
    out[: index.shape[0], : index.shape[1]] = index
    return out


def group_galileo(ctx: SplitContext) -> dict[str, CM]:
    """Galileo-nano frozen + dense decoder; with and without the masked modality; probe."""
    enc, card = _encoder(ctx, "galileo-nano")
    torch.manual_seed(ctx.train_seed)
    hs = ctx.spec.heads
    model = GalileoLandCover(
        enc, card, ctx.n_classes, patch_size=GALILEO_PATCH, channels=hs.channels
    )
    train = [_scene_maps(ctx, model, s.train, None, None) for s in ctx.scenes]
    labels = [
        _pad_labels(np.where(s.pixels.trainable, s.pixels.index, -1), m[1].shape[-2:])
        for s, m in zip(ctx.scenes, train, strict=True)
    ]
    res: dict[str, CM] = {}
    if ctx.wants("galileo", "galileo-masked"):
        batches = window_batches(ctx, train, labels, hs.window)

        def loss() -> torch.Tensor:
            f, px, lab = next(batches)
            return ce(_galileo_logits(model, f, px), lab)

        train_head(ctx, model, loss, hs.steps)
        drops: list[tuple[str, str | None]] = [("galileo", None)]
        if ctx.spec.masked_modality is not None:
            drops.append(("galileo-masked", ctx.spec.masked_modality))
        for row, drop in drops:
            res[row] = _score_galileo(ctx, model, drop)
    if ctx.wants("probe-galileo"):
        up = [_to_pixels(m[0], s.full.shape) for s, m in zip(ctx.scenes, train, strict=True)]
        full = [_scene_maps(ctx, model, s.full, None, "full") for s in ctx.scenes]
        test = [_to_pixels(m[0], s.full.shape) for s, m in zip(ctx.scenes, full, strict=True)]
        res["probe-galileo"] = ctx.probe(up, test)
    return res


def _to_pixels(feats: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    p = GALILEO_PATCH
    return feats.repeat(p, axis=1).repeat(p, axis=2)[:, : shape[0], : shape[1]]


def _score_galileo(ctx: SplitContext, model: GalileoLandCover, drop: str | None) -> CM:
    cm = np.zeros((ctx.n_classes, ctx.n_classes), dtype="int64")
    for s in ctx.scenes:
        feats, pix = _scene_maps(ctx, model, s.full, drop, "full")
        with torch.inference_mode():
            logits = _galileo_logits(
                model, torch.from_numpy(feats)[None], torch.from_numpy(pix)[None]
            )
        h, w = s.full.shape
        pred = logits[0].argmax(0).numpy()[:h, :w]
        px = s.pixels
        cm += confusion(px.index, pred, ctx.n_classes, ignore=~px.test | (px.index < 0))
    return cm


# ------------------------------------------------------------------------------------------------
# Presto.
# ------------------------------------------------------------------------------------------------


def presto_embeddings(ctx: SplitContext, head: PrestoCrop, scene: Scene, latlon) -> np.ndarray:
    """Per-pixel Presto embeddings ``(D, H, W)`` of the full scene (cached across splits: a
    pixel's embedding depends on its own series only)."""
    key = ("presto", scene.name)
    if key not in ctx.cache:
        x, keys, months = series_input(ctx, scene)
        ll = torch.tensor([latlon], dtype=torch.float32)
        with torch.inference_mode():
            emb = head.embed(x, keys, torch.as_tensor(months, dtype=torch.long)[None], ll)
        ctx.cache[key] = emb[0].numpy()
    return ctx.cache[key]


def group_presto(ctx: SplitContext) -> dict[str, CM]:
    """Presto frozen + MLP head on per-pixel embeddings; probe on the embeddings."""
    enc, card = _encoder(ctx, "presto")
    torch.manual_seed(ctx.train_seed)
    hs = ctx.spec.heads
    head = PrestoCrop(enc, card, ctx.n_classes, hidden=hs.hidden)
    maps = [presto_embeddings(ctx, head, s.full, s.latlon) for s in ctx.scenes]
    res: dict[str, CM] = {}
    if ctx.wants("presto"):
        x = torch.from_numpy(
            np.concatenate(
                [m[:, s.pixels.trainable].T for s, m in zip(ctx.scenes, maps, strict=True)]
            )
        )
        y = torch.from_numpy(
            np.concatenate([s.pixels.index[s.pixels.trainable] for s in ctx.scenes])
        )
        rng = torch.Generator().manual_seed(ctx.train_seed)

        def loss() -> torch.Tensor:
            pick = torch.randint(len(y), (hs.pixels_per_step,), generator=rng)
            return ce(head.head(x[pick]), y[pick])

        train_head(ctx, head, loss, hs.steps)
        cm = np.zeros((ctx.n_classes, ctx.n_classes), dtype="int64")
        for s, m in zip(ctx.scenes, maps, strict=True):
            with torch.inference_mode():
                logits = head.head(torch.from_numpy(m.reshape(m.shape[0], -1).T))
            pred = logits.argmax(1).numpy().reshape(s.full.shape)
            px = s.pixels
            cm += confusion(px.index, pred, ctx.n_classes, ignore=~px.test | (px.index < 0))
        res["presto"] = cm
    if ctx.wants("probe-presto"):
        res["probe-presto"] = ctx.probe(maps, maps)
    return res
