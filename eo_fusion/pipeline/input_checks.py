"""What a tile's inputs really held: the facts the QA report must not leave out.

Computed on the worker from the tile's ModalityStack (see :mod:`eo_fusion.stack`), right after
the model ran on it, and returned to the client in the tile's outcome (small JSON, no arrays):

* **items skipped**: items the plan gave the tile that no reader used (``source_items``);
* **dates without clear pixels**: acquisition days of cloud-masked (optical) modalities that the
  reader dropped (clear fraction below ``min_valid_fraction``) or kept with no clear pixel;
* **partial inputs**: mapped pixels where some modality had no valid value (e.g. only the DEM
  where Sentinel-2 was all cloud), per modality and in total, counted on the tile's core;
* **nodata that disagrees with the data**: valid pixels holding a common void value (−32768,
  −32767, −9999, 65535, −3.4e38 stored) that the items do not declare as nodata, e.g. −32768
  voids in a DEM that declares −9999 — they would be read as real elevations.

With ``strict: true`` in the job any of these fails the run (see ``eo_fusion.pipeline.run``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from eo_fusion.modalities import get_modality

if TYPE_CHECKING:
    from eo_fusion.pipeline.plan import TileTask

#: Stored values data sets use for voids when nodata is not (or wrongly) declared.
VOID_VALUES = (-32768.0, -32767.0, -9999.0, 65535.0, -3.4028234663852886e38)

__all__ = ["VOID_VALUES", "InputReport", "issues", "tile_input_report"]


@dataclass(frozen=True)
class InputReport:
    """One tile's input facts; arrays on the padded tile grid until :meth:`crop`.

    Attributes:
        items_skipped: modality -> item id -> why the tile did not use it.
        dates_without_clear: modality -> days (``YYYY-MM-DD``) with no clear optical pixel used.
        missing: modality -> bool ``(y, x)``: True where the modality had no valid value.
        nodata_mismatch: one record per (modality, band, value): ``pixels`` holding the void
            value ``value`` (stored), ``declared`` nodata of the items.
        notes: facts that could not be checked (e.g. a modality on its own sub-grid).
        coreg: the stack's co-registration record, modality -> record
            (:mod:`eo_fusion.coreg.record`).
    """

    items_skipped: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    dates_without_clear: Mapping[str, list[str]] = field(default_factory=dict)
    missing: Mapping[str, np.ndarray] = field(default_factory=dict)
    nodata_mismatch: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    coreg: dict[str, Any] = field(default_factory=dict)

    def crop(self, sy: slice, sx: slice) -> InputReport:
        """The report with its masks cut to the tile's core (``Tile.core_in_padded``)."""
        return replace(self, missing={m: a[sy, sx] for m, a in self.missing.items()})

    def summary(self, mapped: np.ndarray) -> dict[str, Any]:
        """JSON form, with partial-input counts among the ``mapped`` core pixels."""
        n = int(mapped.sum())
        by_mod = {m: int((a & mapped).sum()) for m, a in sorted(self.missing.items())}
        partial = np.zeros_like(mapped)
        for a in self.missing.values():
            partial |= a
        n_partial = int((partial & mapped).sum())
        return {
            "mapped_pixels": n,
            "partial_pixels": n_partial,
            "partial_share": round(n_partial / n, 6) if n else 0.0,
            "missing_pixels": {m: v for m, v in by_mod.items() if v},
            "items_skipped": {m: dict(v) for m, v in self.items_skipped.items() if v},
            "dates_without_clear": {m: v for m, v in self.dates_without_clear.items() if v},
            "nodata_mismatch": list(self.nodata_mismatch),
            "notes": list(self.notes),
        }


def _valid_any(ds: xr.Dataset, name: str) -> np.ndarray | None:
    var = ds.get(f"{name}:valid")
    if var is None:
        return None
    v = np.asarray(var.values, dtype=bool)
    return np.asarray(v.any(axis=0)) if v.ndim == 3 else v


def _skipped(task: TileTask, ds: xr.Dataset, name: str) -> dict[str, str]:
    if name not in ds.data_vars:
        return {it.id: "its modality was not read" for it in task.items.get(name, ())}
    used = set(ds[name].attrs.get("source_items", ()))
    return {
        it.id: "the reader used none of its pixels"
        for it in task.items.get(name, ())
        if it.id not in used
    }


