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

import torch
import torch.nn.functional as F
from torch import nn

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
    it accepts any subset and order of bands. It gives the dense decoder full-resolution spectral
    detail that 4 × 4 px tokens blur.
    """

    def __init__(self, ranges: Sequence[str], channels: int) -> None:
        super().__init__()
        self.embed = SpectralEmbedding(ranges, 1, channels)

    def forward(self, x: torch.Tensor, keys: Sequence[str]) -> torch.Tensor:
        b, _, h, w = x.shape
        return F.gelu(self.embed(x, keys).transpose(1, 2).reshape(b, -1, h, w))


class LandCoverModel(nn.Module):
    """Dense land-cover segmentation: ``(B, C, H, W)`` -> logits ``(B, K, H, W)``."""

    def __init__(
        self, encoder: SpectralViT, n_classes: int, take: Sequence[int], channels: int = 64
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.take = tuple(take)
        self.decoder = DenseDecoder(encoder.dim, len(self.take), n_classes, channels)
        self.pixel = PixelSpectral(encoder.cfg.ranges, channels)

    def forward(self, x: torch.Tensor, keys: Sequence[str]) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = torch.nan_to_num(x)
        _, feats = self.encoder(x, keys, self.take)
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

    Dates whose pixels are all NaN (or flagged in ``missing``) are ignored.
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
        if missing is None:
            missing = ~torch.isfinite(x).flatten(2).any(dim=2)
        flat = torch.nan_to_num(x).reshape(b * t, c, h, w)
        _, feats = self.encoder(flat, keys, self.take)
        # Per-pixel features: mean over the dates that have data.
        pix = self.pixel(flat, keys).reshape(b, t, -1, h, w)
        have = (~missing).float()[:, :, None, None, None]
        pix = (pix * have).sum(1) / have.sum(1).clamp(min=1)
        n, d = feats[0].shape[1:]
        code = doy_code(doy, d)[:, :, None, :]  # (B, T, 1, D)
        pooled = []
        for pool, f in zip(self.temporal, feats, strict=True):
            f = f.reshape(b, t, n, d) + code
            f = f.permute(0, 2, 1, 3).reshape(b * n, t, d)
            miss = missing[:, None, :].expand(b, n, t).reshape(b * n, t)
            pooled.append(pool(f, miss).reshape(b, n, d))
        return self.decoder(pooled, self.encoder.grid(h, w), (h, w), pix)
