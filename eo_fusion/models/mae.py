"""Masked-autoencoder pretraining with per-range reconstruction heads and cross-sensor token mixup.

* Mask ratio 0.75 (MAE): only a quarter of the patch tokens enter the encoder.
* The decoder (8 blocks × 512 for the published sizes, smaller for ``nano``/``tiny``) sees the
  encoded tokens plus a shared mask token at the masked positions.
* One reconstruction head per spectral range predicts a band's ``p × p`` patch; bands that share
  a range (S2 B04 and aerial red) are told apart by a fixed wavelength code added before the head.
* Loss: mean squared error on masked patches against normalised pixels, ignoring no-data pixels:
  either per-patch normalised (MAE's "norm-pix", for 16-px patches) or per-band standardised
  (``target_norm="band"``, used for the 4-px patches of the bundled model, where per-patch
  normalisation leaves mostly sensor noise to predict: the loss stayed at 1.0 in our runs).
* Cross-sensor token mixup: given two co-located images of different sensors (S2 and S1 of the
  same BigEarthNet patch, L1C and L2A, S2 and aerial), a random half of the patch positions take
  their token from the second image *before* masking; the targets are the bands of both images, so
  the model must predict one sensor from the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from eo_fusion.models.encoder import Block, SpectralViT, sincos_2d
from eo_fusion.models.spectral import resolve_band, wavelength_code

#: Width of the fixed wavelength code fed to the reconstruction heads.
CODE_DIM = 16


@dataclass
class MAEOutput:
    """Result of one MAE forward pass.

    Attributes:
        loss: scalar training loss.
        pred: reconstructions in normalised-patch units, ``(B, T, H, W)`` for the target bands.
        target_keys: band keys of ``pred``'s second axis.
        mask: ``(B, N)`` with 1 where the patch was masked.
        mixed: ``(B, N)`` with 1 where the token came from the second image.
    """

    loss: torch.Tensor
    pred: torch.Tensor
    target_keys: list[str]
    mask: torch.Tensor
    mixed: torch.Tensor


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, N, p*p)`` in row-major patch order."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(b, c, (h // p) * (w // p), p * p)


def unpatchify(x: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    b, c = x.shape[:2]
    x = x.reshape(b, c, h // p, w // p, p, p).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(b, c, h, w)


class MAE(nn.Module):
    """Encoder + light decoder + per-range heads (see the module docstring)."""

    def __init__(self, encoder: SpectralViT) -> None:
        super().__init__()
        s = encoder.cfg.shape
        p = encoder.cfg.patch_size
        self.encoder = encoder
        self.decoder_embed = nn.Linear(s.dim, s.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, s.decoder_dim))
        self.decoder_blocks = nn.ModuleList(
            [Block(s.decoder_dim, s.decoder_heads) for _ in range(s.decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(s.decoder_dim, eps=1e-6)
        self.code_proj = nn.Linear(CODE_DIM, s.decoder_dim)
        self.heads = nn.ModuleDict(
            {r: nn.Linear(s.decoder_dim, p * p) for r in encoder.embed.ranges}
        )
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(
        self,
        x: torch.Tensor,
        keys: Sequence[str],
        *,
        pair: tuple[torch.Tensor, Sequence[str]] | None = None,
        mask_ratio: float = 0.75,
        mix_ratio: float = 0.5,
        target_norm: str = "patch",
        generator: torch.Generator | None = None,
    ) -> MAEOutput:
        """``x``: ``(B, C, H, W)`` normalised values, NaN where no data; ``pair``: a co-located
        image of another sensor on the same grid for cross-sensor mixup."""
        enc, p = self.encoder, self.encoder.cfg.patch_size
        h, w = x.shape[-2:]
        ta = enc.tokens(torch.nan_to_num(x), keys)
        b, n, _ = ta.shape
        mixed = torch.zeros(b, n, device=x.device)
        targets, target_keys = [x], list(keys)
        if pair is not None:
            x2, keys2 = pair
            tb = enc.tokens(torch.nan_to_num(x2), keys2)
            order = torch.rand(b, n, generator=generator, device=x.device).argsort(dim=1)
            mixed.scatter_(1, order[:, : int(n * mix_ratio)], 1.0)
            ta = torch.where(mixed[..., None].bool(), tb, ta)
            extra = [i for i, k in enumerate(keys2) if k not in target_keys]
            if extra:
                targets.append(x2[:, extra])
                target_keys += [keys2[i] for i in extra]
        # Random masking: keep the first (1 - ratio) share of a random permutation of positions.
        keep = max(1, round(n * (1 - mask_ratio)))
        noise = torch.rand(b, n, generator=generator, device=x.device)
        shuffle = noise.argsort(dim=1)
        restore = shuffle.argsort(dim=1)
        visible = torch.gather(ta, 1, shuffle[:, :keep, None].expand(-1, -1, ta.shape[-1]))
        latent, _ = enc.run_blocks(visible)
        mask = torch.ones(b, n, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, restore)
        dec = self._decode(latent, restore, enc.grid(h, w))
        target = torch.cat(targets, dim=1)
        pred = self._heads(dec, target_keys)  # (B, T, N, p*p)
        loss = norm_pix_loss(pred, patchify(target, p), mask, per_patch=target_norm == "patch")
        return MAEOutput(loss, unpatchify(pred, p, h, w), target_keys, mask, mixed)

    def _decode(self, latent: torch.Tensor, restore: torch.Tensor, grid: tuple[int, int]):
        y = self.decoder_embed(latent)
        b, keep, d = y.shape
        n = restore.shape[1]
        y = torch.cat([y, self.mask_token.expand(b, n - keep, d)], dim=1)
        y = torch.gather(y, 1, restore[..., None].expand(-1, -1, d))
        y = y + sincos_2d(d, *grid).to(y)
        for blk in self.decoder_blocks:
            y = blk(y)
        return self.decoder_norm(y)

    def _heads(self, dec: torch.Tensor, keys: Sequence[str]) -> torch.Tensor:
        out = []
        for a, key in zip(self.encoder.embed.assignments(keys), keys, strict=True):
            code = self.code_proj(wavelength_code(resolve_band(key), CODE_DIM).to(dec))
            z = dec + code
            out.append(
                sum(wt * self.heads[r](z) for r, wt in zip(a.ranges, a.weights, strict=True))
            )
        return torch.stack(out, dim=1)  # type: ignore[arg-type]


def norm_pix_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, per_patch: bool = True
) -> torch.Tensor:
    """MSE on masked patches against normalised targets, skipping NaN pixels.

    ``pred``/``target``: ``(B, C, N, P)``; ``mask``: ``(B, N)`` (1 = masked, scored).
    ``per_patch``: normalise each patch by its own mean and spread (MAE's norm-pix); otherwise
    the targets are the band-standardised pixels themselves (inputs are standardised per band).
    """
    valid = torch.isfinite(target)
    t = torch.nan_to_num(target)
    if per_patch:
        cnt = valid.sum(-1, keepdim=True).clamp(min=1)
        mean = (t * valid).sum(-1, keepdim=True) / cnt
        var = (((t - mean) * valid) ** 2).sum(-1, keepdim=True) / cnt
        t = (t - mean) / (var + 1e-6).sqrt()
    weight = mask[:, None, :, None] * valid
    return (((pred - t) ** 2) * weight).sum() / weight.sum().clamp(min=1)
