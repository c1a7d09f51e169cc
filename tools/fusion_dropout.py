"""Measure modality dropout and late fusion: single-modality inference of two-modality models.

The sample catalog has no Sentinel-1 over its only labelled scene (Slovenia): the modalities
that co-occur there are the Sentinel-2 L1C series (median composite) and the Copernicus DEM
(elevation + slope). This script runs the repeated spatial block cross-validation of
``eo-fusion evaluate`` (same folds, seeds, buffer, inductive per-split pretraining and
Nadeau–Bengio-corrected 95 % intervals, from :mod:`eo_fusion.evaluate`) with one pretraining
per split and, on top of it, three fine-tunings of the land-cover head on S2 + DEM:

* ``early``: early fusion (one token from all bands), no modality dropout;
* ``early-dropout``: early fusion, ``modality_dropout`` (default 0.5);
* ``late-dropout``: ``fusion: late_mean`` (one encoder pass per sensor, features averaged),
  the same dropout;

each scored on the test blocks with both modalities, with the DEM removed, and with S2 removed.

Usage (about 15-25 minutes on the shared 2-core build machine)::

    PYTHONPATH=. python tools/fusion_dropout.py pipelines/evaluate_sample.yaml --profile fusion \
        --out docs/evaluation/fusion_dropout.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from eo_fusion.evaluate.config import EvaluateSpec, load_evaluate_spec
from eo_fusion.evaluate.rows import SplitContext, _score_finetuned
from eo_fusion.evaluate.run import _context, _metrics, scene_splits
from eo_fusion.evaluate.scenes import class_table, composite
from eo_fusion.evaluate.stats import interval
from eo_fusion.models.config import FinetuneSpec
from eo_fusion.train.data import Scene
from eo_fusion.train.finetune import finetune
from eo_fusion.train.pretrain import pretrain
from eo_fusion.train.sources import load_scenes

METRICS = ("oa", "miou", "f1_macro")


def variants(dropout: float) -> dict[str, dict[str, Any]]:
    """Fine-tuning variants: name -> FinetuneSpec fields."""
    return {
        "early": {"modality_dropout": 0.0, "fusion": "early"},
        "early-dropout": {"modality_dropout": dropout, "fusion": "early"},
        "late-dropout": {"modality_dropout": dropout, "fusion": "late_mean"},
    }


def _fspec(ctx: SplitContext, tag: str, fields: dict[str, Any]) -> FinetuneSpec:
    whole = max(max(s.full.shape) for s in ctx.scenes)
    base = ctx.spec.finetune_spec(ctx.work / tag, ctx.train_seed, whole)
    return FinetuneSpec.model_validate(base.model_dump() | fields)


def split_rows(ctx: SplitContext, dropout: float) -> dict[str, np.ndarray]:
    """Pretrain on the split's training pixels, fine-tune every variant, score each three ways."""
    spec = ctx.spec
    pre = [Scene(s.name, s.arrays, s.keys, s.times) for s in (x.train for x in ctx.scenes)]
    out = ctx.work / "pretrain"
    shutil.rmtree(out, ignore_errors=True)
    base = pretrain(spec.pretrain_spec(out, ctx.train_seed), pre, progress=False)
    train = [composite(s.train, spec.series) for s in ctx.scenes]
    res = {}
    for tag, fields in variants(dropout).items():
        model = finetune(_fspec(ctx, tag, fields), train, base, progress=False)
        for drop, label in ((None, "both"), ("dem", "S2 only"), (spec.series, "DEM only")):
            res[f"{tag} | {label}"] = _score_finetuned(ctx, model, drop)
    return res


def run(spec: EvaluateSpec, scenes: list[Scene], dropout: float) -> dict[str, Any]:
    labelled = [s for s in scenes if s.labels is not None]
    ids, index = class_table([np.asarray(s.labels) for s in labelled], spec.ignore_index)
    common: dict[str, Any] = {"ids": ids, "index": index, "work": Path(spec.out) / "work-fusion",
              "unlabelled": [s for s in scenes if s.labels is None], "cache": {},
              "latlon": {s.name: (0.0, 0.0) for s in labelled}}  # fmt: skip
    records: list[dict[str, Any]] = []
    for seed in spec.seeds:
        for splits in scene_splits(spec, labelled, seed):
            ctx = _context(spec, labelled, index, splits, common)
            t0 = time.perf_counter()
            rows = {r: _metrics(cm, ids) for r, cm in split_rows(ctx, dropout).items()}
            px = [s.pixels for s in ctx.scenes]
            records.append({"seed": seed, "fold": ctx.fold, "rows": rows,
                            "test_pixels": int(sum((p.test & (p.index >= 0)).sum() for p in px)),
                            "train_pixels": int(sum(p.trainable.sum() for p in px)),
                            "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
            print(seed, ctx.fold, {r: round(100 * v["oa"], 1) for r, v in rows.items()})
    shutil.rmtree(common["work"], ignore_errors=True)
    ratio = np.mean([r["test_pixels"] for r in records]) / np.mean(
        [r["train_pixels"] for r in records]
    )
    summary: dict[str, dict[str, Any]] = {}
    for row in records[0]["rows"]:
        summary[row] = {}
        for m in METRICS:
            iv = interval([r["rows"][row][m] for r in records], kind="corrected",
                          test_train_ratio=float(ratio))  # fmt: skip
            summary[row][m] = {"mean": iv.mean, "half": iv.half, "n": iv.n}
    return {"splits": records, "summary": summary, "dropout": dropout}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    spec = load_evaluate_spec(args.config, args.profile)
    t0 = time.perf_counter()
    res = run(spec, load_scenes(spec.data, progress=False), args.dropout)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["command"] = f"python tools/fusion_dropout.py {args.config} --profile {args.profile}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    for row, per in res["summary"].items():
        cells = [f"{m} {100 * v['mean']:.1f} ± {100 * v['half']:.1f}" for m, v in per.items()]
        print(f"{row:32s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
