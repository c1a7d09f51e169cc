"""The evaluation loop: seeds × folds × row groups, then the summary (pure apart from
:func:`run_evaluation`'s scratch folder; files are written by :mod:`eo_fusion.evaluate.report`)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eo_fusion.evaluate import features as fx
from eo_fusion.evaluate.config import EvaluateSpec
from eo_fusion.evaluate.folds import Split, make_splits
from eo_fusion.evaluate.published import group_galileo, group_presto
from eo_fusion.evaluate.rows import (
    CM,
    SceneSplit,
    SplitContext,
    group_forest,
    group_ours,
    group_random,
)
from eo_fusion.evaluate.scenes import check_series, class_table, restrict
from eo_fusion.evaluate.stats import interval
from eo_fusion.train.data import Scene
from eo_fusion.train.metrics import scores

log = logging.getLogger(__name__)

METRICS = ("oa", "miou", "f1_macro")

#: group -> (rows it produces, function). Groups run in this order in every split.
GROUPS: dict[str, tuple[tuple[str, ...], Callable[[SplitContext], dict[str, CM]]]] = {
    "forest": (("forest", "probe-bands"), group_forest),
    "presto": (("presto", "probe-presto"), group_presto),
    "galileo": (("galileo", "galileo-masked", "probe-galileo"), group_galileo),
    "random": (("ours-random", "probe-ours-random"), group_random),
    "ours": (("ours-pretrained", "ours-pretrained-masked", "probe-ours-pretrained"), group_ours),
}


def scene_splits(spec: EvaluateSpec, labelled: Sequence[Scene], seed: int) -> list[list[Split]]:
    """Per fold, the split of every labelled scene (blocks drawn per scene and seed)."""
    per_scene = [
        make_splits(
            s.shape, block=spec.block, buffer=spec.buffer, folds=spec.folds, seed=seed, name=s.name
        )
        for s in labelled
    ]
    return [list(f) for f in zip(*per_scene, strict=True)]


def _context(
    spec: EvaluateSpec,
    labelled: Sequence[Scene],
    index: Sequence[np.ndarray],
    splits: Sequence[Split],
    common: dict[str, Any],
) -> SplitContext:
    scenes = []
    for s, idx, sp in zip(labelled, index, splits, strict=True):
        px = fx.PixelSet(idx, sp.train & (idx >= 0), sp.test)
        train = restrict(s, sp.train, spec.ignore_index)
        scenes.append(SceneSplit(s, train, px, common["latlon"][s.name]))
    first = splits[0]
    return SplitContext(
        spec,
        first.seed,
        first.fold,
        scenes,
        common["ids"],
        common["work"],
        common["unlabelled"],
        common["cache"],
    )


def _split_record(ctx: SplitContext, splits: Sequence[Split]) -> dict[str, Any]:
    px = [s.pixels for s in ctx.scenes]
    return {
        "seed": ctx.seed,
        "fold": ctx.fold,
        "test_pixels": int(sum((p.test & (p.index >= 0)).sum() for p in px)),
        "train_pixels": int(sum(p.trainable.sum() for p in px)),
        "buffer_pixels": int(sum(s.buffer.sum() for s in splits)),
        "rows": {},
        "seconds": {},
    }


def run_splits(
    spec: EvaluateSpec,
    labelled: Sequence[Scene],
    common: dict[str, Any],
    on_split: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every group of rows on every split; one record per split."""
    torch.set_num_threads(spec.threads)
    records = []
    for seed in spec.seeds:
        for splits in scene_splits(spec, labelled, seed):
            ctx = _context(spec, labelled, common["index"], splits, common)
            rec = _split_record(ctx, splits)
            for name, (rows, fn) in GROUPS.items():
                if not ctx.wants(*rows):
                    continue
                t0 = time.perf_counter()
                for row, cm in fn(ctx).items():
                    if row in spec.rows:
                        rec["rows"][row] = {**_metrics(cm, ctx.class_ids), "confusion": cm.tolist()}
                rec["seconds"][name] = round(time.perf_counter() - t0, 2)
            records.append(rec)
            if on_split is not None:
                on_split(rec)
    return records


def _metrics(cm: np.ndarray, ids: Sequence[int]) -> dict[str, Any]:
    s = scores(cm, ids)
    return {k: s[k] for k in METRICS} | {
        "per_class_iou": {c: v["iou"] for c, v in s["per_class"].items()}
    }


def summarise(spec: EvaluateSpec, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per row and metric: the scores, their mean and both 95 % intervals; the pairs of rows
    whose (chosen) intervals do not overlap."""
    ratio = float(np.mean([r["test_pixels"] for r in records])) / max(
        1.0, float(np.mean([r["train_pixels"] for r in records]))
    )
    rows: dict[str, Any] = {}
    for row in spec.rows:
        per: dict[str, Any] = {}
        for m in METRICS:
            vals = [r["rows"][row][m] for r in records if row in r["rows"]]
            chosen = interval(vals, kind=spec.interval, test_train_ratio=ratio)
            naive = interval(vals, kind="naive")
            per[m] = {
                "values": vals,
                "mean": chosen.mean,
                "half": chosen.half,
                "naive_half": naive.half,
                "n": chosen.n,
            }
        rows[row] = per
    return {"test_train_ratio": ratio, "rows": rows, "differences": differences(rows)}


def differences(rows: dict[str, Any]) -> list[dict[str, Any]]:
    """Pairs of rows and a metric where the intervals do not overlap (higher row first)."""
    out = []
    names = list(rows)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for m in METRICS:
                x, y = rows[a][m], rows[b][m]
                lo_x, hi_x = x["mean"] - x["half"], x["mean"] + x["half"]
                lo_y, hi_y = y["mean"] - y["half"], y["mean"] + y["half"]
                if hi_x < lo_y or hi_y < lo_x:
                    hi, lo = (a, b) if x["mean"] > y["mean"] else (b, a)
                    out.append({"metric": m, "higher": hi, "lower": lo})
    return out


def run_evaluation(
    spec: EvaluateSpec,
    scenes: Sequence[Scene],
    latlon: dict[str, tuple[float, float]],
    *,
    on_split: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Cross-validate every row of ``spec`` on the labelled ``scenes``; returns the results
    (``splits``, ``summary``, ``data``) as plain JSON-able data."""
    labelled = [s for s in scenes if s.labels is not None]
    unlabelled = [s for s in scenes if s.labels is None]
    for s in labelled:
        check_series(s, spec.series)
    ids, index = class_table([np.asarray(s.labels) for s in labelled], spec.ignore_index)
    work = Path(spec.out) / "work"
    common = {"ids": ids, "index": index, "work": work, "unlabelled": unlabelled, "cache": {},
              "latlon": latlon}  # fmt: skip
    t0 = time.perf_counter()
    try:
        records = run_splits(spec, labelled, common, on_split)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data = {
        "scenes": [
            {
                "name": s.name,
                "shape": list(s.shape),
                "modalities": s.keys,
                "labelled_pixels": int((idx >= 0).sum()),
                "sources": s.sources,
            }
            for s, idx in zip(labelled, index, strict=True)
        ],
        "pretraining_only_scenes": [s.name for s in unlabelled],
        "classes": [
            {
                "id": c,
                "name": spec.class_names.get(c, f"class {c}"),
                "pixels": int(sum((idx == i).sum() for idx in index)),
            }
            for i, c in enumerate(ids)
        ],
    }
    return {
        "splits": records,
        "summary": summarise(spec, records),
        "data": data,
        "seconds": round(time.perf_counter() - t0, 1),
    }
