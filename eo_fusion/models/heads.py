"""Task heads on top of the spectral ViT.

* :class:`DenseDecoder`: multi-scale features of several encoder blocks are turned into a feature
  pyramid (×4, ×2, ×1, ×½ of the patch grid, as in ViTDet's simple pyramid), fused top-down
  (FPN) and concatenated at the finest level (UPerNet-style), then classified and brought to the
  full input resolution.
* :class:`LandCoverModel`: encoder + dense decoder on one image.
* :class:`CropModel`: the encoder runs on every date; per token, a light temporal attention with a
  day-of-year code pools the dates (missing dates are masked out), then the dense decoder maps
  the pooled features to per-pixel crop classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eo_fusion.errors import ModelError
from eo_fusion.models.encoder import Block, SpectralViT
from eo_fusion.models.spectral import SpectralEmbedding


def _level(dim: int, ch: int, scale: float) -> nn.Module:
    if scale == 4:
        return nn.Sequential(
            nn.ConvTranspose2d(dim, ch, 2, 2), nn.GELU(), nn.ConvTranspose2d(ch, ch, 2, 2)
        )
    if scale == 2:
        return nn.ConvTranspose2d(dim, ch, 2, 2)
    if scale == 1:
        return nn.Conv2d(dim, ch, 1)
    return nn.Sequential(nn.Conv2d(dim, ch, 1), nn.MaxPool2d(2, ceil_mode=True))


class DenseDecoder(nn.Module):
    """FPN/UPerNet-style decoder from ``len(scales)`` token maps to full-resolution logits."""

    SCALES = (4.0, 2.0, 1.0, 0.5)

    def __init__(self, dim: int, n_levels: int, n_classes: int, channels: int = 64) -> None:
        super().__init__()
        self.scales = self.SCALES[:n_levels]
        self.levels = nn.ModuleList([_level(dim, channels, s) for s in self.scales])
        self.smooth = nn.ModuleList(
            [nn.Conv2d(channels, channels, 3, padding=1) for _ in self.scales]
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(channels * len(self.scales), channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.GELU(),
        )
        # Full-resolution refinement with per-pixel spectral features (see PixelSpectral).
        self.refine = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.GELU()
        )
        self.classify = nn.Conv2d(channels, n_classes, 1)

    def forward(
        self,
        feats: Sequence[torch.Tensor],
        grid: tuple[int, int],
        out_hw: tuple[int, int],
        pixel: torch.Tensor,
    ) -> torch.Tensor:
        """``feats``: token maps ``(B, N, D)`` (fine to coarse order is by ``SCALES``);
        ``pixel``: ``(B, channels, H, W)`` per-pixel features at the output resolution."""
        b, _, d = feats[0].shape
        maps = [
            lvl(f.transpose(1, 2).reshape(b, d, *grid))
            for lvl, f in zip(self.levels, feats, strict=True)
        ]
        # Top-down: add the upsampled coarser level into the finer one.
        for i in range(len(maps) - 2, -1, -1):
            up = F.interpolate(maps[i + 1], size=maps[i].shape[-2:], mode="nearest")
            maps[i] = maps[i] + up
        maps = [s(m) for s, m in zip(self.smooth, maps, strict=True)]
        size = maps[0].shape[-2:]
        cat = torch.cat(
            [maps[0]]
            + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]],
            dim=1,
        )
        fused = self.fuse(cat)
        if tuple(fused.shape[-2:]) != tuple(out_hw):
            fused = F.interpolate(fused, size=out_hw, mode="bilinear", align_corners=False)
        return self.classify(self.refine(torch.cat([fused, pixel], dim=1)))


class PixelSpectral(nn.Module):
    """Per-pixel spectral features: the spectral embedding with 1 × 1 patches.

    Like the patch tokens, a pixel's feature is the mean of its bands' per-range projections, so
    it accepts any subset and order of bands; missing bands of a pixel are left out of the mean
    and a pixel with no band at all gets 0. It gives the dense decoder full-resolution spectral
    detail that 4 × 4 px tokens blur.
    """

    def __init__(self, ranges: Sequence[str], channels: int) -> None:
        super().__init__()
        self.embed = SpectralEmbedding(ranges, 1, channels)

    def forward(self, x: torch.Tensor, keys: Sequence[str]) -> torch.Tensor:
        b, _, h, w = x.shape
        return F.gelu(self.embed(x, keys).transpose(1, 2).reshape(b, -1, h, w))


#: How a dense head combines modalities (see :class:`LandCoverModel`).
Fusion = Literal["early", "late_mean", "late_concat"]


def sensor_of(key: str) -> str:
    """The sensor group of a band key for late fusion: its registry prefix (``s2``, ``s1``,
    ``elevation``, ``aerial``, ...)."""
    return key.split(":", 1)[0]


def _zero_missing(feats: Sequence[torch.Tensor], missing: torch.Tensor) -> list[torch.Tensor]:
    """Token features with the rows of fully missing patches set to 0 (a constant, so that
    no value under a masked patch can reach the decoder's convolutions)."""
    keep = (~missing)[..., None].to(feats[0].dtype)
    return [f * keep for f in feats]


class LandCoverModel(nn.Module):
    """Dense land-cover segmentation: ``(B, C, H, W)`` -> logits ``(B, K, H, W)``.

    ``fusion`` decides how modalities meet:

    * ``"early"``: one token per patch from all bands together (the mean of the band
      projections), one encoder pass;
    * ``"late_mean"``: one encoder pass per sensor group (:func:`sensor_of`) on its bands alone;
      each token's features are the mean over the groups that have data at that patch;
    * ``"late_concat"``: the same passes, the features of ``groups`` (a fixed order) are
      concatenated (a group absent from a patch or from the input contributes 0).

    NaN in ``x`` marks missing pixels: they are masked (see
    :meth:`~eo_fusion.models.encoder.SpectralViT.masked_tokens`), and the features of patches
    without any data are 0 before the decoder.
    """

    def __init__(
        self,
        encoder: SpectralViT,
        n_classes: int,
        take: Sequence[int],
        channels: int = 64,
        *,
        fusion: Fusion = "early",
        groups: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if fusion == "late_concat" and not groups:
            raise ModelError(
                "late_concat fusion needs the sensor groups it concatenates",
                fix="pass groups=(...) (e.g. ('s2', 'elevation'))",
            )
        self.encoder = encoder
        self.take = tuple(take)
        self.fusion: Fusion = fusion
        self.groups = tuple(groups)
        width = encoder.dim * (len(self.groups) if fusion == "late_concat" else 1)
        self.decoder = DenseDecoder(width, len(self.take), n_classes, channels)
        self.pixel = PixelSpectral(encoder.cfg.ranges, channels)

    def features(self, x: torch.Tensor, keys: Sequence[str]) -> list[torch.Tensor]:
        """The decoder's token maps ``(B, N, width)``, one per tapped block."""
        per = self._per_group(x, keys) if self.fusion != "early" else {}
        if self.fusion == "late_concat":
            return [
                torch.cat([per[g][1][i] for g in self.groups], dim=-1)
                for i in range(len(self.take))
            ]
        if not per:  # early fusion, or no group has any data (the caller's no-data pixels)
            tok, missing = self.encoder.masked_tokens(x, keys)
            _, feats = self.encoder.run_blocks(tok, self.take, missing)
            return _zero_missing(feats, missing)
        total = torch.stack([w for w, _ in per.values()]).sum(0)
        return [
            torch.stack([f[i] * w for w, f in per.values()]).sum(0) / total.clamp(min=1)
            for i in range(len(self.take))
        ]

    def _per_group(self, x: torch.Tensor, keys: Sequence[str]) -> dict[str, Any]:
        """Per sensor group: ``(weight (B, N, 1) or None, features)`` of its own encoder pass
        (``late_concat``: every configured group, zeros where absent)."""
        b, _, h, w = x.shape
        n = int(np.prod(self.encoder.grid(h, w)))
        names = (
            self.groups
            if self.fusion == "late_concat"
            else tuple(dict.fromkeys(sensor_of(k) for k in keys))
        )
        out: dict[str, Any] = {}
        for g in names:
            idx = [i for i, k in enumerate(keys) if sensor_of(k) == g]
            zeros = [x.new_zeros(b, n, self.encoder.dim) for _ in self.take]
            if not idx or not bool(torch.isfinite(x[:, idx]).any()):
                out[g] = (None, zeros) if self.fusion == "late_concat" else None
                continue
            tok, missing = self.encoder.masked_tokens(x[:, idx], [keys[i] for i in idx])
            _, feats = self.encoder.run_blocks(tok, self.take, missing)
            out[g] = ((~missing)[..., None].to(x.dtype), _zero_missing(feats, missing))
        return {g: v for g, v in out.items() if v is not None}

    def forward(self, x: torch.Tensor, keys: Sequence[str]) -> torch.Tensor:
        h, w = x.shape[-2:]
        feats = self.features(x, keys)
        return self.decoder(feats, self.encoder.grid(h, w), (h, w), self.pixel(x, keys))


def doy_code(doy: torch.Tensor, dim: int) -> torch.Tensor:
    """Sin-cos code of day of year (1–366), periodic over one year: ``(..., dim)``."""
    half = dim // 2
    k = torch.arange(1, half + 1, device=doy.device, dtype=torch.float32)
    angle = 2 * math.pi * doy[..., None].float() / 365.25 * k
    return torch.cat([angle.sin(), angle.cos()], dim=-1) / math.sqrt(half)


class TemporalPool(nn.Module):
    """One attention block over dates plus attention pooling by a learned query."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.block = Block(dim, heads, mlp_ratio=2.0)
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.key = nn.Linear(dim, dim)
        nn.init.normal_(self.query, std=0.02)

    def forward(self, x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """``x``: ``(M, T, D)``; ``missing``: ``(M, T)`` True where a date has no data."""
        # A token with every date missing keeps its (meaningless) first date so softmax stays
        # finite; predict() marks such pixels as no data anyway.
        missing = missing.clone()
        all_missing = missing.all(dim=1)
        missing[all_missing, 0] = False
        x = self.block(x, missing)
        score = (self.key(x) * self.query).sum(-1) / math.sqrt(x.shape[-1])
        score = score.masked_fill(missing, float("-inf"))
        return (score.softmax(dim=1)[..., None] * x).sum(dim=1)


class CropModel(nn.Module):
    """Crop mapping from a time series: ``(B, T, C, H, W)`` + day of year ``(B, T)`` -> logits.

    The ``T`` rows are the union of every modality's own dates (see :func:`union_dates`): a
    row holds the bands of the modality observed on that date and NaN for the others, so S1
    every 6–12 days and S2 when clear keep their own dates and counts (nothing is paired by
    index). Each row is encoded on its own; a token is then one (modality, date, patch) — its
    modality carried by the spectral projections of its bands, its date by a day-of-year code
    — and the temporal attention of every patch runs over the union of its dates with key
    padding: a date whose patch has no valid pixel (cloud, no data, not observed by that
    modality) is left out, as are rows flagged in ``missing`` ``(B, T)``.
    """

    def __init__(
        self, encoder: SpectralViT, n_classes: int, take: Sequence[int], channels: int = 64
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.take = tuple(take)
        heads = encoder.cfg.shape.heads
        self.temporal = nn.ModuleList([TemporalPool(encoder.dim, heads) for _ in self.take])
        self.decoder = DenseDecoder(encoder.dim, len(self.take), n_classes, channels)
        self.pixel = PixelSpectral(encoder.cfg.ranges, channels)

    def forward(
        self,
        x: torch.Tensor,
        keys: Sequence[str],
        doy: torch.Tensor,
        missing: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, t, c, h, w = x.shape
        if missing is not None:  # a flagged date counts as no data at all
            x = x.masked_fill(missing[:, :, None, None, None].to(x.device), float("nan"))
        flat = x.reshape(b * t, c, h, w)
        tok, miss = self.encoder.masked_tokens(flat, keys)
        _, feats = self.encoder.run_blocks(tok, self.take, miss)
        feats = _zero_missing(feats, miss)
        # Per-pixel features: mean over the dates on which that pixel has data.
        pix = self.pixel(flat, keys).reshape(b, t, -1, h, w)
        have = torch.isfinite(x).any(dim=2, keepdim=True).to(pix.dtype)
        pix = (pix * have).sum(1) / have.sum(1).clamp(min=1)
        n, d = feats[0].shape[1:]
        code = doy_code(doy.to(x.device), d)[:, :, None, :]  # (B, T, 1, D)
        miss = miss.reshape(b, t, n).permute(0, 2, 1).reshape(b * n, t)
        pooled = []
        for pool, f in zip(self.temporal, feats, strict=True):
            f = f.reshape(b, t, n, d) + code
            f = f.permute(0, 2, 1, 3).reshape(b * n, t, d)
            pooled.append(pool(f, miss).reshape(b, n, d))
        return self.decoder(pooled, self.encoder.grid(h, w), (h, w), pix)


def union_dates(
    parts: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-modality time series -> one ``(T, C, H, W)`` array over the union of their dates.

    ``parts``: per modality ``(array (T_m, C_m, H, W), times (T_m,))`` on one grid (dates
    ``datetime64``). Rows are sorted by time (stable: on a tie the earlier modality first);
    row ``t`` holds the bands of the modality observed at ``times[t]`` and NaN in every other
    modality's channels. Channels keep the order of ``parts``. Modalities may have any number
    of dates, and two modalities on the same day stay two rows.
    """
    if not parts:
        raise ModelError("no time series given", fix="pass at least one modality")
    widths = [a.shape[1] for a, _ in parts]
    hw = parts[0][0].shape[-2:]
    total = sum(a.shape[0] for a, _ in parts)
    out = np.full((total, sum(widths), *hw), np.nan, dtype="float32")
    times = np.concatenate([np.asarray(tm) for _, tm in parts])
    row, col = 0, 0
    for (arr, tm), width in zip(parts, widths, strict=True):
        if arr.shape[0] != len(tm) or arr.shape[-2:] != hw:
            raise ModelError(
                f"time series of shape {arr.shape} has {len(tm)} dates or another grid than "
                f"{tuple(hw)}",
                fix="give each modality its own dates, all on one grid",
            )
        out[row : row + arr.shape[0], col : col + width] = arr
        row, col = row + arr.shape[0], col + width
    order = np.argsort(times, kind="stable")
    return out[order], times[order]


class FrozenEncoderHead(nn.Module):
    """A head over a published encoder that may be frozen (``self.freeze``).

    A frozen encoder stays in eval mode whatever ``train()`` is called with, so its dropout and
    norm statistics do not change while the head trains.
    """

    encoder: nn.Module
    freeze: bool

    def train(self, mode: bool = True) -> FrozenEncoderHead:
        super().train(mode)
        if self.freeze:
            self.encoder.eval()
        return self
