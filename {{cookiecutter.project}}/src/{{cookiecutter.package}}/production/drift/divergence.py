"""Two-sample tests for drift: is the current sample drawn from the reference's distribution?

Every test here is a permutation test. Under the null hypothesis (both samples come from one
distribution) any split of the pooled values into groups of the two sizes is as likely as the one
observed, so the p-value is the share of `permutations` random splits whose statistic is at least the
observed one, counted as `(1 + #>=) / (1 + B)`: never 0, and valid at any sample size (a reference of
a dozen golden examples, where the chi-square and Kolmogorov-Smirnov approximations are not).

The statistics all read one thing: how many of group A's values fall on each *level* (a category, a
binary outcome, or a distinct length in sorted order). A random split is drawn as the indices of the
smaller group, for all splits at once (a partial Fisher-Yates shuffle: one numpy step per drawn
index), and counting them is one `bincount`: 2000 permutations of 31 golden examples against 300
answers take ~10 ms, against 5000 answers ~0.15 s.

- `ks`: Kolmogorov-Smirnov distance between the two empirical distributions (lengths), two-sided;
  equal to scipy.stats.ks_2samp's statistic.
- `category_mix`: the total variation distance between the two mixes (half the sum of the absolute
  differences of shares), with `psi` as its effect size. Why not Pearson's chi-square as the tested
  statistic: it divides by each category's expected count, and with a reference of a few dozen
  golden labels a rare category's chance excess dominates its permutation distribution. On 23 labels
  against 300 answers of which half moved to one category, chi-square flagged 10 of 60 samples at
  p < 0.0033, the distance 58 of 60 (neither flagged any of 300 unshifted samples). `chi_square`
  still gives the conventional number for the report (equal to
  scipy.stats.chi2_contingency(correction=False)'s statistic).
- `share_increase`: current share minus reference share of a yes/no outcome, one-sided (only a rise
  is drift: more fallbacks, more refusals).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# (reference counts per level, pooled counts per level, n_ref, n_cur) -> the statistic, vectorised over
# the leading axes of the counts (one row per split).
Statistic = Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]


@dataclass(frozen=True)
class Test:
    """One test's outcome: the statistic, its permutation p-value and the effect size judged against its bar."""

    statistic: float
    p_value: float
    effect: float
    n_reference: int
    n_current: int
    more: Mapping[str, float] = field(default_factory=dict)  # other numbers worth reporting


def seed_of(*names: str) -> int:
    """A fixed seed per test: the same inputs give the same p-values, run after run."""
    return int.from_bytes(hashlib.sha256("\0".join(names).encode()).digest()[:8], "big")


_CELLS = 4_000_000  # indices held at once while drawing splits (16 MB)


def _draw(rng: np.random.Generator, n: int, m: int, rows: int) -> np.ndarray:
    """`rows` random m-subsets of range(n), one a row: a partial Fisher-Yates shuffle, one step per
    drawn position for all rows at once (m steps, not rows x m calls)."""
    pool = np.tile(np.arange(n, dtype=np.int64), (rows, 1))
    every = np.arange(rows)
    for j in range(m):
        k = rng.integers(j, n, size=rows)
        pool[every, j], pool[every, k] = pool[every, k], pool[every, j]
    return pool[:, :m]


