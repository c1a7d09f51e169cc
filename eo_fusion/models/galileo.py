"""Galileo (Tseng et al., 2025), reimplemented for inference and frozen-encoder heads.

Galileo is a multimodal ViT whose tokens are *band groups*: every group of a modality (S1, S2's
RGB / red-edge / NIR / SWIR groups, NDVI, SRTM, ERA5, ...) is projected on its own, so any group
may be absent and is then masked out of attention. Four token kinds exist:

* space-time groups (S1, S2 groups, NDVI): one token per patch and date;
* space groups (SRTM, Dynamic World, WorldCereal): one token per patch;
* time groups (ERA5, TerraClimate, VIIRS): one token per date;
* static groups (LandScan, location, static DW/WC): one token per sample.

Each token is its group's linear patch projection plus a code made of four quarters: a learned
group embedding, the date's position in the sequence, the calendar month and a 2-D sin-cos
position scaled by the ground size of a patch. A masked token takes no part in attention.

Layouts follow the published model so its weights load unchanged (``model.safetensors`` keeps its
parameter names): ``s_t_x`` is ``(B, H, W, T, 13)`` with bands VV, VH, B2, B3, B4, B5, B6, B7,
B8, B8A, B11, B12, NDVI; masks are 1 where a value is missing. Inputs to :class:`GalileoEncoder`
are already normalised; :func:`inputs_from_bands` builds them from registry bands in physical
units (reflectance, linear backscatter, metres, degrees) with the model card's statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eo_fusion.errors import ModelError
from eo_fusion.models.encoder import Mlp  # same layout as the published fc1/fc2 weights
from eo_fusion.models.heads import DenseDecoder, FrozenEncoderHead

#: Ground sampling distance (m) at which the model's position code has unit step per pixel.
BASE_GSD_M = 10.0
#: Month used when no dates are given (the reference implementation's default: June).
DEFAULT_MONTH = 5
KINDS = ("space_time", "space", "time", "static")


@dataclass(frozen=True)
class GalileoConfig:
    """Shape of a Galileo encoder; ``groups[kind]`` lists ``(group name, n bands)`` in order."""

    dim: int
    depth: int
    heads: int
    mlp_ratio: float
    max_sequence_length: int
    max_patch_size: int
    groups: dict[str, list[tuple[str, int]]]

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> GalileoConfig:
        a = card["architecture"]
        groups = {k: [(g["name"], len(g["bands"])) for g in card["groups"][k]] for k in KINDS}
        return cls(
            dim=int(a["embedding_size"]),
            depth=int(a["depth"]),
            heads=int(a["num_heads"]),
            mlp_ratio=float(a["mlp_ratio"]),
            max_sequence_length=int(a["max_sequence_length"]),
            max_patch_size=int(a["max_patch_size"]),
            groups=groups,
        )

    def n_bands(self, kind: str) -> int:
        return sum(n for _, n in self.groups[kind])

    def band_slices(self, kind: str) -> list[slice]:
        """Where each group's bands sit along the band axis of ``kind``'s input tensor."""
        out, start = [], 0
        for _, n in self.groups[kind]:
            out.append(slice(start, start + n))
            start += n
        return out


@dataclass
class GalileoInputs:
    """Normalised inputs in the published layout; masks are 1 where a value is missing.

    Attributes:
        s_t_x: ``(B, H, W, T, n space-time bands)``; s_t_m: ``(B, H, W, T, n groups)``.
        sp_x: ``(B, H, W, n space bands)``; sp_m: ``(B, H, W, n groups)``.
        t_x: ``(B, T, n time bands)``; t_m: ``(B, T, n groups)``.
        st_x: ``(B, n static bands)``; st_m: ``(B, n groups)``.
        months: ``(B, T)`` calendar month of each date, 0 = January.
    """

    s_t_x: torch.Tensor
    sp_x: torch.Tensor
    t_x: torch.Tensor
    st_x: torch.Tensor
    s_t_m: torch.Tensor
    sp_m: torch.Tensor
    t_m: torch.Tensor
    st_m: torch.Tensor
    months: torch.Tensor

    def to(self, device: torch.device | str) -> GalileoInputs:
        return GalileoInputs(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class GalileoTokens:
    """Encoder output after the final norm, per token kind, with the token masks (1 = masked).

    ``s_t``: ``(B, h, w, T, G, D)``, ``sp``: ``(B, h, w, G, D)``, ``t``: ``(B, T, G, D)``,
    ``st``: ``(B, G, D)`` where ``h, w`` is the patch grid.
    """

    s_t: torch.Tensor
    sp: torch.Tensor
    t: torch.Tensor
    st: torch.Tensor
    s_t_m: torch.Tensor
    sp_m: torch.Tensor
    t_m: torch.Tensor
    st_m: torch.Tensor

    def per_patch(self) -> torch.Tensor:
        """Mean of every unmasked token that describes a patch: ``(B, h, w, D)``.

        A patch averages its own space-time and space tokens with the sample's time and static
        tokens (the reference's per-patch pooling for dense tasks). A patch without any
        unmasked token is NaN.
        """
        b, h, w = self.s_t.shape[:3]
        d = self.s_t.shape[-1]
        n = h * w
        xs = [
            self.s_t.reshape(b, n, -1, d),
            self.sp.reshape(b, n, -1, d),
            self.t.reshape(b, 1, -1, d).expand(b, n, -1, d),
            self.st.reshape(b, 1, -1, d).expand(b, n, -1, d),
        ]
        ms = [
            self.s_t_m.reshape(b, n, -1),
            self.sp_m.reshape(b, n, -1),
            self.t_m.reshape(b, 1, -1).expand(b, n, -1),
            self.st_m.reshape(b, 1, -1).expand(b, n, -1),
        ]
        keep = 1.0 - torch.cat(ms, dim=2).float()
        x = torch.cat(xs, dim=2)
        mean = (x * keep[..., None]).sum(2) / keep.sum(2, keepdim=True)
        return mean.reshape(b, h, w, d)

    def pooled(self) -> torch.Tensor:
        """Mean of all unmasked tokens of a sample: ``(B, D)``."""
        b, d = self.s_t.shape[0], self.s_t.shape[-1]
        x = torch.cat([t.reshape(b, -1, d) for t in (self.s_t, self.sp, self.t, self.st)], 1)
        m = torch.cat([t.reshape(b, -1) for t in (self.s_t_m, self.sp_m, self.t_m, self.st_m)], 1)
        keep = 1.0 - m.float()
        return (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)


# ------------------------------------------------------------------------------------------------
# Fixed codes.
# ------------------------------------------------------------------------------------------------


def sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """``(M,)`` positions -> ``(M, dim)``: sines then cosines at ``dim/2`` geometric frequencies."""
    freq = 1.0 / 10000 ** (torch.arange(dim // 2, device=pos.device) / dim / 2.0)
    angle = pos.reshape(-1).float()[:, None] * freq[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


def grid_code(h: int, w: int, dim: int, gsd_ratio: float, device: torch.device) -> torch.Tensor:
    """2-D position code of an ``h × w`` patch grid: ``(h, w, dim)``.

    The first half codes the column, the second the row; positions are in units of 10 m
    (``gsd_ratio`` = metres per patch / 10), so one code means the same distance at any patch size.
    """
    rows = torch.arange(h, device=device, dtype=torch.float32) * gsd_ratio
    cols = torch.arange(w, device=device, dtype=torch.float32) * gsd_ratio
    col_code = sincos_1d(cols, dim // 2)  # (w, dim/2)
    row_code = sincos_1d(rows, dim // 2)  # (h, dim/2)
    return torch.cat(
        [col_code[None, :, :].expand(h, w, -1), row_code[:, None, :].expand(h, w, -1)], dim=-1
    )


@cache
def _kernel_resampler(base: int, size: int) -> torch.Tensor:
    """``(size², base²)`` matrix taking a ``base × base`` kernel to ``size × size`` (FlexiViT).

    The pseudo-inverse of the antialiased bicubic resize matrix: a resized kernel applied to a
    resized patch gives the same response as the base kernel on the base patch.
    """
    resize = torch.stack(
        [
            F.interpolate(
                torch.eye(base * base)[i].reshape(1, 1, base, base),
                (size, size),
                mode="bicubic",
                antialias=True,
            ).reshape(-1)
            for i in range(base * base)
        ]
    )  # (base², size²)
    return torch.linalg.pinv(resize)


class PatchProjection(nn.Module):
    """A group's patch projection at any patch size up to the stored kernel's."""

    def __init__(self, in_chans: int, dim: int, base: int) -> None:
        super().__init__()
        self.base = base
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=base, stride=base)

    def forward(self, x: torch.Tensor, patch: int) -> torch.Tensor:
        """``x``: ``(N, C, H, W)`` -> ``(N, D, H/patch, W/patch)``."""
        weight = self.proj.weight
        if patch != self.base:
            r = _kernel_resampler(self.base, patch).to(weight)
            o, c = weight.shape[:2]
            weight = torch.einsum("pk,ock->ocp", r, weight.reshape(o, c, -1))
            weight = weight.reshape(o, c, patch, patch)
        return F.conv2d(x, weight, self.proj.bias, stride=patch)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """``attend``: ``(B, N)`` True where a token may be attended to."""
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=attend[:, None, None]
        )
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block (``attention``: the attention module of the model, whose
    parameter layout follows the published checkpoint; keys ``norm1``, ``attn``, ``norm2``,
    ``mlp``)."""

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float, attention: type[nn.Module] | None = None
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = (attention or Attention)(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attend)
        return x + self.mlp(self.norm2(x))


# ------------------------------------------------------------------------------------------------
# The encoder.
# ------------------------------------------------------------------------------------------------


class GalileoEncoder(nn.Module):
    """The Galileo encoder on normalised inputs in the published layout.

    Args:
        cfg: model shape (see :meth:`GalileoConfig.from_card`).
    """

    def __init__(self, cfg: GalileoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, q = cfg.dim, cfg.dim // 4
        g = cfg.groups
        self.space_time_embed = nn.ModuleDict(
            {n: PatchProjection(c, d, cfg.max_patch_size) for n, c in g["space_time"]}
        )
        self.space_embed = nn.ModuleDict(
            {n: PatchProjection(c, d, cfg.max_patch_size) for n, c in g["space"]}
        )
        self.time_embed = nn.ModuleDict({n: nn.Linear(c, d) for n, c in g["time"]})
        self.static_embed = nn.ModuleDict({n: nn.Linear(c, d) for n, c in g["static"]})
        self.s_t_channel_embed = nn.Parameter(torch.zeros(len(g["space_time"]), q))
        self.sp_channel_embed = nn.Parameter(torch.zeros(len(g["space"]), q))
        self.t_channel_embed = nn.Parameter(torch.zeros(len(g["time"]), q))
        self.st_channel_embed = nn.Parameter(torch.zeros(len(g["static"]), q))
        # Fixed codes, stored in the weights file: date position (sin-cos) and month tables.
        self.pos_embed = nn.Parameter(torch.zeros(cfg.max_sequence_length, q), requires_grad=False)
        self.month_embed = nn.Embedding(12, q)
        self.month_embed.weight.requires_grad_(False)
        self.blocks = nn.ModuleList([Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d)

    @property
    def dim(self) -> int:
        return self.cfg.dim

    def forward(
        self, inp: GalileoInputs, patch_size: int, resolution_m: float = BASE_GSD_M
    ) -> GalileoTokens:
        """Encode ``inp`` with ``patch_size``-pixel patches of ``resolution_m``-metre pixels.

        Masks must be constant within each patch (the top-left pixel's mask is the token's);
        :func:`inputs_from_bands` ensures this.
        """
        b, h, w, t = inp.s_t_x.shape[:4]
        self._check(inp, patch_size)
        gh, gw = h // patch_size, w // patch_size
        q = self.cfg.dim // 4
        dev = inp.s_t_x.device
        months = self.month_embed(inp.months.long())  # (B, T, q)
        pos_t = self.pos_embed[:t]  # (T, q)
        grid = grid_code(gh, gw, q, resolution_m * patch_size / BASE_GSD_M, dev)
        s_t, s_t_m = self._space_time(inp, patch_size, months, pos_t, grid)
        sp, sp_m = self._space(inp, patch_size, grid)
        tt, t_m = self._time(inp, months, pos_t)
        st, st_m = self._static(inp)
        parts = [s_t, sp, tt, st]
        masks = [s_t_m, sp_m, t_m, st_m]
        shapes = [p.shape for p in parts]
        x = torch.cat([p.reshape(b, -1, self.cfg.dim) for p in parts], dim=1)
        m = torch.cat([mm.reshape(b, -1) for mm in masks], dim=1) >= 1
        x = self._attend(x, m)
        x = self.norm(x * (~m)[..., None])  # masked tokens carry no value (as published)
        sizes = [math.prod(s[1:-1]) for s in shapes]
        outs = [o.reshape(s) for o, s in zip(torch.split(x, sizes, dim=1), shapes, strict=True)]
        return GalileoTokens(*outs, *masks)

    def _check(self, inp: GalileoInputs, patch_size: int) -> None:
        _, h, w, t = inp.s_t_x.shape[:4]
        if not 1 <= patch_size <= self.cfg.max_patch_size:
            raise ModelError(
                f"Galileo patch size {patch_size} is outside 1..{self.cfg.max_patch_size}",
                fix="pick a patch size the stored kernels can be resampled to",
            )
        if h % patch_size or w % patch_size:
            raise ModelError(
                f"Galileo input of {h} × {w} px is not a multiple of the patch size {patch_size}",
                fix="crop or pad the window to a multiple of the patch size",
            )
        if t > self.cfg.max_sequence_length:
            raise ModelError(
                f"Galileo input has {t} dates; the model codes at most "
                f"{self.cfg.max_sequence_length}",
                fix="split the time series or aggregate it to fewer dates",
            )

    def _attend(self, x: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Run the blocks over the tokens that are unmasked in at least one sample.

        Tokens masked in every sample are dropped (they cannot change the others); the rest
        are excluded per sample by the key mask.
        """
        if bool(masked.all(dim=1).any()):
            raise ModelError(
                "a Galileo sample has no unmasked token (every band group is missing)",
                fix="give each sample at least one band group with data",
            )
        used = ~masked.all(dim=0)
        out = torch.zeros_like(x)
        xs, attend = x[:, used], ~masked[:, used]
        for blk in self.blocks:
            xs = blk(xs, attend)
        out[:, used] = xs
        return out

    def _space_time(
        self,
        inp: GalileoInputs,
        p: int,
        months: torch.Tensor,
        pos_t: torch.Tensor,
        grid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, h, w, t, _ = inp.s_t_x.shape
        gh, gw = h // p, w // p
        d = self.cfg.dim
        mask = inp.s_t_m[:, ::p, ::p]  # (B, gh, gw, T, G)
        frames = inp.s_t_x.permute(0, 3, 4, 1, 2).reshape(b * t, -1, h, w)
        toks = []
        for i, ((name, _), sl) in enumerate(
            zip(self.cfg.groups["space_time"], self.cfg.band_slices("space_time"), strict=True)
        ):
            if bool((mask[..., i] == 0).any()):
                y = self.space_time_embed[name](frames[:, sl], p)  # (B*T, D, gh, gw)
                toks.append(y.reshape(b, t, d, gh, gw).permute(0, 3, 4, 1, 2))
            else:
                toks.append(inp.s_t_x.new_zeros(b, gh, gw, t, d))
        x = torch.stack(toks, dim=4)  # (B, gh, gw, T, G, D)
        g = x.shape[4]
        code = torch.cat(
            [
                self.s_t_channel_embed[None, None, None, None].expand(b, gh, gw, t, g, -1),
                pos_t[None, None, None, :, None].expand(b, gh, gw, t, g, -1),
                months[:, None, None, :, None].expand(b, gh, gw, t, g, -1),
                grid[None, :, :, None, None].expand(b, gh, gw, t, g, -1),
            ],
            dim=-1,
        )
        return x + code, mask

    def _space(
        self, inp: GalileoInputs, p: int, grid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, h, w, _ = inp.sp_x.shape
        gh, gw = h // p, w // p
        d, q = self.cfg.dim, self.cfg.dim // 4
        mask = inp.sp_m[:, ::p, ::p]  # (B, gh, gw, G)
        img = inp.sp_x.permute(0, 3, 1, 2)
        toks = []
        for i, ((name, _), sl) in enumerate(
            zip(self.cfg.groups["space"], self.cfg.band_slices("space"), strict=True)
        ):
            if bool((mask[..., i] == 0).any()):
                toks.append(self.space_embed[name](img[:, sl], p).permute(0, 2, 3, 1))
            else:
                toks.append(inp.sp_x.new_zeros(b, gh, gw, d))
        x = torch.stack(toks, dim=3)  # (B, gh, gw, G, D)
        g = x.shape[3]
        code = torch.cat(
            [
                self.sp_channel_embed[None, None, None].expand(b, gh, gw, g, -1),
                x.new_zeros(b, gh, gw, g, 2 * q),
                grid[None, :, :, None].expand(b, gh, gw, g, -1),
            ],
            dim=-1,
        )
        return x + code, mask

    def _time(
        self, inp: GalileoInputs, months: torch.Tensor, pos_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = inp.t_x.shape
        d, q = self.cfg.dim, self.cfg.dim // 4
        toks = []
        for i, ((name, _), sl) in enumerate(
            zip(self.cfg.groups["time"], self.cfg.band_slices("time"), strict=True)
        ):
            if bool((inp.t_m[..., i] == 0).any()):
                toks.append(self.time_embed[name](inp.t_x[..., sl]))
            else:
                toks.append(inp.t_x.new_zeros(b, t, d))
        x = torch.stack(toks, dim=2)  # (B, T, G, D)
        g = x.shape[2]
        code = torch.cat(
            [
                self.t_channel_embed[None, None].expand(b, t, g, -1),
                pos_t[None, :, None].expand(b, t, g, -1),
                months[:, :, None].expand(b, t, g, -1),
                x.new_zeros(b, t, g, q),
            ],
            dim=-1,
        )
        return x + code, inp.t_m

    def _static(self, inp: GalileoInputs) -> tuple[torch.Tensor, torch.Tensor]:
        b = inp.st_x.shape[0]
        d, q = self.cfg.dim, self.cfg.dim // 4
        toks = []
        for i, ((name, _), sl) in enumerate(
            zip(self.cfg.groups["static"], self.cfg.band_slices("static"), strict=True)
        ):
            if bool((inp.st_m[..., i] == 0).any()):
                toks.append(self.static_embed[name](inp.st_x[..., sl]))
            else:
                toks.append(inp.st_x.new_zeros(b, d))
        x = torch.stack(toks, dim=1)  # (B, G, D)
        g = x.shape[1]
        code = torch.cat(
            [self.st_channel_embed[None].expand(b, g, -1), x.new_zeros(b, g, 3 * q)], dim=-1
        )
        return x + code, inp.st_m


# ------------------------------------------------------------------------------------------------
# Registry bands -> Galileo inputs.
# ------------------------------------------------------------------------------------------------


def to_model_units(values: torch.Tensor, convert: str) -> torch.Tensor:
    """Physical registry units -> the units the model was trained on.

    ``db``: linear backscatter -> dB; ``x10000``: reflectance -> Sentinel-2 DN; ``none``.
    """
    if convert == "db":
        return 10.0 * torch.log10(values)
    if convert == "x10000":
        return values * 10000.0
    if convert == "none":
        return values
    raise ModelError(f"unknown unit conversion '{convert}' in an encoder model card")


def slope_degrees(dem: torch.Tensor, pixel_m: float) -> torch.Tensor:
    """Terrain slope in degrees from a DEM ``(..., H, W)`` in metres (central differences).

    An approximation of the slope band the model was trained on (Earth Engine's
    ``ee.Terrain.slope`` on SRTM); edges use one-sided differences.
    """
    dz_dy, dz_dx = torch.gradient(dem, spacing=pixel_m, dim=(-2, -1))
    return torch.rad2deg(torch.atan(torch.hypot(dz_dx, dz_dy)))


@dataclass
class BandFrame:
    """Registry bands of one batch: ``x`` ``(B, T, C, H, W)`` in physical units, and ``keys``."""

    x: torch.Tensor
    keys: list[str]

    def get(self, key: str) -> torch.Tensor | None:
        return self.x[:, :, self.keys.index(key)] if key in self.keys else None


def _band_values(frame: BandFrame, band: dict[str, Any], pixel_m: float) -> torch.Tensor | None:
    """One band of a group in model units ``(B, T, H, W)``, derived if the card says how."""
    key = band.get("key")
    v = frame.get(key) if key else None
    if v is not None:
        return to_model_units(v, band["convert"])
    derive = band.get("derive")
    if derive == "ndvi":
        nir, red = frame.get("s2:B08"), frame.get("s2:B04")
        if nir is None or red is None:
            return None
        s = nir + red
        ndvi = torch.where(s > 0, (nir - red) / torch.where(s > 0, s, 1.0), 0.0)
        return torch.where(torch.isfinite(s), ndvi, torch.nan)  # missing if B8 or B4 is
    if derive == "slope":
        dem = frame.get("elevation:dem")
        return None if dem is None else slope_degrees(dem, pixel_m)
    return None


def _group_pixels(
    frame: BandFrame, group: dict[str, Any], pixel_m: float
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A group's normalised values ``(B, T, H, W, n)`` and pixel mask ``(B, T, H, W)``."""
    vals = []
    for band in group["bands"]:
        v = _band_values(frame, band, pixel_m)
        if v is None:
            return None
        vals.append((v - band["shift"]) / band["div"])
    x = torch.stack(vals, dim=-1)
    missing = ~torch.isfinite(x).all(dim=-1)
    return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), missing


def _patch_mask(missing: torch.Tensor, patch: int) -> torch.Tensor:
    """Mask a whole patch where any of its pixels is missing; ``missing``: ``(..., H, W)``."""
    lead = missing.shape[:-2]
    h, w = missing.shape[-2:]
    m = missing.reshape(-1, 1, h, w).float()
    m = F.max_pool2d(m, patch, patch, ceil_mode=True)
    m = m.repeat_interleave(patch, dim=-2).repeat_interleave(patch, dim=-1)[..., :h, :w]
    return m.reshape(*lead, h, w)


def _as_frame(x: torch.Tensor, keys: Sequence[str]) -> BandFrame:
    """Check ``x`` against its keys; ``(B, C, H, W)`` becomes one date."""
    if x.ndim == 4:
        x = x[:, None]
    if x.ndim != 5 or x.shape[2] != len(keys):
        raise ModelError(
            f"Galileo input of shape {tuple(x.shape)} does not match its {len(keys)} band keys",
            fix="pass (B, C, H, W) or (B, T, C, H, W) with one registry key per channel",
        )
    if len(set(keys)) != len(keys):
        raise ModelError(f"duplicate band keys in {list(keys)}", fix="give each channel once")
    return BandFrame(x.float(), list(keys))


def inputs_from_bands(
    card: dict[str, Any],
    x: torch.Tensor,
    keys: Sequence[str],
    *,
    patch_size: int,
    months: torch.Tensor | None = None,
    latlon: torch.Tensor | None = None,
    resolution_m: float = BASE_GSD_M,
) -> tuple[GalileoInputs, list[str]]:
    """Galileo inputs from registry bands in physical units.

    Args:
        card: the encoder's model card (band groups, unit conversions, statistics).
        x: ``(B, C, H, W)`` or ``(B, T, C, H, W)``; NaN marks missing pixels.
        keys: registry key of each channel (``s2:B04``, ``s1:VV``, ``elevation:dem``, ...), any
            order; keys the model has no use for are ignored.
        patch_size: the encoder's patch size (a token is masked if any pixel of it is missing).
        months: ``(B, T)`` month of each date, 0 = January (default: June for every date).
        latlon: ``(B, 2)`` latitude/longitude in degrees (EPSG:4326) of each sample, optional.
        resolution_m: pixel size in metres (also used to derive slope from ``elevation:dem``).

    Returns:
        The inputs and the names of the groups that are present. A group is present only if
        all of its bands are given (or derivable); absent groups are masked. Space groups (SRTM)
        take the mean over dates of each pixel.
    """
    frame = _as_frame(x, keys)
    x = frame.x
    b, t = x.shape[:2]
    s_t_x, s_t_m, used = _kind_pixels(card, "space_time", frame, patch_size, resolution_m)
    sp_x, sp_m, used_sp = _kind_pixels(card, "space", frame, patch_size, resolution_m)
    used += used_sp
    t_groups = card["groups"]["time"]
    t_x = x.new_zeros(b, t, sum(len(g["bands"]) for g in t_groups))
    t_m = x.new_ones(b, t, len(t_groups))
    st_x, st_m = _static_inputs(card, b, latlon, x)
    if latlon is not None:
        used.append("location")
    if not used:
        raise ModelError(
            f"none of Galileo's band groups can be formed from the bands {list(keys)}",
            fix="give all bands of at least one group (see `eo-fusion model list`)",
        )
    if months is None:
        months = torch.full((b, t), DEFAULT_MONTH, dtype=torch.long, device=x.device)
    inputs = GalileoInputs(
        s_t_x=s_t_x.permute(0, 2, 3, 1, 4),  # (B, H, W, T, n)
        sp_x=sp_x[:, 0],  # space groups are constant over dates (see _kind_pixels)
        t_x=t_x,
        st_x=st_x,
        s_t_m=s_t_m.permute(0, 2, 3, 1, 4),
        sp_m=sp_m[:, 0],
        t_m=t_m,
        st_m=st_m,
        months=months.long(),
    )
    return inputs, used


def _kind_pixels(
    card: dict[str, Any], kind: str, frame: BandFrame, patch: int, pixel_m: float
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Values ``(B, T, H, W, n bands)`` and masks ``(B, T, H, W, n groups)`` of one token kind.

    For space groups the date axis is kept here and averaged by the caller (NaN-aware: a pixel
    is missing only where it is missing on every date).
    """
    b, t, _, h, w = frame.x.shape
    vals, masks, used = [], [], []
    for group in card["groups"][kind]:
        got = _group_pixels(frame, group, pixel_m)
        n = len(group["bands"])
        if got is None:
            vals.append(frame.x.new_zeros(b, t, h, w, n))
            masks.append(frame.x.new_ones(b, t, h, w))
            continue
        v, missing = got
        if kind == "space":  # static in time: average the dates that have data
            have = (~missing).float()[..., None]
            v = (v * have).sum(1, keepdim=True) / have.sum(1, keepdim=True).clamp(min=1)
            v = v.expand(b, t, h, w, n)
            missing = missing.all(dim=1, keepdim=True).expand(b, t, h, w)
        vals.append(v)
        masks.append(_patch_mask(missing, patch))
        used.append(group["name"])
    return torch.cat(vals, dim=-1), torch.stack(masks, dim=-1), used


def _static_inputs(
    card: dict[str, Any], b: int, latlon: torch.Tensor | None, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    groups = card["groups"]["static"]
    st_x = like.new_zeros(b, sum(len(g["bands"]) for g in groups))
    st_m = like.new_ones(b, len(groups))
    if latlon is None:
        return st_x, st_m
    names = [g["name"] for g in groups]
    i = names.index("location")
    start = sum(len(g["bands"]) for g in groups[:i])
    lat, lon = torch.deg2rad(latlon[:, 0].float()), torch.deg2rad(latlon[:, 1].float())
    xyz = torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=-1)
    st_x[:, start : start + 3] = xyz
    st_m[:, i] = 0
    return st_x, st_m


# ------------------------------------------------------------------------------------------------
# Land cover with a frozen Galileo encoder.
# ------------------------------------------------------------------------------------------------


class GalileoLandCover(FrozenEncoderHead):
    """Dense land cover from S1 + S2 + elevation with Galileo per-patch features.

    The encoder's per-patch features (``(B, h, w, D)``) feed the project's
    :class:`~eo_fusion.models.heads.DenseDecoder` (one level, ×4 up-sampling from the patch
    grid), refined at full resolution by a 1 × 1 projection of the normalised input bands.

    Args:
        encoder: a loaded Galileo encoder (see :func:`eo_fusion.models.encoders.load_encoder`).
        card: its model card.
        n_classes: number of land-cover classes.
        patch_size: Galileo patch size in pixels (4 at 10 m gives 40 m tokens).
        freeze: keep the encoder's weights fixed (trained: only the decoder).
        channels: decoder width.
    """

    encoder: GalileoEncoder

    def __init__(
        self,
        encoder: GalileoEncoder,
        card: dict[str, Any],
        n_classes: int,
        *,
        patch_size: int = 4,
        freeze: bool = True,
        channels: int = 64,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.card = card
        self.patch_size = patch_size
        self.freeze = freeze
        if freeze:
            encoder.requires_grad_(False)
        n_in = encoder.cfg.n_bands("space_time") + encoder.cfg.n_bands("space")
        self.pixel = nn.Sequential(nn.Conv2d(n_in, channels, 1), nn.GELU())
        self.decoder = DenseDecoder(encoder.dim, 1, n_classes, channels)

    def embed(
        self,
        x: torch.Tensor,
        keys: Sequence[str],
        months: torch.Tensor | None = None,
        resolution_m: float = BASE_GSD_M,
    ) -> tuple[torch.Tensor, GalileoInputs]:
        """Per-patch Galileo features ``(B, D, H/p, W/p)`` (0 where a patch has no data) and
        the normalised inputs; for linear probes and random forests on the features."""
        inp, _ = inputs_from_bands(
            self.card, x, keys, patch_size=self.patch_size, months=months, resolution_m=resolution_m
        )
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            # Patches without data are NaN; 0 keeps the convolutions from spreading it.
            feats = torch.nan_to_num(self.encoder(inp, self.patch_size, resolution_m).per_patch())
        return feats.permute(0, 3, 1, 2), inp

    def forward(
        self,
        x: torch.Tensor,
        keys: Sequence[str],
        months: torch.Tensor | None = None,
        resolution_m: float = BASE_GSD_M,
    ) -> torch.Tensor:
        """``x``: ``(B, C, H, W)`` or ``(B, T, C, H, W)`` in physical units -> ``(B, K, H, W)``."""
        feats, inp = self.embed(x, keys, months, resolution_m)
        gh, gw = feats.shape[-2:]
        h, w = inp.s_t_x.shape[1:3]
        # Per-pixel detail: the normalised bands, averaged over dates, masked values at 0.
        pix = torch.cat([inp.s_t_x.mean(dim=3), inp.sp_x], dim=-1).permute(0, 3, 1, 2)
        tokens = feats.flatten(2).transpose(1, 2)  # (B, gh * gw, D)
        return self.decoder([tokens], (gh, gw), (h, w), self.pixel(pix))
