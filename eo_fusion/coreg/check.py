"""Per-tile co-registration check: estimate each modality's shift against a reference modality,
correct it when the shift is significant and the estimate confident, and record the outcome.

The record (one dict per modality, stored as JSON in the stack's ``coreg`` attribute)::

    {"reference": "s2-l2a", "dx": 0.12, "dy": -0.05, "confidence": 14.2, "method": "optical",
     "applied": false, "reason": "below 0.25 px"}

``dx``/``dy`` are pixels of the tile grid (east/south positive, see :mod:`eo_fusion.coreg.shift`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from eo_fusion.bands import REGISTRY
from eo_fusion.coreg.shift import apply_shift, estimate_shift
from eo_fusion.errors import CoregistrationError
from eo_fusion.modalities import coreg_role
from eo_fusion.sources.result import ModalityResult, nanmean, nanmedian

__all__ = [
    "MAX_BAND_RESOLUTION_M",
    "CoregOptions",
    "coregister",
    "structure_bands",
    "structure_image",
]


@dataclass(frozen=True)
class CoregOptions:
    """When to correct.

    Attributes:
        reference: modality to align to (default: the first optical modality, by name).
        min_shift_px: shifts smaller than this are left alone (resampling costs sharpness).
        min_confidence: estimates with a lower peak-to-side-lobe ratio are not trusted. Noise
            alone gives about 4-5 on a 100-300 px tile; clear matches give 10 or more.
        max_shift_px: larger estimates are treated as failures (never applied).
    """

    reference: str | None = None
    min_shift_px: float = 0.25
    min_confidence: float = 8.0
    max_shift_px: float = 5.0


#: Bands with a native pixel coarser than this (S2 B01/B09/B10 at 60 m) carry no edge detail at
#: the matching scale and only blur the structure image: they are left out.
MAX_BAND_RESOLUTION_M = 20.0


def structure_bands(keys: list[str]) -> list[int]:
    """Indexes of the bands used for matching: not categorical, native pixel <= 20 m (or
    unknown); all bands when that leaves none."""
    keep = []
    for i, k in enumerate(keys):
        spec = REGISTRY.get(k)
        if spec is not None and (
            spec.kind in ("categorical", "osm")
            or (spec.resolution_m or 0.0) > MAX_BAND_RESOLUTION_M
        ):
            continue
        keep.append(i)
    return keep or list(range(len(keys)))


def structure_image(res: ModalityResult) -> np.ndarray:
    """One 2-D image of a modality's structure: mean over the bands of :func:`structure_bands`
    (median over time first)."""
    data = res.data if res.times is None else nanmedian(res.data, axis=0)
    return nanmean(data[structure_bands(res.bands)], axis=0)


def coregister(
    results: dict[str, ModalityResult], modes: dict[str, str], opts: CoregOptions
) -> dict[str, dict[str, Any]]:
    """Estimate (and where allowed, correct in place) each modality's shift; returns records.

    Args:
        results: modality name -> result on the tile grid (corrected arrays replace the old ones).
        modes: modality name -> ``auto`` (estimate, correct if significant and confident),
            ``check`` (estimate only) or ``off``.
        opts: thresholds.
    """
    records: dict[str, dict[str, Any]] = {}
    # Roles come from the modality registry: optical modalities are reference candidates.
    candidates = [m for m in sorted(results) if coreg_role(m) != "none"]
    ref = opts.reference or next((m for m in candidates if coreg_role(m) == "optical"), None)
    if ref is None or ref not in results:
        return {m: {"applied": False, "reason": "no optical reference modality"} for m in results}
    ref_res = results[ref]
    ref_img = structure_image(ref_res)
    records[ref] = {"reference": ref, "role": "reference", "applied": False}
    for name in sorted(results):
        if name == ref:
            continue
        mode = modes.get(name, "auto" if name in candidates else "off")
        res = results[name]
        if mode == "off" or name not in candidates:
            records[name] = {"reference": ref, "applied": False, "reason": f"mode {mode}"}
            continue
        if res.gbox != ref_res.gbox:
            records[name] = {"reference": ref, "applied": False, "reason": "different grid"}
            continue
        method = "sar" if coreg_role(name) == "sar" else "optical"
        try:
            est = estimate_shift(ref_img, structure_image(res), method=method)
        except CoregistrationError as e:
            records[name] = {"reference": ref, "applied": False, "reason": str(e)}
            continue
        rec: dict[str, Any] = {"reference": ref, **est.to_dict(), "applied": False}
        if est.magnitude > opts.max_shift_px:
            rec["reason"] = f"estimate beyond {opts.max_shift_px} px (treated as failure)"
        elif est.confidence < opts.min_confidence:
            rec["reason"] = f"confidence below {opts.min_confidence}"
        elif est.magnitude < opts.min_shift_px:
            rec["reason"] = f"below {opts.min_shift_px} px"
        elif mode == "check":
            rec["reason"] = "mode check (estimate only)"
        else:
            res.data = apply_shift(res.data, -est.dx, -est.dy)
            band_axis = 0 if res.times is None else 1
            res.valid = np.all(np.isfinite(res.data), axis=band_axis)
            rec["applied"] = True
            rec["reason"] = "significant and confident"
        records[name] = rec
    return records