def permutation_test(
    codes: np.ndarray, n_ref: int, levels: int, statistic: Statistic, *, permutations: int, seed: int
) -> tuple[float, float]:
    """(observed statistic, p-value) for the pooled sample `codes` (each value's level; the first
    `n_ref` are the reference). `statistic(counts_ref, totals, n_ref, n_cur)` gets the reference
    group's count per level, shape (..., levels), and the pooled count per level."""
    n = len(codes)
    n_cur = n - n_ref
    totals = np.bincount(codes, minlength=levels)
    observed = float(statistic(np.bincount(codes[:n_ref], minlength=levels)[None, :], totals, n_ref, n_cur)[0])
    rng = np.random.default_rng(seed)
    small = min(n_ref, n_cur)
    counts = np.empty((permutations, levels), dtype=np.int64)
    step = max(1, _CELLS // n)  # splits drawn at once: bounded memory for any sample size
    for start in range(0, permutations, step):
        drawn = _draw(rng, n, small, min(step, permutations - start))
        rows = np.arange(len(drawn))[:, None] * levels
        counts[start : start + len(drawn)] = np.bincount(
            (rows + codes[drawn]).ravel(), minlength=len(drawn) * levels
        ).reshape(len(drawn), levels)
    if n_ref > n_cur:  # the drawn group is the current one
        counts = totals[None, :] - counts
    null = statistic(counts, totals, n_ref, n_cur)
    # A relative tolerance: a split with the same table must count as "at least as extreme".
    extreme = int(np.count_nonzero(null >= observed - 1e-9 * max(1.0, abs(observed))))
    return observed, (1 + extreme) / (1 + permutations)


def _ks(counts: np.ndarray, totals: np.ndarray, n_ref: int, n_cur: int) -> np.ndarray:
    ref = np.cumsum(counts, axis=-1)
    cur = np.cumsum(totals) - ref
    return np.abs(ref / n_ref - cur / n_cur).max(axis=-1)


def _chi_square(counts: np.ndarray, totals: np.ndarray, n_ref: int, n_cur: int) -> np.ndarray:
    n = n_ref + n_cur
    expected_ref, expected_cur = totals * (n_ref / n), totals * (n_cur / n)
    cur = totals - counts
    return (((counts - expected_ref) ** 2) / expected_ref + ((cur - expected_cur) ** 2) / expected_cur).sum(axis=-1)


def _tvd(counts: np.ndarray, totals: np.ndarray, n_ref: int, n_cur: int) -> np.ndarray:
    return np.abs((totals - counts) / n_cur - counts / n_ref).sum(axis=-1) / 2


def _share_increase(counts: np.ndarray, totals: np.ndarray, n_ref: int, n_cur: int) -> np.ndarray:
    return (totals[1] - counts[..., 1]) / n_cur - counts[..., 1] / n_ref  # level 1 is "yes"


def ks(reference: Sequence[float], current: Sequence[float], *, permutations: int, seed: int) -> Test:
    """Kolmogorov-Smirnov distance (effect = the distance itself) and its permutation p-value."""
    _, codes = np.unique(np.asarray([*reference, *current], dtype=float), return_inverse=True)
    codes = codes.astype(np.int64).ravel()
    statistic, p = permutation_test(
        codes, len(reference), int(codes.max()) + 1, _ks, permutations=permutations, seed=seed
    )
    return Test(statistic, p, statistic, len(reference), len(current))


def category_mix(reference: Sequence[str], current: Sequence[str], *, permutations: int, seed: int) -> Test:
    """Total variation distance between the two category mixes (effect = PSI) and its permutation
    p-value."""
    index: dict[str, int] = {}
    codes = np.array([index.setdefault(v, len(index)) for v in (*reference, *current)], dtype=np.int64)
    statistic, p = permutation_test(codes, len(reference), len(index), _tvd, permutations=permutations, seed=seed)
    more = {"chi_square": chi_square(reference, current)}
    return Test(statistic, p, psi(reference, current), len(reference), len(current), more)


def chi_square(reference: Sequence[str], current: Sequence[str]) -> float:
    """Pearson's chi-square statistic of the 2 x k table of category counts (reported, not tested)."""
    index: dict[str, int] = {}
    codes = np.array([index.setdefault(v, len(index)) for v in (*reference, *current)], dtype=np.int64)
    totals = np.bincount(codes, minlength=len(index))
    counts = np.bincount(codes[: len(reference)], minlength=len(index))
    return float(_chi_square(counts[None, :], totals, len(reference), len(current))[0])


def share_increase(reference: Sequence[bool], current: Sequence[bool], *, permutations: int, seed: int) -> Test:
    """How much more often `current` says yes than `reference` (effect = that rise), one-sided."""
    codes = np.array([*reference, *current], dtype=np.int64)
    statistic, p = permutation_test(codes, len(reference), 2, _share_increase, permutations=permutations, seed=seed)
    return Test(statistic, p, statistic, len(reference), len(current))


def shares(values: Sequence[str], categories: Sequence[str], smoothing: float = 0.5) -> np.ndarray:
    """Each category's share of `values`, with `smoothing` added to every count, so a category one side
    never saw has a small share instead of zero (PSI would be infinite)."""
    seen = Counter(values)
    counts = np.array([seen[c] for c in categories], dtype=float) + smoothing
    return counts / counts.sum()


def psi(reference: Sequence[str], current: Sequence[str]) -> float:
    """Population stability index, sum of (cur - ref) x ln(cur / ref) over categories (smoothed shares).
    Rules of thumb: < 0.1 stable, 0.1-0.25 a moderate shift, > 0.25 a large one."""
    categories = sorted(set(reference) | set(current))
    ref, cur = shares(reference, categories), shares(current, categories)
    return float(((cur - ref) * np.log(cur / ref)).sum())
