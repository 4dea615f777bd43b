"""The statistics a campaign reports: rates with intervals, and percentiles of phase times.

A rate from a few hundred iterations is only worth its interval: Wilson's score interval
(good near 0 and 1, where the Wald interval collapses) from scipy's ``binomtest``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import binomtest

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n`` with its Wilson interval at ``CONFIDENCE``."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else math.nan

    def text(self) -> str:
        if not self.n:
            return "-"
        return (f"{100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] "
                f"({self.k}/{self.n})")


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> Rate:
    """The rate ``k``/``n`` with its Wilson score interval (NaN bounds when ``n`` is 0)."""
    if not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Rate(0, 0, math.nan, math.nan)
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Rate(k, n, float(ci.low), float(ci.high))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between order statistics; NaN if empty."""
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)
