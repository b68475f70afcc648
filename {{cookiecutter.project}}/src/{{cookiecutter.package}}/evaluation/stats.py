"""Interval and percentile helpers for the metrics.

The Wilson interval is the closed form (Wilson 1927), not a call into scipy: `import scipy.stats`
costs 0.3-0.5 s here, more than a whole cached evaluation of 200 examples, and every evaluation
computes intervals. The formula is three lines with the normal quantile from the standard library;
tests/test_scorers.py checks it against `scipy.stats.binomtest(...).proportion_ci(method="wilson")`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a pass rate; equal to scipy.stats.binomtest's method='wilson'."""
    if trials == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
