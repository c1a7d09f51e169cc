"""Spectral ranges and the spectrum-aware patch embedding.

Every band reaches the model through its band-registry key (:mod:`eo_fusion.bands`). The key's
:class:`~eo_fusion.bands.BandSpec` decides which *spectral range* projects the band's patch:

* optical bands by their centre wavelength (``wavelength_nm``), see :data:`SPECTRAL_RANGES`;
* SAR bands by polarisation (VV and VH have their own ranges);
* non-spectral layers (elevation-derived, OSM rasters, indices) by key, see
  :data:`NON_SPECTRAL_RANGES`.

A token is the mean of the projections of the bands that are present, so any subset and any order
of bands works and absent bands are left out, never zero-filled. A band whose wavelength falls in no
range the model was trained with is projected with an inverse-distance blend of the two nearest
trained ranges (by range centre); a band with neither a wavelength nor a trained key is refused
with a :class:`~eo_fusion.errors.BandError` that names it.

Two *range tables* exist:

* ``"eo-fusion"`` (our own models): the range limits below are our own grouping, written from the
  published Sentinel-2 MSI spectral response (ESA, "Sentinel-2 Spectral Response Functions",
  COPE-GSEG-EOPG-TN-15-0007, v3.0: centre wavelengths B01 442.7 … B12 2202.4 nm for S2A)
  following the idea of SMARTIES (G. Sumbul, C. Xu, E. Dalsasso, D. Tuia, "SMARTIES:
  Spectrum-Aware Multi-Sensor Auto-Encoder for Remote Sensing Images", ICCV 2025,
  arXiv:2506.19585), which groups bands of different sensors into shared spectral ranges. Each
  Sentinel-2 band has a range of its own; other sensors' bands (aerial RGB/NIR, Landsat, ...)
  fall into the range that contains their centre wavelength.
* ``"smarties"`` (imported SMARTIES checkpoints): the 17 trained projections of the published
  SMARTIES models, in their index order (:data:`SMARTIES_RANGES`, limits in nm as released in
  the SMARTIES repository's spectrum configuration). Registry keys of Sentinel-2, Sentinel-1
  and aerial RGB map to the projection SMARTIES uses for that band (:data:`SMARTIES_KEYS`);
  S2 B10 has no projection there and is interpolated like any band without a range.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from eo_fusion.bands import BandSpec, get_band
from eo_fusion.errors import BandError


@dataclass(frozen=True)
class SpectralRange:
    """One spectral range of the embedding (one linear projection per range).

    Attributes:
        name: range name (key of the projection in the model).
        lo_nm: lower limit in nm (inclusive), ``None`` for non-spectral ranges.
        hi_nm: upper limit in nm (exclusive), ``None`` for non-spectral ranges.
        note: which bands it is meant for.
    """

    name: str
    lo_nm: float | None
    hi_nm: float | None
    note: str

    @property
    def centre_nm(self) -> float | None:
        if self.lo_nm is None or self.hi_nm is None:
            return None
        return 0.5 * (self.lo_nm + self.hi_nm)


#: Optical ranges, ordered by wavelength (limits in nm; see the module docstring for the source).
SPECTRAL_RANGES: tuple[SpectralRange, ...] = (
    SpectralRange("coastal", 400.0, 460.0, "S2 B01 (442.7 nm)"),
    SpectralRange("blue", 460.0, 525.0, "S2 B02 (492.7 nm), aerial blue"),
    SpectralRange("green", 525.0, 600.0, "S2 B03 (559.8 nm), aerial green"),
    SpectralRange("red", 600.0, 690.0, "S2 B04 (664.6 nm), aerial red"),
    SpectralRange("red_edge_1", 690.0, 720.0, "S2 B05 (704.1 nm)"),
    SpectralRange("red_edge_2", 720.0, 760.0, "S2 B06 (740.5 nm)"),
    SpectralRange("red_edge_3", 760.0, 800.0, "S2 B07 (782.8 nm)"),
    SpectralRange("nir_broad", 800.0, 850.0, "S2 B08 (832.8 nm), aerial NIR"),
    SpectralRange("nir_narrow", 850.0, 900.0, "S2 B8A (864.7 nm)"),
    SpectralRange("water_vapour", 920.0, 970.0, "S2 B09 (945.1 nm)"),
    SpectralRange("cirrus", 1340.0, 1410.0, "S2 B10 (1373.5 nm)"),
    SpectralRange("swir_1", 1540.0, 1700.0, "S2 B11 (1613.7 nm)"),
    SpectralRange("swir_2", 2080.0, 2320.0, "S2 B12 (2202.4 nm)"),
)

#: SAR ranges keyed by polarisation (VV and VH each have their own projection, as in SMARTIES).
SAR_RANGES: dict[str, str] = {"VV": "sar_vv", "VH": "sar_vh"}

#: Non-spectral ranges: registry key (or key prefix ending in ``*``) -> range name.
NON_SPECTRAL_RANGES: dict[str, str] = {
    "elevation:dsm": "elevation",
    "elevation:dtm": "elevation",
    "elevation:dem": "elevation",
    "elevation:ndsm": "height",
    "elevation:slope": "slope",
    "elevation:aspect": "aspect",
    "osm:buildings": "osm_buildings",
    "osm:roads_major": "osm_roads",
    "osm:roads_minor": "osm_roads",
    "osm:water": "osm_water",
    "osm:landuse_*": "osm_landuse",
    "index:ndvi": "ndvi",
}

#: Every range name, in a fixed order (used for checkpoints and documentation).
ALL_RANGES: tuple[str, ...] = (
    *(r.name for r in SPECTRAL_RANGES),
    *SAR_RANGES.values(),
    *dict.fromkeys(NON_SPECTRAL_RANGES.values()),
)

#: The trained projections of the published SMARTIES models, in checkpoint index order
#: (``spectrum_projection.spectrum_embeds.{i}``): name, limits in nm, the band it was trained on.
#: SAR ranges carry no wavelength limits here (SMARTIES gives both the same C-band range).
SMARTIES_RANGES: tuple[SpectralRange, ...] = (
    SpectralRange("aerosol", 422.0, 463.0, "S2 B01"),
    SpectralRange("blue_1", 427.0, 558.0, "S2 B02"),
    SpectralRange("blue_3", 430.0, 545.0, "RGB blue"),
    SpectralRange("green_1", 466.0, 620.0, "RGB green"),
    SpectralRange("green_2", 524.0, 595.0, "S2 B03"),
    SpectralRange("red_1", 590.0, 710.0, "RGB red"),
    SpectralRange("red_2", 634.0, 696.0, "S2 B04"),
    SpectralRange("red_edge_1", 689.0, 719.0, "S2 B05"),
    SpectralRange("red_edge_2", 726.0, 755.0, "S2 B06"),
    SpectralRange("near_infrared_1", 728.0, 938.0, "S2 B08"),
    SpectralRange("near_infrared_2", 761.0, 802.0, "S2 B07"),
    SpectralRange("near_infrared_3", 843.0, 886.0, "S2 B8A"),
    SpectralRange("short_wave_infrared_1", 923.0, 964.0, "S2 B09"),
    SpectralRange("short_wave_infrared_3", 1516.0, 1704.0, "S2 B11"),
    SpectralRange("short_wave_infrared_4", 2002.0, 2376.0, "S2 B12"),
    SpectralRange("microwave_1", None, None, "S1 VV"),
    SpectralRange("microwave_2", None, None, "S1 VH"),
)

#: Registry key -> the SMARTIES projection that band was trained with.
SMARTIES_KEYS: dict[str, str] = {
    "s2:B01": "aerosol",
    "s2:B02": "blue_1",
    "s2:B03": "green_2",
    "s2:B04": "red_2",
    "s2:B05": "red_edge_1",
    "s2:B06": "red_edge_2",
    "s2:B07": "near_infrared_2",
    "s2:B08": "near_infrared_1",
    "s2:B8A": "near_infrared_3",
    "s2:B09": "short_wave_infrared_1",
    "s2:B11": "short_wave_infrared_3",
    "s2:B12": "short_wave_infrared_4",
    "s1:VV": "microwave_1",
    "s1:VH": "microwave_2",
    "aerial:red": "red_1",
    "aerial:green": "green_1",
    "aerial:blue": "blue_3",
    "aerial:nir": "near_infrared_1",
}

RangeTable = Literal["eo-fusion", "smarties"]

#: Range names of each table, in their fixed order.
TABLE_RANGES: dict[str, tuple[str, ...]] = {
    "eo-fusion": ALL_RANGES,
    "smarties": tuple(r.name for r in SMARTIES_RANGES),
}
_OPTICAL: dict[str, tuple[SpectralRange, ...]] = {
    "eo-fusion": SPECTRAL_RANGES,
    "smarties": tuple(r for r in SMARTIES_RANGES if r.lo_nm is not None),
}


@dataclass(frozen=True)
class RangeAssignment:
    """How one band is projected: a weighted blend of range projections (weights sum to 1)."""

    key: str
    ranges: tuple[str, ...]
    weights: tuple[float, ...]


def native_range(spec: BandSpec, table: RangeTable = "eo-fusion") -> str | None:
    """The range a band belongs to in ``table``, or ``None`` when none contains it."""
    if table == "smarties":
        return _smarties_range(spec)
    if spec.kind == "sar":
        return SAR_RANGES.get((spec.polarization or "").upper())
    if spec.wavelength_nm is not None:
        for r in SPECTRAL_RANGES:
            assert r.lo_nm is not None and r.hi_nm is not None
            if r.lo_nm <= spec.wavelength_nm < r.hi_nm:
                return r.name
        return None
    if spec.key in NON_SPECTRAL_RANGES:
        return NON_SPECTRAL_RANGES[spec.key]
    for pattern, name in NON_SPECTRAL_RANGES.items():
        if pattern.endswith("*") and spec.key.startswith(pattern[:-1]):
            return name
    return None


def _smarties_range(spec: BandSpec) -> str | None:
    """SMARTIES projection of a band: its trained one, else the narrowest range containing it."""
    if spec.key in SMARTIES_KEYS:
        return SMARTIES_KEYS[spec.key]
    if spec.wavelength_nm is None or spec.kind == "sar":
        return None
    wl = spec.wavelength_nm
    inside = [r for r in _OPTICAL["smarties"] if r.lo_nm <= wl <= r.hi_nm]  # type: ignore[operator]
    if not inside:
        return None
    return min(inside, key=lambda r: r.hi_nm - r.lo_nm).name  # type: ignore[operator]


def assign_range(
    spec: BandSpec, trained: Sequence[str], table: RangeTable = "eo-fusion"
) -> RangeAssignment:
    """Decide how a model with projections for ``trained`` ranges (of ``table``) embeds ``spec``.

    Raises:
        BandError: the band has no wavelength and no trained range (named in the message).
    """
    own = native_range(spec, table)
    if own is not None and own in trained:
        return RangeAssignment(spec.key, (own,), (1.0,))
    if spec.wavelength_nm is not None and spec.kind != "sar":
        return _interpolate(spec, trained, _OPTICAL[table])
    what = f"polarisation {spec.polarization}" if spec.kind == "sar" else f"kind '{spec.kind}'"
    reason = (
        f"its range '{own}' was not trained in this model"
        if own
        else "it has no wavelength and no spectral range"
    )
    raise BandError(
        f"band '{spec.key}' ({what}) cannot be embedded: {reason}; "
        f"trained ranges: {', '.join(trained)}",
        fix="drop this band from the input, or fine-tune a model whose card lists a range for it",
    )


def _interpolate(
    spec: BandSpec, trained: Sequence[str], optical: Sequence[SpectralRange]
) -> RangeAssignment:
    """Inverse-distance blend of the nearest trained optical ranges below and above the band."""
    wl = float(spec.wavelength_nm)  # type: ignore[arg-type]
    centres = sorted(
        (c, r.name) for r in optical if r.name in trained and (c := r.centre_nm) is not None
    )
    if not centres:
        raise BandError(
            f"band '{spec.key}' ({wl:g} nm) cannot be embedded: the model has no optical range",
            fix="use a model trained on optical bands, or drop this band",
        )
    below = [(c, n) for c, n in centres if c <= wl]
    above = [(c, n) for c, n in centres if c > wl]
    if not below or not above:  # outside the trained span: the nearest range alone
        c, n = below[-1] if below else above[0]
        return RangeAssignment(spec.key, (n,), (1.0,))
    (c0, n0), (c1, n1) = below[-1], above[0]
    d0, d1 = max(wl - c0, 1e-6), max(c1 - wl, 1e-6)
    w0, w1 = (1 / d0) / (1 / d0 + 1 / d1), (1 / d1) / (1 / d0 + 1 / d1)
    return RangeAssignment(spec.key, (n0, n1), (w0, w1))


def resolve_band(key: str) -> BandSpec:
    """Look a key up in the band registry; unknown keys raise :class:`BandError` naming the key."""
    return get_band(key)


def wavelength_code(spec: BandSpec, dim: int) -> torch.Tensor:
    """Fixed sin-cos code of a band's wavelength (zeros for non-spectral bands), shape ``(dim,)``.

    Used to tell apart bands that share a range (e.g. S2 B04 and aerial red) in the per-range
    reconstruction heads.
    """
    out = torch.zeros(dim)
    if spec.wavelength_nm is None:
        return out
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half) / max(half, 1))
    angle = (spec.wavelength_nm / 100.0) * freqs
    out[:half] = torch.sin(angle)
    out[half : 2 * half] = torch.cos(angle)
    return out


class SpectralEmbedding(nn.Module):
    """Spectrum-aware patch embedding: one ``patch × patch → dim`` projection per spectral range.

    Args:
        ranges: names of the ranges this model has projections for (from ``TABLE_RANGES[table]``).
        patch_size: patch edge in pixels.
        dim: token width.
        table: the range table (``"eo-fusion"``, or ``"smarties"`` for imported SMARTIES models).

    ``forward(x, keys)`` takes ``x`` of shape ``(B, C, H, W)`` (normalised values, ``H`` and ``W``
    multiples of ``patch_size``) and the ``C`` registry keys of its bands, and returns tokens of
    shape ``(B, H/p · W/p, dim)`` in row-major patch order.
    """

    def __init__(
        self, ranges: Sequence[str], patch_size: int, dim: int, table: RangeTable = "eo-fusion"
    ) -> None:
        super().__init__()
        known = TABLE_RANGES[table]
        unknown = [r for r in ranges if r not in known]
        if unknown:
            raise BandError(
                f"unknown spectral range(s) {unknown} for the '{table}' range table",
                fix=f"choose from {list(known)}",
            )
        self.table: RangeTable = table
        self.ranges = list(ranges)
        self.patch_size = patch_size
        self.dim = dim
        self.proj = nn.ModuleDict({r: nn.Conv2d(1, dim, patch_size, patch_size) for r in ranges})

    def assignments(self, keys: Sequence[str]) -> list[RangeAssignment]:
        """Range assignment of each key (raises :class:`BandError` naming an unusable key)."""
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if list(keys).count(k) > 1)
            raise BandError(f"band '{dup}' is given twice", fix="pass each band key once")
        if not keys:
            raise BandError("no bands given to the model", fix="pass at least one band")
        return [assign_range(resolve_band(k), self.ranges, self.table) for k in keys]

    def _projection(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight ``(dim, 1, p, p)`` and bias ``(dim,)`` of the projection of range ``name``."""
        conv = cast(nn.Conv2d, self.proj[name])  # built in __init__ as a Conv2d with a bias
        return conv.weight, cast(torch.Tensor, conv.bias)

    def band_projections(self, keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-band kernels ``(dim, C, p, p)`` and per-band biases ``(C, dim)`` for ``keys``."""
        weights: list[torch.Tensor] = []
        biases: list[torch.Tensor] = []
        for a in self.assignments(keys):  # non-empty, each with at least one range
            parts = [(wt, *self._projection(r)) for r, wt in zip(a.ranges, a.weights, strict=True)]
            weights.append(functools.reduce(operator.add, [wt * w for wt, w, _ in parts]))
            biases.append(functools.reduce(operator.add, [wt * b for wt, _, b in parts]))
        return torch.cat(weights, dim=1), torch.stack(biases)

    def band_kernels(self, keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-band kernels ``(dim, C, p, p)`` and summed bias ``(dim,)`` for ``keys``."""
        weight, bias = self.band_projections(keys)
        return weight, functools.reduce(operator.add, list(bias))

    def forward(
        self, x: torch.Tensor, keys: Sequence[str], valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Tokens ``(B, N, dim)``; see :meth:`masked` (fully missing patches give 0)."""
        return self.masked(x, keys, valid)[0]

    def masked(
        self, x: torch.Tensor, keys: Sequence[str], valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``(B, N, dim)`` and ``missing`` ``(B, N)`` (True: no band has data there).

        A pixel is missing where ``x`` is not finite or ``valid`` (same shape as ``x``, or
        ``(B, 1, H, W)`` for every band) is False; the values under missing pixels are never
        read. Within a patch, each band's projection sees its missing pixels replaced by the
        mean of its valid pixels in that patch, and the token is the mean of the band
        projections weighted by each band's valid fraction of the patch: a band absent from
        the patch (all its pixels missing) is left out of the mean, never zero-filled. A patch
        where every band is missing gets the token 0 and ``missing=True``: the encoder leaves
        it out of attention (key padding).
        """
        if x.shape[1] != len(keys):
            raise BandError(
                f"input has {x.shape[1]} bands but {len(keys)} band keys were given",
                fix="pass one registry key per input band",
            )
        ok = torch.isfinite(x)
        if valid is not None:
            ok = ok & valid.to(torch.bool).expand_as(x)
        p = self.patch_size
        b, _, h, w = x.shape
        if bool(ok.all()):
            weight, bias = self.band_kernels(keys)
            # One convolution over all bands sums the per-band projections; dividing by the
            # number of bands makes the token their mean, whatever subset or order arrives.
            tok = F.conv2d(x, weight, bias, stride=p) / len(keys)
            missing = torch.zeros(b, (h // p) * (w // p), dtype=torch.bool, device=x.device)
            return tok.flatten(2).transpose(1, 2), missing
        return self._masked_tokens(x, ok, keys)

    def _masked_tokens(
        self, x: torch.Tensor, ok: torch.Tensor, keys: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The weighted token mean of :meth:`masked` for an input with missing pixels."""
        p = self.patch_size
        okf = ok.to(x.dtype)
        clean = torch.where(ok, x, torch.zeros((), dtype=x.dtype, device=x.device))
        frac = F.avg_pool2d(okf, p)  # (B, C, gh, gw): valid share of each band in each patch
        mean = F.avg_pool2d(clean, p) / frac.clamp(min=1e-12)
        up = frac.repeat_interleave(p, -2).repeat_interleave(p, -1)
        filled = torch.where(ok, clean, mean.repeat_interleave(p, -2).repeat_interleave(p, -1))
        weight, bias = self.band_projections(keys)
        # frac is constant over a patch, so projecting frac × pixels = frac × projection.
        num = F.conv2d(filled * up, weight, None, stride=p)
        num = num + torch.einsum("bchw,cd->bdhw", frac, bias.to(x.dtype))
        total = frac.sum(dim=1, keepdim=True)  # (B, 1, gh, gw)
        tok = num / total.clamp(min=1e-12)
        missing = (total == 0).flatten(1)
        return tok.flatten(2).transpose(1, 2), missing
