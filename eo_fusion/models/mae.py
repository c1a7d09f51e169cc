"""Masked-autoencoder pretraining with per-range reconstruction heads and cross-sensor token mixup.

Follows SMARTIES (G. Sumbul, C. Xu, E. Dalsasso, D. Tuia, ICCV 2025, arXiv:2506.19585), with
eo-fusion's additions as options:

* Mask ratio 0.75 (MAE): only a quarter of the patch tokens enter the encoder.
* The decoder (8 blocks × 512 for the published sizes, smaller for ``nano``/``tiny``) sees the
  encoded tokens plus a shared mask token at the masked positions.
* One reconstruction head per spectral range predicts a band's ``p × p`` patch. Addition: bands
  that share a range (S2 B04 and aerial red) are told apart by a fixed wavelength code added
  before the head (``code_proj``; zero in imported SMARTIES models, which have none).
* Loss: mean squared error per masked patch, averaged over masked patches, ignoring no-data
  pixels, against ``target_norm``:

  - ``"patch"`` (SMARTIES): each patch normalised by the mean and (unbiased) variance of all
    its bands' pixels together;
  - ``"patch_band"``: each band of each patch normalised on its own (MAE's norm-pix per band);
  - ``"band"``: the band-standardised pixels themselves (used for the 4-px patches of the
    bundled model, where per-patch normalisation leaves mostly sensor noise to predict).

* Cross-sensor token mixup of two co-located images of different sensors (S2 and S1 of the same
  BigEarthNet patch, L1C and L2A, S2 and aerial):

  - ``mixup="pairs"`` (SMARTIES): every paired sample becomes two complementary sequences — a
    random ``mix_ratio`` of the positions take their token from the second image in the first
    sequence and from the first image in the second — that share one mask; each position's
    target is the image its token came from, and the loss is the mean of the two sequences'.
    (SMARTIES's released code, by reassigning the first sequence before building the second,
    leaves the second sequence unmixed; this follows the paper's complementary pair.)
  - ``mixup="swap"``: one mixed sequence whose targets are the bands of both images at every
    position, so the model must predict one sensor from the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from eo_fusion.models.encoder import Block, SpectralViT, sincos_2d
from eo_fusion.models.spectral import resolve_band, wavelength_code

#: Width of the fixed wavelength code fed to the reconstruction heads.
CODE_DIM = 16

TargetNorm = Literal["patch", "patch_band", "band"]
Mixup = Literal["pairs", "swap"]


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
        target_norm: TargetNorm = "patch",
        mixup: Mixup = "pairs",
        generator: torch.Generator | None = None,
    ) -> MAEOutput:
        """``x``: ``(B, C, H, W)`` normalised values, NaN where no data; ``pair``: a co-located
        image of another sensor on the same grid for cross-sensor mixup."""
        enc, p, (h, w) = self.encoder, self.encoder.cfg.patch_size, x.shape[-2:]
        ta, miss = enc.masked_tokens(x, keys)  # NaN pixels are masked, never zero-filled
        b, n, _ = ta.shape
        ones = torch.ones(b, n, device=x.device)
        mixed = torch.zeros(b, n, device=x.device)
        images: list[tuple[torch.Tensor, list[str]]] = [(x, list(keys))]
        # Per sequence: tokens, where (B, N) each image is the target, positions without data.
        seqs: list[tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]] = [(ta, [ones], miss)]
        if pair is not None:
            x2, keys2 = pair
            tb, miss_b = enc.masked_tokens(x2, keys2)
            order = torch.rand(b, n, generator=generator, device=x.device).argsort(dim=1)
            mixed.scatter_(1, order[:, : int(n * mix_ratio)], 1.0)
            m = mixed[..., None].bool()
            images.append((x2, list(keys2)))
            mb = m[..., 0]
            if mixup == "pairs":
                seqs = [
                    (torch.where(m, tb, ta), [1 - mixed, mixed], torch.where(mb, miss_b, miss)),
                    (torch.where(m, ta, tb), [mixed, 1 - mixed], torch.where(mb, miss, miss_b)),
                ]
            else:
                seqs = [(torch.where(m, tb, ta), [ones, ones], torch.where(mb, miss_b, miss))]
        target_keys = list(dict.fromkeys(k for _, ks in images for k in ks))
        shuffle = torch.rand(b, n, generator=generator, device=x.device).argsort(dim=1)
        keep = max(1, round(n * (1 - mask_ratio)))
        mask = torch.ones(b, n, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, shuffle.argsort(dim=1))  # one mask, shared by all sequences
        losses, first = [], None
        for tok, wheres, missing in seqs:
            dec = self._encode_decode(tok, shuffle, keep, (h, w), missing)
            pred = self._heads(dec, target_keys)
            first = pred if first is None else first
            parts = [
                patch_loss(pred[:, [target_keys.index(k) for k in ks]], patchify(img, p),
                           mask * where, target_norm)
                for (img, ks), where in zip(images, wheres, strict=True)
            ]  # fmt: skip
            total = sum((s for s, _ in parts), torch.zeros(()))
            count = sum((c for _, c in parts), torch.zeros(()))
            losses.append(total / count.clamp(min=1))
        assert first is not None
        loss = torch.stack(losses).mean()
        return MAEOutput(loss, unpatchify(first, p, h, w), target_keys, mask, mixed)

    def _encode_decode(
        self,
        tok: torch.Tensor,
        shuffle: torch.Tensor,
        keep: int,
        hw: tuple[int, int],
        missing: torch.Tensor,
    ) -> torch.Tensor:
        """Encode the ``keep`` visible tokens (first of ``shuffle``) and decode all positions;
        positions without data (``missing``) are key-padded in the encoder and the decoder."""
        visible = torch.gather(tok, 1, shuffle[:, :keep, None].expand(-1, -1, tok.shape[-1]))
        latent, _ = self.encoder.run_blocks(
            visible, (), torch.gather(missing, 1, shuffle[:, :keep])
        )
        return self._decode(latent, shuffle.argsort(dim=1), self.encoder.grid(*hw), missing)

    def _decode(
        self,
        latent: torch.Tensor,
        restore: torch.Tensor,
        grid: tuple[int, int],
        missing: torch.Tensor | None = None,
    ) -> torch.Tensor:
        y = self.decoder_embed(latent)
        b, keep, d = y.shape
        n = restore.shape[1]
        y = torch.cat([y, self.mask_token.expand(b, n - keep, d)], dim=1)
        y = torch.gather(y, 1, restore[..., None].expand(-1, -1, d))
        y = y + sincos_2d(d, *grid).to(y)
        pad = self.encoder.key_padding(missing)
        if pad is not None and self.encoder.n_prefix:
            pad = pad[:, self.encoder.n_prefix :]  # the decoder has no class token
        for blk in self.decoder_blocks:
            y = blk(y, pad)
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


def patch_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, target_norm: TargetNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sum of per-patch MSEs and the sum of weights (patches with no valid pixel: 0).

    ``pred``/``target``: ``(B, C, N, P)``; ``weight``: ``(B, N)`` (1 = masked and scored).
    ``target_norm``: see the module docstring.
    """
    valid = torch.isfinite(target)
    t = torch.nan_to_num(target)
    if target_norm == "patch_band":
        t = _standardise(t, valid, dims=(-1,), unbiased=False)
    elif target_norm == "patch":  # all bands of a patch together (SMARTIES: torch.var)
        t = _standardise(t, valid, dims=(1, -1), unbiased=True)
    cnt = valid.sum(dim=(1, -1))
    err = (((pred - t) ** 2) * valid).sum(dim=(1, -1)) / cnt.clamp(min=1)
    w = weight * (cnt > 0)
    return (err * w).sum(), w.sum()


def _standardise(
    t: torch.Tensor, valid: torch.Tensor, dims: tuple[int, ...], unbiased: bool
) -> torch.Tensor:
    cnt = valid.sum(dim=dims, keepdim=True)
    mean = (t * valid).sum(dim=dims, keepdim=True) / cnt.clamp(min=1)
    ss = (((t - mean) * valid) ** 2).sum(dim=dims, keepdim=True)
    var = ss / (cnt - 1 if unbiased else cnt).clamp(min=1)
    return (t - mean) / (var + 1e-6).sqrt()


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
