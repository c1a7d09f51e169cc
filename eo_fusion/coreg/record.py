"""The co-registration record of a run: per-tile records (from :func:`eo_fusion.coreg.check.
coregister`) kept in the manifest, and their per-modality summary for the STAC items of the
products (property ``eo_fusion:coreg``) and the QA report.

A per-tile record of one modality::

    {"reference": "s2-l2a", "dx": 0.12, "dy": -0.05, "confidence": 14.2, "method": "optical",
     "applied": false, "reason": "below 0.25 px"}

``dx``/``dy`` are pixels of the job grid (east/south positive).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["coreg_rows", "summarize_coreg"]


def summarize_coreg(tiles: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Per-modality summary of per-tile records ``{tile_id: {modality: record}}``.

    For each modality other than the reference: ``tiles`` (with a record), ``estimated`` (a
    shift was measured), ``applied`` (the correction was made), median ``dx``/``dy`` and
    ``max_shift_px`` over the estimates, ``median_confidence``/``min_confidence``, and
    ``reasons`` (how often each reason for not applying occurred).
    """
    by_mod: dict[str, list[Mapping[str, Any]]] = {}
    for tile_recs in tiles.values():
        for mod, rec in tile_recs.items():
            if rec.get("role") != "reference":
                by_mod.setdefault(mod, []).append(rec)
    out: dict[str, Any] = {}
    for mod, recs in sorted(by_mod.items()):
        est = [r for r in recs if "dx" in r and "dy" in r]
        summary: dict[str, Any] = {
            "reference": next((r.get("reference") for r in recs if r.get("reference")), None),
            "tiles": len(recs),
            "estimated": len(est),
            "applied": sum(bool(r.get("applied")) for r in recs),
        }
        if est:
            dx = np.array([float(r["dx"]) for r in est])
            dy = np.array([float(r["dy"]) for r in est])
            conf = np.array([float(r.get("confidence", np.nan)) for r in est])
            summary |= {
                "median_dx_px": round(float(np.median(dx)), 3),
                "median_dy_px": round(float(np.median(dy)), 3),
                "max_shift_px": round(float(np.hypot(dx, dy).max()), 3),
                "median_confidence": round(float(np.nanmedian(conf)), 2),
                "min_confidence": round(float(np.nanmin(conf)), 2),
            }
        reasons: dict[str, int] = {}
        for r in recs:
            if not r.get("applied") and r.get("reason"):
                reasons[str(r["reason"])] = reasons.get(str(r["reason"]), 0) + 1
        summary["reasons"] = dict(sorted(reasons.items()))
        out[mod] = summary
    return out


def coreg_rows(tiles: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (tile, modality) with an estimate or a reason: for tables (report, notebook)."""
    rows = []
    for tid in sorted(tiles):
        for mod, rec in sorted(tiles[tid].items()):
            if rec.get("role") == "reference":
                continue
            rows.append(
                {
                    "tile": tid,
                    "modality": mod,
                    "dx": rec.get("dx"),
                    "dy": rec.get("dy"),
                    "confidence": rec.get("confidence"),
                    "applied": bool(rec.get("applied")),
                    "reason": rec.get("reason", ""),
                }
            )
    return rows
