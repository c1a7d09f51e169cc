"""ViT encoder over spectral tokens, with fixed 2-D sin-cos positions.

Parameter names follow the common ViT layout (``blocks.{i}.norm1``, ``blocks.{i}.attn.qkv``,
``blocks.{i}.mlp.fc1``, ``norm``) so that published checkpoints map onto it by renaming only the
embedding (see :mod:`eo_fusion.models.checkpoint`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eo_fusion.errors import ModelError
from eo_fusion.models.spectral import RangeTable, SpectralEmbedding


@dataclass(frozen=True)
class ViTSize:
    """Width, depth and heads of a named encoder size, plus the matching MAE decoder."""

    dim: int
    depth: int
    heads: int
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int


#: Named sizes. ``nano``/``tiny`` train on a laptop CPU; ``base``/``large`` are the published
#: ViT-B/16 and ViT-L/16 shapes with the MAE decoder of 8 blocks × 512 used by MAE and SMARTIES.
SIZES: dict[str, ViTSize] = {
    "nano": ViTSize(128, 4, 4, 128, 2, 4),
    "tiny": ViTSize(192, 12, 3, 192, 2, 3),
    "small": ViTSize(384, 12, 6, 256, 4, 8),
    "base": ViTSize(768, 12, 12, 512, 8, 16),
    "large": ViTSize(1024, 24, 16, 512, 8, 16),
}


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of the encoder, as stored in the model card.

    Attributes:
        size: a named size of :data:`SIZES`, or ``"custom"`` with ``dims`` given.
        patch_size: patch edge in pixels.
        image_size: training window edge in pixels (the grid of a stored positional table).
        ranges: the spectral ranges with a projection (names of ``range_table``).
        mlp_ratio: MLP hidden width / token width.
        dims: explicit widths, depths and heads (imported checkpoints); overrides ``size``.
        range_table: ``"eo-fusion"`` or ``"smarties"`` (see :mod:`eo_fusion.models.spectral`).
        projection_scaler: factor on the mean of the band projections (SMARTIES uses 12).
        cls_token: the model has a class token (prepended to the patch tokens).
        stored_pos_embed: positions come from a stored table ``pos_embed`` (for a
            ``image_size / patch_size`` square grid, CLS row first when there is a class
            token) instead of being computed for each grid.
    """

    size: str = "nano"
    patch_size: int = 4
    image_size: int = 32
    ranges: tuple[str, ...] = ()
    mlp_ratio: float = 4.0
    dims: ViTSize | None = None
    range_table: RangeTable = "eo-fusion"
    projection_scaler: float = 1.0
    cls_token: bool = False
    stored_pos_embed: bool = False

    @property
    def shape(self) -> ViTSize:
        if self.dims is not None:
            return self.dims
        if self.size not in SIZES:
            raise ModelError(
                f"unknown encoder size '{self.size}'", fix=f"choose one of {sorted(SIZES)}"
            )
        return SIZES[self.size]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ranges"] = list(self.ranges)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        dims = d.get("dims")
        return cls(
            **{
                **d,
                "ranges": tuple(d.get("ranges", ())),
                "dims": ViTSize(**dims) if isinstance(dims, dict) else dims,
            }
        )


