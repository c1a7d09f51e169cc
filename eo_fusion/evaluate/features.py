"""Per-pixel classifiers on feature maps: linear probes and the random forest.

Features are ``(D, H, W)`` maps per scene. A classifier is fitted on the labelled training pixels
(features computed on the training view of the split) and predicts the test pixels (features
computed on the full scene, as at inference).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eo_fusion.train.metrics import confusion


@dataclass
class PixelSet:
    """One scene of a split: class index per pixel (-1: ignored) and the two masks."""

    index: np.ndarray
    trainable: np.ndarray
    test: np.ndarray


class _Constant:
    """Stands in for a classifier when the training pixels hold a single class."""

    def __init__(self, label: int) -> None:
        self.label = label

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.label, dtype="int64")


def pixel_confusion(
    sets: Sequence[PixelSet],
    train_maps: Sequence[np.ndarray],
    test_maps: Sequence[np.ndarray],
    make: Callable[[], Any],
    *,
    n_classes: int,
    max_pixels: int | None,
    seed: int,
) -> np.ndarray:
    """Fit ``make()`` (scikit-learn style) on training pixels, score the test pixels.

    NaN features (no data) are replaced by the training mean of their column.
    """
    xs = [m[:, s.trainable].T for s, m in zip(sets, train_maps, strict=True)]
    x = np.concatenate(xs).astype("float64")
    y = np.concatenate([s.index[s.trainable] for s in sets])
    rng = np.random.default_rng(seed)
    if max_pixels is not None and len(y) > max_pixels:
        pick = rng.choice(len(y), size=max_pixels, replace=False)
        x, y = x[pick], y[pick]
    fill = np.nan_to_num(np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0))
    x = np.where(np.isfinite(x), x, fill)
    clf = _Constant(int(y[0])) if len(np.unique(y)) == 1 else make()
    with warnings.catch_warnings():  # short probes in quick runs stop before convergence
        warnings.simplefilter("ignore")
        if not isinstance(clf, _Constant):
            clf.fit(x, y)
        cm = np.zeros((n_classes, n_classes), dtype="int64")
        for s, m in zip(sets, test_maps, strict=True):
            xt = m[:, s.test].T.astype("float64")
            xt = np.where(np.isfinite(xt), xt, fill)
            pred = np.full(s.index.shape, -1, dtype="int64")
            pred[s.test] = clf.predict(xt)
            cm += confusion(s.index, pred, n_classes, ignore=~s.test | (s.index < 0))
    return cm


def linear_probe(c: float, max_iter: int, seed: int) -> Callable[[], Any]:
    """Factory of a standardising multinomial logistic regression (the linear probe)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return lambda: make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    )


def random_forest(n_estimators: int, min_samples_leaf: int, seed: int) -> Callable[[], Any]:
    """Factory of a per-pixel random forest (one thread: the machine is shared)."""
    from sklearn.ensemble import RandomForestClassifier

    return lambda: RandomForestClassifier(
        n_estimators=n_estimators, min_samples_leaf=min_samples_leaf, random_state=seed, n_jobs=1
    )
