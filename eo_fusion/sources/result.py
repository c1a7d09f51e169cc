"""What every modality loader returns (:class:`ModalityResult`) and NaN-safe reductions over it.

This module is the only one of ``sources/`` that ``coreg/`` imports: data flows
sources → coreg → stack, and co-registration needs the result record, not the readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox

__all__ = ["ModalityResult", "nanmean", "nanmedian"]


@dataclass
class ModalityResult:
    """One modality on one grid, before it becomes variables of the stack.

    Attributes:
        data: ``(band, y, x)`` or ``(time, band, y, x)`` float32, physical units, NaN = no data.
        valid: ``(y, x)`` or ``(time, y, x)`` bool.
        bands: registry keys along the band axis.
        units: units per band.
        gbox: the grid the arrays are on (the tile grid, or a sub-grid of it).
        times: acquisition (or period start) times along the time axis; None for composites.
        source_items: ids of the items that contributed.
        attrs: extra provenance (JSON-serialisable values).
    """

    data: np.ndarray
    valid: np.ndarray
    bands: list[str]
    units: list[str]
    gbox: GeoBox
    times: list[datetime] | None = None
    source_items: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)


def nanmedian(a: np.ndarray, axis: int) -> np.ndarray:
    """``np.nanmedian`` that returns NaN for all-NaN slices without warning.

    (No ``warnings.catch_warnings``: it is not thread-safe, and this runs in dask threads.)
    """
    a = np.asarray(a, dtype=np.float32)
    empty = np.all(np.isnan(a), axis=axis)
    if empty.any():
        a = a.copy()
        first = [slice(None)] * a.ndim
        first[axis] = 0  # type: ignore[call-overload]
        view = a[tuple(first)]
        view[empty] = 0.0
    out = np.nanmedian(a, axis=axis).astype(np.float32)
    out[empty] = np.nan
    return out


def nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """``np.nanmean`` that returns NaN for all-NaN slices without warning."""
    a = np.asarray(a, dtype=np.float32)
    count = np.sum(np.isfinite(a), axis=axis)
    total = np.nansum(a, axis=axis, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (total / count).astype(np.float32)
    out[count == 0] = np.nan
    return out
