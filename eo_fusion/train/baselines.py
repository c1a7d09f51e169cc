"""Per-pixel baseline for the hold-out table: a random forest on the normalised input bands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from eo_fusion.models.config import FinetuneSpec
from eo_fusion.train.data import Scene, band_stats
from eo_fusion.train.finetune import class_indices, holdout_mask, task_input
from eo_fusion.train.metrics import confusion, scores


def random_forest_baseline(
    spec: FinetuneSpec, scenes: Sequence[Scene], *, n_estimators: int = 200
) -> dict[str, Any]:
    """Train a scikit-learn random forest per pixel on the training blocks, score the hold-out.

    Uses the same inputs, hold-out blocks and ignore index as :func:`finetune`; a time series is
    flattened to one feature per date and band. Missing values become 0 (the band mean).
    """
    from sklearn.ensemble import RandomForestClassifier

    labelled = [s for s in scenes if s.labels is not None]
    stats, _ = band_stats(labelled)
    temporal = spec.task == "crops"
    ids, indices = class_indices(labelled, spec.ignore_index)
    xs_tr, ys_tr, evals = [], [], []
    for s, lab_idx in zip(labelled, indices, strict=True):
        arr, _, _ = task_input(s, spec.inputs, stats, temporal)
        feats = (
            np.nan_to_num(arr.reshape(-1, *arr.shape[-2:]))
            .reshape(-1, arr.shape[-2] * arr.shape[-1])
            .T
        )
        idx = lab_idx.ravel()
        hold = holdout_mask(s.shape, spec.holdout_block, spec.holdout_fraction, spec.seed).ravel()
        train = ~hold & (idx >= 0)
        xs_tr.append(feats[train])
        ys_tr.append(idx[train])
        evals.append((feats, idx, hold))
    rf = RandomForestClassifier(n_estimators=n_estimators, random_state=spec.seed, n_jobs=1)
    rf.fit(np.concatenate(xs_tr), np.concatenate(ys_tr))
    cm = np.zeros((len(ids), len(ids)), dtype="int64")
    for feats, idx, hold in evals:
        pred = rf.classes_[rf.predict_proba(feats).argmax(1)]
        cm += confusion(idx, pred, len(ids), ignore=~hold | (idx < 0))
    out = scores(cm, ids)
    out["confusion"] = cm.tolist()
    return out
