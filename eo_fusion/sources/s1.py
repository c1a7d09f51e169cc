"""Sentinel-1 VV/VH (HH/HV) backscatter from GRD or RTC items on the tile grid.

Every step that combines values (warping, speckle filtering, temporal aggregation) works in
linear power: dB inputs (``BandSpec.units == "dB"``) are converted first and the result is
converted to the requested output units (``options.units``: ``dB``, the default, or ``linear``).
Averaging dB values would average logarithms, biasing backscatter low.

Stored values: dB (``BandSpec.units == "dB"``), linear power (``linear``: Planetary Computer
``sentinel-1-rtc`` gamma0), or *amplitude DN* (``amplitude``: every GRD collection). Amplitude is
never taken for power: it is calibrated to sigma0 = DN^2 / A^2 with the product's calibration
annotation in source pixel space (:mod:`eo_fusion.sources.s1_calibration`), or refused with an
error naming the item and asset when the annotation cannot be read (``calibration: none`` keeps
uncalibrated DN^2 instead). The attribute ``backscatter`` says which each acquisition is.

Options: :class:`eo_fusion.modalities.S1Options` (``units``, ``speckle``, ``speckle_window``,
``orbit``, ``relative_orbit``, ``calibration``); defaults live there. The orbit direction and
date of each acquisition are kept in the attributes ``orbit_state`` and ``dates``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox
from scipy import ndimage

from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import ModalitySpec
from eo_fusion.errors import BandError
from eo_fusion.modalities import S1Options
from eo_fusion.sources.common import (
    ModalityResult,
    aggregate_periods,
    band_order,
    nanmean,
    read_day_mosaics,
)
from eo_fusion.sources.reader import Reader, ReadSpec
from eo_fusion.sources.resample import linear_to_db
from eo_fusion.sources.s1_calibration import AmplitudeCalibration, calibration_for

__all__ = ["lee_filter", "load_s1"]


def lee_filter(power: np.ndarray, size: int = 5, looks: float = 4.4) -> np.ndarray:
    """Lee speckle filter on linear power (2-D); NaN pixels are left NaN and ignored.

    Args:
        power: linear backscatter, ``(y, x)``.
        size: window edge in pixels (odd).
        looks: equivalent number of looks of the input (about 4.4 for IW GRD high resolution), which
            sets the speckle variance ``1 / looks`` relative to the local mean squared.
    """
    valid = np.isfinite(power)
    x = np.where(valid, power, 0.0).astype(np.float64)
    w = valid.astype(np.float64)
    n = ndimage.uniform_filter(w, size, mode="reflect")
    n = np.where(n > 0, n, np.nan)
    mean = ndimage.uniform_filter(x, size, mode="reflect") / n
    sq = ndimage.uniform_filter(x * x, size, mode="reflect") / n
    var = np.maximum(sq - mean * mean, 0.0)
    noise = mean * mean / looks
    gain = np.clip((var - noise) / np.where(var > 0, var, np.nan), 0.0, 1.0)
    gain = np.nan_to_num(gain, nan=0.0)
    out = mean + gain * (x - mean)
    return np.where(valid, out, np.nan).astype(np.float32)


def _select_orbit(items: list[NormalizedItem], opts: S1Options) -> list[NormalizedItem]:
    """Items of the requested orbit direction and relative orbit (the search already asked the
    catalog for them; local catalogs and hand-made item lists are filtered here)."""
    if opts.orbit != "any":
        items = [
            i for i in items if str(i.properties.get("sat:orbit_state", "")).lower() == opts.orbit
        ]
    if opts.relative_orbit is not None:
        items = [i for i in items if i.properties.get("sat:relative_orbit") == opts.relative_orbit]
    return items


def _calibrations(
    items: list[NormalizedItem], keys: list[str], opts: S1Options
) -> dict[str, AmplitudeCalibration]:
    """href -> calibration for every band stored as amplitude DN (GRD); refused (ReadError
    naming item and asset) when its annotation cannot be read, unless ``calibration: none``."""
    return {
        b.href: calibration_for(it, b, opts.calibration)
        for it in items
        for k in keys
        if (b := it.bands.get(k)) is not None and b.spec.units == "amplitude"
    }


def _radiometry(items: list[NormalizedItem], cal: dict[str, AmplitudeCalibration]) -> str:
    """What one acquisition's values are: sigma0 / gamma0 (RTC) / uncalibrated DN^2."""
    kinds = set()
    for it in items:
        for b in it.bands.values():
            if b.href in cal:
                kinds.add("sigma0" if cal[b.href].lut is not None else "uncalibrated DN^2")
            elif it.modality == "s1-rtc":
                kinds.add("gamma0 (terrain-flattened)")
            else:
                kinds.add(f"as stored ({b.spec.units})")
    return "+".join(sorted(kinds))


def _keys(items: list[NormalizedItem], mspec: ModalitySpec) -> list[str]:
    if mspec.bands:
        bad = [b for b in mspec.bands if not b.startswith("s1:")]
        if bad:
            raise BandError(f"Sentinel-1 modality asked for bands {bad}", fix="use s1:VV, s1:VH")
        return list(mspec.bands)
    return band_order(k for it in items for k in it.bands if k.startswith("s1:"))


def load_s1(
    items: list[NormalizedItem], gbox: GeoBox, mspec: ModalitySpec, reader: Reader
) -> ModalityResult:
    """Read Sentinel-1 items onto ``gbox``: composite (linear mean) or time series."""
    opts = S1Options.of(mspec.options)
    out_units: str = opts.units
    items = _select_orbit(items, opts)
    keys = _keys(items, mspec)
    cal = _calibrations(items, keys, opts)

    def spec_for(asset):
        return ReadSpec(
            kind="sar",
            sar_db_input=asset.spec.units == "dB",
            sar_db_output=False,
            calibrate=cal.get(asset.href),
        )

    lee = opts.speckle == "lee"
    win = opts.speckle_window
    days = read_day_mosaics(items, keys, gbox, spec_for, reader)
    series = [np.stack([lee_filter(b, win) for b in d.data]) if lee else d.data for d in days]
    times = [d.time for d in days]
    ids = [i.id for d in days for i in d.items]
    # One acquisition = one orbit (common.group_same_day): its first item names it.
    orbits = [str(d.items[0].properties.get("sat:orbit_state", "unknown")) for d in days]
    if not series:
        raise BandError("no Sentinel-1 items to stack", fix="widen the search or drop the modality")
    lin = np.stack(series)
    attrs: dict[str, Any] = {
        "dates": [t.isoformat() for t in times],
        "orbit_state": orbits,
        "mode": mspec.mode,
        "speckle": opts.speckle,
        "backscatter": [_radiometry(d.items, cal) for d in days],
        "valid_fraction": [float(np.all(np.isfinite(d), axis=0).mean()) for d in lin],
    }
    conv = linear_to_db if out_units == "dB" else (lambda a: a.astype(np.float32))
    units = [out_units] * len(keys)
    if mspec.mode == "composite":
        comp = conv(nanmean(lin, axis=0))
        attrs["composite"] = "mean in linear power"
        valid = np.all(np.isfinite(comp), axis=0)
        return ModalityResult(comp, valid, keys, units, gbox, None, ids, attrs)
    if mspec.aggregate != "none":
        lin, times = aggregate_periods(lin, times, mspec.aggregate, nanmean)
        attrs["aggregate"] = f"{mspec.aggregate} mean in linear power"
    data = conv(lin)
    valid = np.all(np.isfinite(data), axis=1)
    return ModalityResult(data, valid, keys, units, gbox, times, ids, attrs)
