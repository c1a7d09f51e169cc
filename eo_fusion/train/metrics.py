"""Segmentation metrics from a confusion matrix: OA, per-class IoU and F1, mIoU, macro F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion(
    truth: np.ndarray, pred: np.ndarray, n_classes: int, *, ignore: np.ndarray | None = None
) -> np.ndarray:
    """``(n_classes, n_classes)`` counts, rows = reference, columns = prediction.

    ``truth``/``pred`` hold class indices ``0..n_classes-1``; pixels where ``ignore`` is True or
    the reference is out of range are not counted.
    """
    t, p = np.asarray(truth).ravel(), np.asarray(pred).ravel()
    keep = (t >= 0) & (t < n_classes)
    if ignore is not None:
        keep &= ~np.asarray(ignore, dtype=bool).ravel()
    idx = t[keep] * n_classes + p[keep]
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores(cm: np.ndarray, class_ids: Sequence[Any] | None = None) -> dict[str, Any]:
    """OA, mIoU and macro F1 over classes present in the reference; per-class IoU and F1.

    Classes absent from the reference are reported with ``None`` and left out of the means.
    """
    cm = np.asarray(cm, dtype="float64")
    tp = np.diag(cm)
    ref, prd = cm.sum(axis=1), cm.sum(axis=0)
    union = ref + prd - tp
    present = ref > 0
    iou = np.where(union > 0, tp / np.maximum(union, 1), 0.0)
    f1 = np.where(ref + prd > 0, 2 * tp / np.maximum(ref + prd, 1), 0.0)
    ids = list(class_ids) if class_ids is not None else list(range(len(tp)))
    total = cm.sum()
    return {
        "oa": float(tp.sum() / total) if total else None,
        "miou": float(iou[present].mean()) if present.any() else None,
        "f1_macro": float(f1[present].mean()) if present.any() else None,
        "n_pixels": int(total),
        "per_class": {
            str(c): {
                "iou": float(iou[i]) if present[i] else None,
                "f1": float(f1[i]) if present[i] else None,
                "n_ref": int(ref[i]),
            }
            for i, c in enumerate(ids)
        },
    }
