"""Means and 95 % intervals of scores over the folds × seeds of repeated cross-validation.

Two intervals, both Student-t with ``n - 1`` degrees of freedom over the ``n = folds × seeds``
scores:

* ``naive``: ``t · s / √n``, as if the ``n`` scores were independent. They are not (training
  sets of different folds overlap), so this interval is too narrow.
* ``corrected`` (default): the variance correction of Nadeau & Bengio (2003, *Machine Learning*
  52:239–281) for repeated random train/test splits, ``t · s · √(1/n + n_test/n_train)``, with
  the mean numbers of test and training pixels. It is wider and is what claims should use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import t as student_t

Kind = Literal["corrected", "naive"]


@dataclass(frozen=True)
class Interval:
    """``mean ± half`` (95 %) of ``n`` scores."""

    mean: float
    half: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high


def interval(
    values: Sequence[float], *, kind: Kind = "corrected", test_train_ratio: float = 0.0
) -> Interval:
    """95 % t-interval of the mean of ``values`` (see the module docstring).

    ``test_train_ratio``: mean test pixels / mean training pixels (only for ``corrected``).
    One value gives an infinite half-width: nothing can be claimed from one split.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype="float64")
    n = int(v.size)
    if n == 0:
        return Interval(math.nan, math.nan, 0)
    if n == 1:
        return Interval(float(v[0]), math.inf, 1)
    factor = 1.0 / n + (test_train_ratio if kind == "corrected" else 0.0)
    half = float(student_t.ppf(0.975, n - 1) * v.std(ddof=1) * math.sqrt(factor))
    return Interval(float(v.mean()), half, n)