def _dates_without_clear(task: TileTask, ds: xr.Dataset, name: str) -> list[str]:
    if name not in ds.data_vars or not get_modality(name).cloud_cover:
        return []
    attrs = ds[name].attrs
    kept = [str(d)[:10] for d in _as_list(attrs.get("dates"))]
    fractions = _as_list(attrs.get("valid_fraction"))
    days = sorted({it.datetime.strftime("%Y-%m-%d") for it in task.items.get(name, ())})
    dropped = [d for d in days if d not in kept]
    empty = [d for d, f in zip(kept, fractions, strict=False) if float(f) <= 0.0]
    return sorted(set(dropped) | set(empty))


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, str):
        import json

        try:
            parsed = json.loads(v)
        except ValueError:
            return [v]
        return parsed if isinstance(parsed, list) else [parsed]
    return list(np.atleast_1d(v))


def _band_voids(
    values: np.ndarray, specs: list[Any], modality: str, band: str
) -> list[dict[str, Any]]:
    out = []
    finite = np.isfinite(values)
    declared = sorted({s.nodata for s in specs if s.nodata is not None})
    for stored in VOID_VALUES:
        if stored in declared:
            continue
        hits = 0
        for s in {(sp.scale, sp.offset) for sp in specs}:
            phys = np.float32(stored * s[0] + s[1])
            hits = max(hits, int((finite & (values == phys)).sum()))
        if hits:
            out.append(
                {"modality": modality, "band": band, "value": stored, "pixels": hits,
                 "declared": declared[0] if len(declared) == 1 else declared or None}
            )  # fmt: skip
    return out


def _nodata_mismatch(task: TileTask, ds: xr.Dataset, name: str) -> list[dict[str, Any]]:
    if name not in ds.data_vars:
        return []
    da = ds[name]
    bands = [str(b) for b in da[f"{name}:band"].values]
    axis = list(da.dims).index(f"{name}:band")
    data = np.asarray(da.values)
    out = []
    for i, key in enumerate(bands):
        specs = [it.bands[key].spec for it in task.items.get(name, ()) if key in it.bands]
        if specs:
            out += _band_voids(np.take(data, i, axis=axis), specs, name, key)
    return out


def tile_input_report(task: TileTask, ds: xr.Dataset) -> InputReport:
    """The input facts of one tile from its stack (built on ``task.tile.padded``)."""
    shape = tuple(task.tile.padded.shape.yx)
    missing: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for name in sorted(task.modalities):
        valid = _valid_any(ds, name)
        if valid is None:
            missing[name] = np.ones(shape, dtype=bool)  # no items, or not read at all
        elif valid.shape == shape:
            missing[name] = ~valid
        else:
            notes.append(f"{name}: on its own sub-grid; partial inputs not counted for it")
    return InputReport(
        items_skipped={m: _skipped(task, ds, m) for m in sorted(task.modalities)},
        dates_without_clear={m: _dates_without_clear(task, ds, m) for m in sorted(task.modalities)},
        missing=missing,
        nodata_mismatch=[r for m in sorted(task.modalities) for r in _nodata_mismatch(task, ds, m)],
        notes=notes,
    )


def issues(report: Mapping[str, Any]) -> list[str]:
    """One line per problem in a summarised report (``InputReport.summary``); empty = clean."""
    out = []
    for m, ids in report.get("items_skipped", {}).items():
        for i, why in ids.items():
            out.append(f"{m} item {i} skipped: {why}")
    for m, days in report.get("dates_without_clear", {}).items():
        out.append(f"{m}: no clear pixels on {', '.join(days)}")
    if report.get("partial_pixels"):
        miss = ", ".join(f"{m} {n}" for m, n in report.get("missing_pixels", {}).items())
        out.append(
            f"{report['partial_pixels']} of {report['mapped_pixels']} mapped pixels "
            f"({100 * report['partial_share']:.1f}%) from partial inputs (missing: {miss})"
        )
    for r in report.get("nodata_mismatch", []):
        out.append(
            f"{r['modality']} {r['band']}: {r['pixels']} valid pixel(s) hold the void value "
            f"{r['value']:g}, but the items declare nodata {r['declared']}"
        )
    return out
