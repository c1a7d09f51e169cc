"""Landsat 4-9 Collection 2 Level-2: surface reflectance (and temperature) on the tile grid.

* Values: ``stored * scale + offset`` from each item's :class:`BandSpec`: surface reflectance
  ``DN * 2.75e-5 - 0.2`` and surface temperature ``DN * 0.00341802 + 149.0`` K (USGS Landsat
  Collection 2 Level-2 Science Product Guides, LSDS-1618 for Landsat 4-7 and LSDS-1619 for
  Landsat 8-9; the items' ``raster:bands`` declare the same numbers and win when they differ).
  DN 0 is fill. Band keys are per sensor (``landsat:TM_B3``, ``landsat:ETM_B3`` and
  ``landsat:OLI_B4`` are all red), because band numbers mean different wavelengths on each.
* Masks: the ``QA_PIXEL`` bit flags (:data:`QA_BITS`); fill is always masked, the flags listed in
  ``options.mask`` too (default dilated cloud, cirrus, cloud, cloud shadow; ``snow``/``water``
  on request). An item without ``qa_pixel`` keeps only its fill mask and ``cloud_mask`` says so.
* Modes: ``composite`` = per-pixel median of clear observations; ``timeseries`` keeps each date
  (masked pixels NaN), optionally reduced to ``monthly``/``semimonthly`` medians.
* Default bands: every surface-reflectance band the items carry. Surface temperature bands
  (kind ``temperature``, units K) are read when ``bands:`` names them.

Options: :class:`eo_fusion.modalities.LandsatOptions`; defaults live there.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox

from eo_fusion.bands import REGISTRY
from eo_fusion.catalogs.items import NormalizedItem
from eo_fusion.config import ModalitySpec
from eo_fusion.errors import BandError
from eo_fusion.modalities import LandsatOptions
from eo_fusion.sources.common import (
    ModalityResult,
    aggregate_periods,
    band_order,
    fill_missing,
    group_same_day,
    nanmedian,
    read_item_bands,
)
from eo_fusion.sources.reader import Reader, ReadSpec

__all__ = ["QA_BITS", "QA_KEY", "load_landsat", "qa_clear"]

QA_KEY = "landsat:QA_PIXEL"

#: ``QA_PIXEL`` single-bit flags (bit numbers): USGS Landsat 8-9 Collection 2 Level-2 Science
#: Product Guide (LSDS-1619), table "Pixel Quality Assessment (QA_PIXEL) Bit Index"; the
#: Landsat 4-7 guide (LSDS-1618) uses the same bits, with bit 2 (cirrus) unused (always 0).
#: Bits 8-15 are two-bit confidence levels, not used here.
QA_BITS: dict[str, int] = {
    "fill": 0,
    "dilated_cloud": 1,
    "cirrus": 2,
    "cloud": 3,
    "cloud_shadow": 4,
    "snow": 5,
    "clear": 6,
    "water": 7,
}


def qa_clear(qa: np.ndarray, flags: Iterable[str]) -> np.ndarray:
    """True where a ``QA_PIXEL`` value (as read: float, NaN = fill) has none of ``flags`` set.

    Fill (bit 0, and NaN) is never clear, whatever ``flags`` holds.
    """
    finite = np.isfinite(qa)
    q = np.where(finite, qa, 1).astype(np.uint16)
    bits = 1 << QA_BITS["fill"]
    for f in flags:
        bits |= 1 << QA_BITS[f]
    return finite & ((q & np.uint16(bits)) == 0)


def _requested_bands(items: list[NormalizedItem], mspec: ModalitySpec) -> list[str]:
    if mspec.bands:
        bad = [b for b in mspec.bands if not b.startswith("landsat:") or b == QA_KEY]
        if bad:
            raise BandError(
                f"Landsat modality asked for bands {bad}",
                fix="use landsat:<sensor>_<band> keys, e.g. landsat:OLI_B4 (see docs/catalogs.md)",
            )
        return list(mspec.bands)
    keys = {
        k
        for it in items
        for k in it.bands
        if k.startswith("landsat:") and REGISTRY[k].kind == "reflectance"
    }
    return band_order(keys)


def _spec_for(asset: Any) -> ReadSpec:
    return ReadSpec(kind=asset.spec.kind)


def _observation(
    group: list[NormalizedItem], keys: list[str], gbox: GeoBox, opts: LandsatOptions, reader: Reader
) -> tuple[np.ndarray, np.ndarray, str]:
    """Mosaic one day's items -> (bands, clear mask, mask method)."""
    data: np.ndarray | None = None
    clear = np.zeros(gbox.shape.yx, dtype=bool)
    methods: set[str] = set()
    for it in group:
        arr = read_item_bands(it, keys, gbox, _spec_for, reader)
        ok = np.any(np.isfinite(arr), axis=0)  # bands of another sensor are absent: NaN
        if QA_KEY in it.bands:
            qa = read_item_bands(it, [QA_KEY], gbox, _spec_for, reader)[0]
            ok &= qa_clear(qa, opts.mask)
            methods.add("qa_pixel")
        else:
            methods.add("none")
        arr[:, ~ok] = np.nan
        if data is None:
            data = arr
        else:
            fill_missing(data, arr)
        clear |= ok
    assert data is not None  # a day group always holds at least one item
    return data, clear, "+".join(sorted(methods))


def load_landsat(
    items: list[NormalizedItem], gbox: GeoBox, mspec: ModalitySpec, reader: Reader
) -> ModalityResult:
    """Read Landsat C2 L2 items onto ``gbox`` as a composite or time series (see module doc)."""
    keys = _requested_bands(items, mspec)
    opts = LandsatOptions.of(mspec.options)
    obs = [(g, *_observation(g, keys, gbox, opts, reader)) for g in group_same_day(items)]
    if not obs:
        raise BandError("no Landsat items to stack", fix="widen the search or drop the modality")
    frac = [float(c.mean()) for _, _, c, _ in obs]
    kept = [o for o, f in zip(obs, frac, strict=True) if f >= opts.min_valid_fraction]
    times: list[datetime] = [min(i.datetime for i in g) for g, *_ in kept]
    attrs: dict[str, Any] = {
        "dates": [t.isoformat() for t in times],
        "valid_fraction": [f for f in frac if f >= opts.min_valid_fraction],
        "cloud_mask": [m for *_, m in kept],
        "qa_flags_masked": ["fill", *opts.mask],
        "platforms": [
            sorted({str(i.properties.get("platform", "?")) for i in g}) for g, *_ in kept
        ],
        "mode": mspec.mode,
    }
    ids = [i.id for g, *_ in obs for i in g]
    units = [REGISTRY[k].units if k in REGISTRY else "" for k in keys]
    stack = (
        np.stack([d for _, d, _, _ in kept])
        if kept
        else np.empty((0, len(keys), *gbox.shape.yx), np.float32)
    )
    if mspec.mode == "composite":
        comp = (
            nanmedian(stack, axis=0)
            if len(kept)
            else np.full((len(keys), *gbox.shape.yx), np.nan, np.float32)
        )
        attrs["composite"] = "median of clear observations"
        valid = np.all(np.isfinite(comp), axis=0)
        return ModalityResult(comp, valid, keys, units, gbox, None, ids, attrs)
    if mspec.aggregate != "none" and times:
        stack, times = aggregate_periods(stack, times, mspec.aggregate, nanmedian)
        attrs["aggregate"] = f"{mspec.aggregate} median of clear observations"
    valid = np.all(np.isfinite(stack), axis=1)
    return ModalityResult(stack.astype(np.float32), valid, keys, units, gbox, times, ids, attrs)
