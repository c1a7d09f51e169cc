"""Presto (Tseng et al., 2023), reimplemented for per-pixel time series and crop heads.

Presto encodes one pixel's monthly time series. Every band group (S1, S2 RGB / red edge / NIR /
SWIR, ERA5, NDVI) gives one token per month, SRTM gives one token for the whole series,
Dynamic World classes one token per month, and the location one token. A token is its group's
linear projection plus a code of the calendar month (a quarter of the width), a learned group
embedding (a quarter) and the month's position in the series (half). Missing groups and months
are masked out of attention; the pixel's embedding is the layer-normed mean of the unmasked
tokens after the transformer (the published "eval" output).

:class:`PrestoEncoder` runs on normalised inputs in the published band order (VV, VH, B2, B3, B4,
B5, B6, B7, B8, B8A, B11, B12, temperature_2m, total_precipitation, elevation, slope, NDVI) with a
per-band mask (1 = missing). :func:`inputs_from_bands` builds them from registry bands in
physical units with the model card's unit conversions and statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eo_fusion.errors import ModelError
from eo_fusion.models.galileo import Block, slope_degrees, to_model_units
from eo_fusion.models.heads import FrozenEncoderHead

#: Dynamic World class id that means "no label" (the 10th embedding row).
DW_MISSING = 9


@dataclass(frozen=True)
class PrestoConfig:
    """Shape of a Presto encoder; ``groups`` lists ``(name, band indices)`` in token order."""

    dim: int
    depth: int
    heads: int
    mlp_ratio: float
    max_sequence_length: int
    channel_dim: int
    month_dim: int
    groups: list[tuple[str, list[int]]]
    static_groups: tuple[str, ...]

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> PrestoConfig:
        a = card["architecture"]
        dim = int(a["embedding_size"])
        names = [b["name"] for b in card["bands"]]
        groups = [(g["name"], [names.index(n) for n in g["bands"]]) for g in card["groups"]]
        return cls(
            dim=dim,
            depth=int(a["depth"]),
            heads=int(a["num_heads"]),
            mlp_ratio=float(a["mlp_ratio"]),
            max_sequence_length=int(a["max_sequence_length"]),
            channel_dim=int(dim * float(a["channel_embed_ratio"])),
            month_dim=int(dim * float(a["month_embed_ratio"])),
            groups=groups,
            static_groups=tuple(g["name"] for g in card["groups"] if g.get("static")),
        )

    @property
    def n_bands(self) -> int:
        return sum(len(i) for _, i in self.groups)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """``attend``: ``(B, N)`` True where a token may be attended to."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend[:, None, None])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


def month_series(
    months: int | torch.Tensor, batch: int, steps: int, device: torch.device
) -> torch.Tensor:
    """Calendar month (0 = January) of every step: ``(B, T)``.

    ``months`` is the month of the first step (an int, or ``(B,)`` per sample; later steps follow
    monthly) or already ``(B, T)``.
    """
    m = torch.as_tensor(months, device=device).long()
    if bool((m < 0).any()) or bool((m > 11).any()):
        raise ModelError(
            "Presto months must be 0 (January) .. 11 (December)",
            fix="pass calendar months minus one",
        )
    if m.ndim == 2:
        return m
    start = m.reshape(-1, 1).expand(batch, 1) if m.ndim == 1 else m.reshape(1, 1).expand(batch, 1)
    return (start + torch.arange(steps, device=device)[None]) % 12


