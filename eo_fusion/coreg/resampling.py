"""Resampling rules by kind of band (see docs/stacks.md for the table and the reasons).

``ratio`` below is target pixel size / source pixel size: > 1 means the target is coarser
(downsampling), < 1 finer (upsampling).

=============================  ======================  ==============================
kind                           ratio < 2 (up / ≈same)  ratio ≥ 2 (downsampling)
=============================  ======================  ==============================
reflectance, aerial, index     bilinear (ratio ≤ 1)    average (any ratio > 1)
sar (in linear power)          bilinear (ratio ≤ 1)    average (any ratio > 1)
elevation                      bilinear                average
categorical, osm               nearest                 mode
=============================  ======================  ==============================

SAR values stored in dB are converted to linear power before any resampling and back afterwards
(:func:`db_to_linear`, :func:`linear_to_db`): a mean of dB values is the log of a geometric mean,
which underestimates backscatter and is not what "average" should mean for power.
"""

from __future__ import annotations

import numpy as np
from rasterio.enums import Resampling

__all__ = ["RULES", "db_to_linear", "linear_to_db", "resampling_for"]

#: Ratio from which a coarser target counts as "downsampling" for elevation and categories.
DOWNSAMPLE_RATIO = 2.0
_EPS = 1e-6

#: kind -> (upsampling rule, downsampling rule, ratio above which the downsampling rule applies)
RULES: dict[str, tuple[Resampling, Resampling, float]] = {
    "reflectance": (Resampling.bilinear, Resampling.average, 1.0 + _EPS),
    "aerial": (Resampling.bilinear, Resampling.average, 1.0 + _EPS),
    "index": (Resampling.bilinear, Resampling.average, 1.0 + _EPS),
    "sar": (Resampling.bilinear, Resampling.average, 1.0 + _EPS),
    "elevation": (Resampling.bilinear, Resampling.average, DOWNSAMPLE_RATIO),
    "categorical": (Resampling.nearest, Resampling.mode, DOWNSAMPLE_RATIO),
    "osm": (Resampling.nearest, Resampling.mode, DOWNSAMPLE_RATIO),
}


def resampling_for(kind: str, ratio: float) -> Resampling:
    """The resampling rule for a band ``kind`` at size ratio ``ratio`` (target/source pixel)."""
    up, down, threshold = RULES.get(kind, RULES["reflectance"])
    return down if ratio >= threshold else up


def is_categorical(kind: str) -> bool:
    """True for kinds whose values are class codes (never interpolated)."""
    return kind in ("categorical", "osm")


def db_to_linear(db: np.ndarray) -> np.ndarray:
    """dB → linear power (``10 ** (dB / 10)``); NaN stays NaN."""
    return np.power(np.float32(10.0), np.asarray(db, dtype=np.float32) / np.float32(10.0))


def linear_to_db(lin: np.ndarray) -> np.ndarray:
    """Linear power → dB (``10 log10``); zero or negative power becomes NaN (no valid dB)."""
    lin = np.asarray(lin, dtype=np.float32)
    out = np.full(lin.shape, np.nan, dtype=np.float32)
    np.log10(lin, out=out, where=lin > 0)
    out *= np.float32(10.0)
    return out