def sincos_2d(dim: int, grid_h: int, grid_w: int, *, scale: float = 1.0) -> torch.Tensor:
    """Fixed 2-D sin-cos position code, ``(grid_h * grid_w, dim)``, rows then columns.

    ``scale`` stretches the coordinates: 1 keeps one unit per patch (positions extend to larger
    grids); ``(trained - 1) / (new - 1)`` interpolates a larger grid into the trained span.
    """
    if dim % 4:
        raise ModelError(f"position code width {dim} is not a multiple of 4")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    ys = torch.arange(grid_h, dtype=torch.float64) * scale
    xs = torch.arange(grid_w, dtype=torch.float64) * scale
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    out_y = yy.reshape(-1, 1) * omega
    out_x = xx.reshape(-1, 1) * omega
    pe = torch.cat([out_x.sin(), out_x.cos(), out_y.sin(), out_y.cos()], dim=1)
    return pe.float()


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if x.device.type == "cpu" and not torch.compiler.is_compiling():
            y = explicit_attention(q, k, v, key_padding)
        else:
            mask = None if key_padding is None else ~key_padding[:, None, None, :]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding: torch.Tensor | None = None
) -> torch.Tensor:
    """``softmax(q kᵀ / √d) v`` over ``(B, heads, N, d)``; ``key_padding`` ``(B, N)``: True = skip.

    What ``scaled_dot_product_attention`` computes, as two batched matmuls and a softmax. On the
    CPU, at this encoder's sizes (64 tokens, heads of 32), this is faster than the fused flash
    kernel: a bf16 encoder pass over 32 windows took 38.6 ms against 42.5 ms (median of 5, one
    thread; fp32 equal within the noise), so the CPU uses this in eager mode; CUDA and
    ``torch.compile`` (compiled, the fused kernel ran at 98 GFLOP/s and this form at 86, in
    separate runs) keep the fused kernel. Every row needs one key left
    (``SpectralViT.key_padding`` guarantees it).
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if key_padding is not None:
        scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1) @ v


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_padding)
        return x + self.mlp(self.norm2(x))


class SpectralViT(nn.Module):
    """Spectral embedding + ViT blocks; returns features of selected blocks.

    Input ``x``: ``(B, C, H, W)`` normalised band values with ``H``, ``W`` multiples of the patch
    size; ``keys``: the ``C`` band-registry keys. Positions are fixed sin-cos codes computed for the
    actual patch grid, so any image size works (one position unit per patch), or, with
    ``cfg.stored_pos_embed``, the stored table (bicubically resized for another grid, as
    SMARTIES and DeiT do when fine-tuning at a new size).

    A token is ``projection_scaler`` × the mean of its bands' projections. With ``cfg.cls_token``
    a class token is prepended; :meth:`forward` and the dense heads see only the patch tokens,
    :meth:`all_tokens` returns the class token too.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        s = cfg.shape
        self.cfg = cfg
        self.embed = SpectralEmbedding(cfg.ranges, cfg.patch_size, s.dim, cfg.range_table)
        self.blocks = nn.ModuleList([Block(s.dim, s.heads, cfg.mlp_ratio) for _ in range(s.depth)])
        self.norm = nn.LayerNorm(s.dim, eps=1e-6)
        self.n_prefix = int(cfg.cls_token)
        if cfg.cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, s.dim))
        if cfg.stored_pos_embed:
            g = cfg.image_size // cfg.patch_size
            table = torch.cat([torch.zeros(self.n_prefix, s.dim), sincos_2d(s.dim, g, g)])
            self.pos_embed = nn.Parameter(table[None], requires_grad=False)

    @property
    def dim(self) -> int:
        return self.cfg.shape.dim

    def grid(self, h: int, w: int) -> tuple[int, int]:
        p = self.cfg.patch_size
        if h % p or w % p:
            raise ModelError(f"image of {h}×{w} px is not a multiple of the patch size {p}")
        return h // p, w // p

    def positions(self, gh: int, gw: int) -> torch.Tensor:
        """Position codes of the patch tokens, ``(gh * gw, D)``, rows then columns."""
        if not self.cfg.stored_pos_embed:
            return sincos_2d(self.dim, gh, gw)
        table = self.pos_embed[0, self.n_prefix :]
        g = self.cfg.image_size // self.cfg.patch_size
        if (gh, gw) == (g, g):
            return table
        grid = table.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)

    def tokens(
        self, x: torch.Tensor, keys: Sequence[str], valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Embedded patch tokens with positions added, ``(B, N, D)`` (no class token)."""
        return self.masked_tokens(x, keys, valid)[0]

    def masked_tokens(
        self, x: torch.Tensor, keys: Sequence[str], valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens with positions, ``(B, N, D)``, and ``missing`` ``(B, N)``: True where
        the patch has no valid pixel in any band (see :meth:`SpectralEmbedding.masked`)."""
        gh, gw = self.grid(x.shape[-2], x.shape[-1])
        tok, missing = self.embed.masked(x, keys, valid)
        if self.cfg.projection_scaler != 1.0:
            tok = tok * self.cfg.projection_scaler
        return tok + self.positions(gh, gw).to(tok), missing

    def with_prefix(self, tok: torch.Tensor) -> torch.Tensor:
        """Prepend the class token (plus its position code) when the model has one."""
        if not self.n_prefix:
            return tok
        cls: torch.Tensor = self.cls_token
        if self.cfg.stored_pos_embed:
            cls = cls + self.pos_embed[:, :1]
        return torch.cat([cls.expand(tok.shape[0], -1, -1).to(tok), tok], dim=1)

    def key_padding(self, missing: torch.Tensor | None) -> torch.Tensor | None:
        """Attention key padding ``(B, n_prefix + N)`` for patch tokens flagged ``missing``.

        ``None`` when nothing is missing (the unmasked, fused attention path). A sample whose
        every patch is missing is not padded at all (a softmax over no key is undefined): its
        outputs are finite but meaningless, and callers mark them as no data.
        """
        if missing is None or not bool(missing.any()):
            return None
        pad = missing & ~missing.all(dim=1, keepdim=True)
        if self.n_prefix:
            pad = torch.cat([pad.new_zeros(pad.shape[0], self.n_prefix), pad], dim=1)
        return pad

    def run_blocks(
        self,
        tok: torch.Tensor,
        take: Sequence[int] = (),
        missing: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run all blocks; return the normed output and the outputs of blocks ``take``.

        ``tok`` holds the patch tokens; a class token is added in front and removed from the
        outputs, so callers always get ``(B, N, D)``. Tokens flagged in ``missing`` ``(B, N)``
        are left out of every attention as keys: they cannot change any other token's output.
        """
        feats = []
        pad = self.key_padding(missing)
        tok = self.with_prefix(tok)
        for i, blk in enumerate(self.blocks):
            tok = blk(tok, pad)
            if i in take:
                feats.append(tok[:, self.n_prefix :])
        return self.norm(tok)[:, self.n_prefix :], feats

    def all_tokens(
        self, x: torch.Tensor, keys: Sequence[str], valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Output of the last block before the final norm, ``(B, n_prefix + N, D)``, CLS first."""
        tok, missing = self.masked_tokens(x, keys, valid)
        pad = self.key_padding(missing)
        tok = self.with_prefix(tok)
        for blk in self.blocks:
            tok = blk(tok, pad)
        return tok

    def forward(
        self,
        x: torch.Tensor,
        keys: Sequence[str],
        take: Sequence[int] = (),
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normed last-block tokens and the outputs of blocks ``take``, each ``(B, N, D)``.

        ``x`` may hold NaN (or ``valid`` False) for missing pixels: see :meth:`masked_tokens`.
        """
        tok, missing = self.masked_tokens(x, keys, valid)
        return self.run_blocks(tok, take, missing)


def feature_blocks(depth: int, n: int = 4) -> tuple[int, ...]:
    """``n`` evenly spaced block indices ending at the last block (multi-scale features)."""
    n = min(n, depth)
    return tuple(sorted({round((i + 1) * depth / n) - 1 for i in range(n)}))
