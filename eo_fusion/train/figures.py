"""Figures of a pretrained masked autoencoder (used by ``make model`` and notebook 03)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from eo_fusion.models import checkpoint as ck
from eo_fusion.train.data import Scene, crop, normalise


def reconstruction_figure(model: ck.LoadedModel, scenes: list[Scene], path: Path) -> None:
    """Masked-patch reconstructions of a few sample windows (RGB of S2 bands)."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    assert model.mae is not None
    stats = model.card.normalization
    rgb = ["s2:B04", "s2:B03", "s2:B02"]
    picks: list[tuple[Scene, str]] = []
    for sc in scenes:
        for mod, keys in sc.keys.items():
            if all(k in keys for k in rgb) and len(picks) < 3:
                picks.append((sc, mod))
                break
    size = model.card.window * 2
    p = model.encoder.cfg.patch_size
    fig = Figure(figsize=(9, 3 * len(picks)))
    axes = fig.subplots(len(picks), 3, squeeze=False)
    gen = torch.Generator().manual_seed(1)
    for row, (sc, mod) in enumerate(picks):
        arr = normalise(sc, stats).arrays[mod]
        if arr.ndim == 4:  # clearest date of a time series
            arr = arr[int(np.argmax(np.isfinite(arr).mean(axis=(1, 2, 3))))]
        h, w = sc.shape
        win = crop(arr, max(0, (h - size) // 2), max(0, (w - size) // 2), size)
        x = torch.from_numpy(win[None])
        keys = sc.keys[mod]
        per_patch = model.card.training["pretrain"]["spec"].get("target_norm") == "patch"
        with torch.inference_mode():
            out = model.mae(x, keys, generator=gen)
        idx = [keys.index(k) for k in rgb]
        tgt = torch.from_numpy(win[None])
        # Undo the per-patch normalisation of the targets to show predictions in input units.
        from eo_fusion.models.mae import patchify, unpatchify

        pred = out.pred[:, : len(keys)]
        if per_patch:
            tp = patchify(tgt, p)
            mean = torch.nanmean(tp, dim=-1, keepdim=True)
            std = torch.sqrt(torch.nanmean((tp - mean) ** 2, dim=-1, keepdim=True) + 1e-6)
            pred = unpatchify(patchify(pred, p) * std + mean, p, size, size)
        m = out.mask.reshape(1, 1, size // p, size // p)
        m = m.repeat_interleave(p, 2).repeat_interleave(p, 3)[0, 0].numpy().astype(bool)
        orig = win[idx]
        masked = np.where(m, np.nan, orig)
        recon = np.where(m, pred[0, idx].numpy(), orig)
        lo, hi = np.nanpercentile(orig, 2), np.nanpercentile(orig, 98)
        for col, (img, title) in enumerate(
            ((orig, "input"), (masked, "75 % of patches masked"), (recon, "reconstruction"))
        ):
            show = np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo), 0, 1).transpose(1, 2, 0)
            axes[row, col].imshow(show)
            axes[row, col].set_title(f"{sc.name[:28]} {mod}\n{title}", fontsize=8)
            axes[row, col].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