class PrestoEncoder(nn.Module):
    """The Presto encoder on normalised inputs in the published band order."""

    def __init__(self, cfg: PrestoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.eo_patch_embed = nn.ModuleDict({n: nn.Linear(len(i), d) for n, i in cfg.groups})
        self.dw_embed = nn.Embedding(DW_MISSING + 1, d)
        self.latlon_embed = nn.Linear(3, d)
        self.blocks = nn.ModuleList(
            [Block(d, cfg.heads, cfg.mlp_ratio, Attention) for _ in range(cfg.depth)]
        )
        self.norm = nn.LayerNorm(d)
        pos_dim = d - cfg.channel_dim - cfg.month_dim
        # Fixed codes, stored in the weights file: position (sin-cos) and month tables.
        self.pos_embed = nn.Parameter(
            torch.zeros(1, cfg.max_sequence_length, pos_dim), requires_grad=False
        )
        self.month_embed = nn.Embedding(12, cfg.month_dim)
        self.month_embed.weight.requires_grad_(False)
        # One learned embedding per group, plus one for Dynamic World (the last row).
        self.channel_embed = nn.Embedding(len(cfg.groups) + 1, cfg.channel_dim)

    @property
    def dim(self) -> int:
        return self.cfg.dim

    def tokens(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        latlon: torch.Tensor,
        months: int | torch.Tensor,
        dynamic_world: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformer output ``(B, 1 + N, D)`` (location token first, before the final norm)
        and the token mask ``(B, 1 + N)`` (True = masked).

        Args:
            x: ``(B, T, n bands)`` normalised values; mask: same shape, 1 where missing.
            latlon: ``(B, 2)`` latitude, longitude in degrees (EPSG:4326).
            months: month of the first step (int or ``(B,)``) or of every step ``(B, T)``.
            dynamic_world: ``(B, T)`` class ids, :data:`DW_MISSING` where unknown (default).
        """
        b, t, _ = x.shape
        if t > self.cfg.max_sequence_length:
            raise ModelError(
                f"Presto input has {t} steps; the model codes at most "
                f"{self.cfg.max_sequence_length}",
                fix="use at most 24 monthly steps",
            )
        if dynamic_world is None:
            dynamic_world = torch.full((b, t), DW_MISSING, dtype=torch.long, device=x.device)
        month = self.month_embed(month_series(months, b, t, x.device))  # (B, T, m)
        pos = self.pos_embed[:, :t].expand(b, t, -1)
        toks, masks = [], []
        for i, (name, idx) in enumerate(self.cfg.groups):
            chan = self.channel_embed.weight[i].expand(b, t, -1)
            tok = self.eo_patch_embed[name](x[:, :, idx])
            if name in self.cfg.static_groups:  # one token for the series, no date codes
                code = torch.cat([torch.zeros_like(month), chan, torch.zeros_like(pos)], -1)
                tok, code, grp_mask = tok[:, :1], code[:, :1], mask[:, :1, idx]
            else:
                code, grp_mask = torch.cat([month, chan, pos], -1), mask[:, :, idx]
            toks.append(tok + code)
            masks.append(grp_mask.amax(dim=-1) > 0)
        chan = self.channel_embed.weight[-1].expand(b, t, -1)
        toks.append(self.dw_embed(dynamic_world.long()) + torch.cat([month, chan, pos], -1))
        masks.append(dynamic_world == DW_MISSING)
        loc = self.latlon_embed(_cartesian(latlon))[:, None]
        seq = torch.cat([loc, *toks], dim=1)
        masked = torch.cat([torch.zeros_like(masks[0][:, :1]), *masks], dim=1)
        # Tokens masked in every sample cannot change the others: leave them out.
        used = ~masked.all(dim=0)
        xs, attend = seq[:, used], ~masked[:, used]
        for blk in self.blocks:
            xs = blk(xs, attend)
        out = torch.zeros_like(seq)
        out[:, used] = xs
        return out, masked

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        latlon: torch.Tensor,
        months: int | torch.Tensor,
        dynamic_world: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The pixel embedding ``(B, D)``: norm of the mean of the unmasked tokens."""
        out, masked = self.tokens(x, mask, latlon, months, dynamic_world)
        keep = (~masked).float()[..., None]
        return self.norm((out * keep).sum(1) / keep.sum(1))


def _cartesian(latlon: torch.Tensor) -> torch.Tensor:
    lat, lon = torch.deg2rad(latlon[:, 0].float()), torch.deg2rad(latlon[:, 1].float())
    return torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=-1)


# ------------------------------------------------------------------------------------------------
# Registry bands -> Presto inputs.
# ------------------------------------------------------------------------------------------------


def _band_series(x: torch.Tensor, keys: Sequence[str], band: dict[str, Any]) -> torch.Tensor | None:
    """One band ``(N, T)`` in model units, or ``None`` if not given."""
    key = band.get("key")
    if key and key in keys:
        return to_model_units(x[:, :, list(keys).index(key)], band["convert"])
    return None


def inputs_from_bands(
    card: dict[str, Any], x: torch.Tensor, keys: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Presto inputs from per-pixel series of registry bands in physical units.

    Args:
        card: the encoder's model card.
        x: ``(N, T, C)``; NaN marks a missing value (a cloudy month, a gap).
        keys: registry key of each channel (``s2:B04``, ``s1:VV``, ``elevation:dem``, ...), any
            order; keys the model has no use for are ignored.

    Returns:
        ``(x, mask)``, both ``(N, T, n bands)``: normalised values (0 where missing) and 1 where
        a band is missing. Bands of a static group (SRTM) use their mean over the steps that
        have data, at step 0. NDVI is computed from B8 and B4 where the card says so.
    """
    if x.ndim != 3 or x.shape[2] != len(keys):
        raise ModelError(
            f"Presto input of shape {tuple(x.shape)} does not match its {len(keys)} band keys",
            fix="pass (N pixels, T months, C bands) with one registry key per channel",
        )
    if len(set(keys)) != len(keys):
        raise ModelError(f"duplicate band keys in {list(keys)}", fix="give each channel once")
    n, t, _ = x.shape
    x = x.float()
    bands = card["bands"]
    vals = x.new_zeros(n, t, len(bands))
    given = torch.zeros(n, t, len(bands), dtype=torch.bool, device=x.device)
    names = [b["name"] for b in bands]
    for j, band in enumerate(bands):
        v = _band_series(x, keys, band)
        if v is None:
            continue
        v = (v - band["shift"]) / band["div"]
        vals[:, :, j], given[:, :, j] = torch.nan_to_num(v), torch.isfinite(v)
    for j, band in enumerate(bands):
        if band.get("derive") == "ndvi" and not bool(given[:, :, j].any()):
            nir, red = vals[:, :, names.index("B8")], vals[:, :, names.index("B4")]
            s = nir + red
            vals[:, :, j] = torch.where(s > 0, (nir - red) / torch.where(s > 0, s, 1.0), 0.0)
            given[:, :, j] = given[:, :, names.index("B8")] & given[:, :, names.index("B4")]
    _static_to_first_step(card, vals, given)
    return vals, (~given).float()


def _static_to_first_step(card: dict[str, Any], vals: torch.Tensor, given: torch.Tensor) -> None:
    """Put each static band's mean over the steps with data at step 0 (in place)."""
    names = [b["name"] for b in card["bands"]]
    for g in card["groups"]:
        if not g.get("static"):
            continue
        for name in g["bands"]:
            j = names.index(name)
            have = given[:, :, j].float()
            vals[:, 0, j] = (vals[:, :, j] * have).sum(1) / have.sum(1).clamp(min=1)
            given[:, 0, j] = have.sum(1) > 0


# ------------------------------------------------------------------------------------------------
# Per-pixel crop mapping with a Presto encoder.
# ------------------------------------------------------------------------------------------------


class PrestoCrop(FrozenEncoderHead):
    """Per-pixel crop classes from a monthly time series with Presto embeddings.

    Every pixel's series goes through the encoder (in chunks of ``pixel_chunk`` pixels); a
    linear layer (or a small MLP with ``hidden``) maps the embedding to class logits.

    Args:
        encoder: a loaded Presto encoder (see :func:`eo_fusion.models.encoders.load_encoder`).
        card: its model card.
        n_classes: number of crop classes.
        freeze: keep the encoder's weights fixed (the reference's "frozen encoder + head").
        hidden: width of a hidden layer in the head (0: linear head).
        pixel_chunk: pixels per encoder call (bounds memory).
    """

    encoder: PrestoEncoder

    def __init__(
        self,
        encoder: PrestoEncoder,
        card: dict[str, Any],
        n_classes: int,
        *,
        freeze: bool = True,
        hidden: int = 0,
        pixel_chunk: int = 8192,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.card = card
        self.freeze = freeze
        self.pixel_chunk = pixel_chunk
        if freeze:
            encoder.requires_grad_(False)
        d = encoder.dim
        self.head: nn.Module = (
            nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, n_classes))
            if hidden
            else nn.Linear(d, n_classes)
        )

    def embed(
        self,
        x: torch.Tensor,
        keys: Sequence[str],
        months: int | torch.Tensor,
        latlon: torch.Tensor,
        resolution_m: float = 10.0,
    ) -> torch.Tensor:
        """Per-pixel Presto embeddings ``(B, D, H, W)``.

        Args:
            x: ``(B, T, C, H, W)`` monthly series in physical units (NaN = missing).
            keys: registry key of each channel.
            months: month (0 = January) of the first step, int or ``(B,)``, or ``(B, T)``.
            latlon: ``(B, 2)`` per sample or ``(B, 2, H, W)`` per pixel, degrees (EPSG:4326).
            resolution_m: pixel size, used to derive slope from ``elevation:dem``.
        """
        b, t, _, h, w = x.shape
        keys = list(keys)
        if "elevation:dem" in keys and "elevation:slope" not in keys:
            dem = x[:, :, keys.index("elevation:dem")]
            x = torch.cat([x, slope_degrees(dem, resolution_m)[:, :, None]], dim=2)
            keys.append("elevation:slope")
        px = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, -1)
        vals, mask = inputs_from_bands(self.card, px, keys)
        ll = latlon[:, :, None, None].expand(b, 2, h, w) if latlon.ndim == 2 else latlon
        ll = ll.permute(0, 2, 3, 1).reshape(-1, 2)
        mon = month_series(months, b, t, x.device)
        mon = mon[:, None, :].expand(b, h * w, t).reshape(-1, t)
        outs = []
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            for s in range(0, vals.shape[0], self.pixel_chunk):
                e = slice(s, s + self.pixel_chunk)
                outs.append(self.encoder(vals[e], mask[e], ll[e], mon[e]))
        return torch.cat(outs).reshape(b, h, w, -1).permute(0, 3, 1, 2)

    def forward(
        self,
        x: torch.Tensor,
        keys: Sequence[str],
        months: int | torch.Tensor,
        latlon: torch.Tensor,
        resolution_m: float = 10.0,
    ) -> torch.Tensor:
        """Logits ``(B, K, H, W)``; see :meth:`embed` for the arguments."""
        emb = self.embed(x, keys, months, latlon, resolution_m)
        return self.head(emb.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
