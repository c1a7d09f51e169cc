"""The views of a labelled scene that the rows train and predict on (pure numpy).

* :func:`composite`: the series modality median-composited over its dates (NaN where no date
  has data), other modalities unchanged — the input of our model and the random forest;
* :func:`monthly`: the series as calendar-month means, the input of Galileo and Presto;
* :func:`restrict`: a copy in which only the training pixels keep their values and labels
  (everything else NaN / ``ignore_index``). Every row trains on such a copy, so neither the
  test blocks nor their buffer reach training — for our model that includes pretraining.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from eo_fusion.errors import BadInputError
from eo_fusion.train.data import Scene


def _nan_reduce(func, arr: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():  # all-NaN pixels stay NaN, on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        return func(arr, axis=axis).astype("float32")


def check_series(scene: Scene, series: str) -> None:
    """Raise unless ``scene`` has ``series`` as a dated time series."""
    arr = scene.arrays.get(series)
    if arr is None or arr.ndim != 4 or series not in scene.times:
        raise BadInputError(
            f"scene '{scene.name}' has no time series '{series}' "
            f"(modalities: {', '.join(scene.arrays) or 'none'})",
            fix=f"give the scene the modality '{series}' with `mode: timeseries`",
        )


def composite(scene: Scene, series: str) -> Scene:
    """``scene`` with ``series`` replaced by its per-pixel median over dates."""
    arrays = dict(scene.arrays)
    arrays[series] = _nan_reduce(np.nanmedian, scene.arrays[series], 0)
    times = {k: v for k, v in scene.times.items() if k != series}
    return Scene(scene.name, arrays, scene.keys, times, scene.labels, scene.sources)


def monthly(arr: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calendar-month means of a series ``(T, C, H, W)``: ``(M, C, H, W)`` and the months
    (0 = January) of every month from the first date's to the last date's (gaps stay NaN)."""
    stamps = pd.DatetimeIndex(times)
    index = (stamps.year * 12 + stamps.month - 1).to_numpy()
    first, last = int(index.min()), int(index.max())
    out = np.full((last - first + 1, *arr.shape[1:]), np.nan, dtype="float32")
    for m in range(first, last + 1):
        if (index == m).any():
            out[m - first] = _nan_reduce(np.nanmean, arr[index == m], 0)
    return out, np.arange(first, last + 1) % 12


def restrict(scene: Scene, keep: np.ndarray, ignore_index: int) -> Scene:
    """Copy of ``scene`` with values outside ``keep`` (``(H, W)`` bool) set to NaN and labels to
    ``ignore_index``."""
    arrays = {m: np.where(keep, a, np.nan).astype(a.dtype) for m, a in scene.arrays.items()}
    labels = None if scene.labels is None else np.where(keep, scene.labels, ignore_index)
    return Scene(scene.name, arrays, scene.keys, scene.times, labels, scene.sources)


def without(scene: Scene, modality: str | None) -> Scene:
    """``scene`` without ``modality`` (the masked-modality rows)."""
    if modality is None:
        return scene
    keep = [m for m in scene.arrays if m != modality]
    return Scene(
        scene.name,
        {m: scene.arrays[m] for m in keep},
        {m: scene.keys[m] for m in keep},
        {m: t for m, t in scene.times.items() if m in keep},
        scene.labels,
        scene.sources,
    )


def class_table(labels: list[np.ndarray], ignore_index: int) -> tuple[list[int], list[np.ndarray]]:
    """Class ids over all scenes and each pixel's index in that list (-1: ignored)."""
    ids = sorted({int(v) for lab in labels for v in np.unique(lab)} - {ignore_index})
    table = np.asarray(ids, dtype="int64")
    out = []
    for lab in labels:
        pos = np.searchsorted(table, lab).clip(max=max(len(ids) - 1, 0))
        out.append(np.where(table[pos] == lab, pos, -1) if ids else np.full(lab.shape, -1))
    return ids, out
