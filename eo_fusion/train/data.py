"""Training data over ModalityStacks: scenes, normalisation statistics, random windows.

A :class:`Scene` is the numpy view of one stack (one grid, one place): per modality an array
``(C, y, x)`` (composite) or ``(T, C, y, x)`` (time series) in physical units with NaN for no
data, its band keys and dates, and optionally a label raster. Scenes of different places are never
mixed inside one training window.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from eo_fusion.errors import BadInputError
from eo_fusion.models.card import BandNorm, normalize_bands
from eo_fusion.models.predict import modality_vars
from eo_fusion.models.spectral import resolve_band

log = logging.getLogger(__name__)


@dataclass
class Scene:
    """One co-registered stack as numpy arrays (see the module docstring)."""

    name: str
    arrays: dict[str, np.ndarray]
    keys: dict[str, list[str]]
    times: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None
    sources: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        a = next(iter(self.arrays.values()))
        return int(a.shape[-2]), int(a.shape[-1])


def scene_from_stack(ds: xr.Dataset, name: str, *, labels: str | None = None) -> Scene:
    """Turn a ModalityStack into a :class:`Scene` (``labels``: the variable holding class ids)."""
    arrays, keys, times = {}, {}, {}
    lab = None
    for var_name in list(ds.data_vars):
        var_name = str(var_name)
        if var_name.endswith(":valid"):
            continue
        try:
            var, valid_da = modality_vars(ds, var_name)
        except BadInputError:
            log.warning("scene %s: modality %s is on its own sub-grid; skipped", name, var_name)
            continue
        if "band" not in var.dims:
            continue
        vals = np.asarray(var.transpose(..., "band", "y", "x").values, dtype="float32")
        if valid_da is not None:
            valid = np.asarray(valid_da.values, dtype=bool)
            vals = np.where(np.expand_dims(valid, -3), vals, np.nan)
        if var_name == labels:
            band0 = vals[0] if vals.ndim == 3 else vals[0, 0]
            lab = np.nan_to_num(band0, nan=0).astype("int64")
            continue
        if not np.isfinite(vals).any():
            log.warning("scene %s: modality %s has no valid pixel; skipped", name, var_name)
            continue
        arrays[var_name] = vals
        keys[var_name] = [str(k) for k in var["band"].values]
        if "time" in var.dims:
            times[var_name] = np.asarray(var["time"].values)
    if labels is not None and lab is None:
        raise BadInputError(
            f"scene '{name}': the stack has no label variable '{labels}'",
            fix="add the label modality to the scene's modalities",
        )
    sources: list[str] = []
    for attrs in [ds.attrs, *(ds[v].attrs for v in ds.data_vars)]:
        src = attrs.get("source_items", [])
        sources += [src] if isinstance(src, str) else [str(x) for x in src]
    return Scene(name, arrays, keys, times, lab, sorted(set(sources)))


def band_stats(scenes: Iterable[Scene]) -> tuple[dict[str, dict[str, list[float]]], dict]:
    """Mean and std (physical units) per modality and band, and pooled per band kind."""
    acc: dict[str, dict[str, list[np.ndarray]]] = {}
    for sc in scenes:
        for mod, arr in sc.arrays.items():
            for i, key in enumerate(sc.keys[mod]):
                v = arr[..., i, :, :].ravel()
                v = v[np.isfinite(v)]
                if v.size:
                    acc.setdefault(mod, {}).setdefault(key, []).append(v)
    stats: dict[str, dict[str, list[float]]] = {}
    kinds: dict[str, list[np.ndarray]] = {}
    for mod, per_key in acc.items():
        for key, parts in per_key.items():
            v = np.concatenate(parts)
            # A floor on the spread keeps near-constant layers (e.g. empty OSM rasters) finite.
            stats.setdefault(mod, {})[key] = [float(v.mean()), float(max(v.std(), 1e-3))]
            kinds.setdefault(resolve_band(key).kind, []).append(v)
    by_kind = {}
    for kind, parts in kinds.items():
        v = np.concatenate(parts)
        by_kind[kind] = [float(v.mean()), float(max(v.std(), 1e-3))]
    return stats, by_kind


def normalise(scene: Scene, stats: Mapping[str, Mapping[str, Any]]) -> Scene:
    """Copy of ``scene`` with every band normalised by ``stats`` (NaN stays NaN).

    ``stats[modality][key]``: a :class:`~eo_fusion.models.card.BandNorm` or ``[mean, std]``.
    """
    arrays = {}
    for mod, arr in scene.arrays.items():
        norms = [BandNorm.model_validate(stats[mod][k]) for k in scene.keys[mod]]
        arrays[mod] = normalize_bands(arr, norms, axis=-3)
    return Scene(scene.name, arrays, scene.keys, scene.times, scene.labels, scene.sources)


def crop(arr: np.ndarray, y: int, x: int, size: int, fill: float = np.nan) -> np.ndarray:
    """Window ``[y:y+size, x:x+size]`` of the last two axes, padded with ``fill`` outside."""
    h, w = arr.shape[-2:]
    out = np.full((*arr.shape[:-2], size, size), fill, dtype=arr.dtype)
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + size, h), min(x + size, w)
    if y1 > y0 and x1 > x0:
        out[..., y0 - y : y1 - y, x0 - x : x1 - x] = arr[..., y0:y1, x0:x1]
    return out


def random_origin(rng: np.random.Generator, shape: tuple[int, int], size: int) -> tuple[int, int]:
    """Top-left corner of a random window; windows larger than the scene are centred with pad."""
    h, w = shape
    y = int(rng.integers(0, h - size + 1)) if h >= size else -((size - h) // 2)
    x = int(rng.integers(0, w - size + 1)) if w >= size else -((size - w) // 2)
    return y, x


@dataclass(frozen=True)
class View:
    """What a pretraining batch holds: one modality (a date of it) and optionally a partner."""

    scene: int
    modality: str
    partner: str | None = None


def pretrain_views(scenes: Sequence[Scene], pairs: Sequence[tuple[str, str]] = ()) -> list[View]:
    """Every single-modality view, and every co-located pair of different modalities."""
    views = []
    for i, sc in enumerate(scenes):
        mods = list(sc.arrays)
        for m in mods:
            views.append(View(i, m))
        for a in mods:
            for b in mods:
                if a < b and (not pairs or (a, b) in pairs or (b, a) in pairs):
                    views.append(View(i, a, b))
    return views


def pick_date(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random date of a time series with at least half its pixels valid (else any date)."""
    if arr.ndim == 3:
        return arr
    good = [t for t in range(arr.shape[0]) if np.isfinite(arr[t]).mean() >= 0.5]
    return arr[int(rng.choice(good if good else range(arr.shape[0])))]


def band_subset(n: int, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Indices of the bands to keep: all of them, or (with ``prob``) a random non-empty subset."""
    if n == 1 or rng.random() >= prob:
        return np.arange(n)
    k = int(rng.integers(1, n + 1))
    return np.sort(rng.choice(n, size=k, replace=False))
