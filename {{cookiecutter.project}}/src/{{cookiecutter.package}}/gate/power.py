"""What the paired test can see: its power, the smallest drop it detects, the examples it needs.

The test (paired.py) is the exact one-sided McNemar test on the examples that flipped, flaky ones
left out. Its power for `n` paired examples, a pass-rate drop `drop` and a discordance `discordance`
(the share of examples that flip either way, `drop <= discordance`): each example independently
flips pass->fail with probability (q + d) / 2 and fail->pass with (q - d) / 2, so the number of
discordant examples is D ~ Bin(n, q) and, given D, the pass->fail flips are Bin(D, (q + d) / 2q).
The power is the sum over D of P(D) times the binomial tail beyond the test's critical value at
D, which is the same exact integer tail `paired.mcnemar_p` computes.

Which discordance a drop comes with: a change flips `churn` of the examples at random, half each
way (the noise any change brings; with a deterministic model and nothing changed, none), and a
real drop d flips d more to failing, so q = churn + d. The churn is measured where it can be: in a
gate report, twice the share of examples that flipped fail->pass in this comparison (under no real
change the flips are symmetric, so those estimate one direction); in `gate plan`, which has one
side only, the share of flaky examples (repeats that disagree) stands for it.

Repeats do not add power here: the test counts an example once, and an example whose repeats
disagree is left out. They help only by moving noisy examples out of the test (lower churn); the
golden set needed is the paired examples needed divided by the share that is not flaky.

Pure arithmetic, no scipy (the gate avoids importing it, see `paired.mcnemar_p`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ..evaluation.catalogue import Metric
from ..evaluation.results import Result
from .paired import Paired, example_rates

TARGET = 0.8  # the power a "detectable" drop is detected with
MAX_EXAMPLES = 20_000  # sizing stops here: beyond it the answer is "more than this"


@dataclass(frozen=True)
class Power:
    """The paired test's reach for one golden set; `detectable_drop` None: no drop reaches TARGET."""

    answered: int  # golden examples answered (on both sides, in a comparison)
    examples: int  # of those, the paired examples the test sees: not flaky
    pass_rate: float
    churn: float  # share of examples flipping at random, half each way (see the module docstring)
    churn_source: str  # where the churn came from, in words
    flaky_share: float  # of the examples answered: left out of the test
    alpha: float
    detectable_drop: float | None  # the smallest drop detected with TARGET power
    detect: float  # gate.detect: the drop the golden set should detect
    examples_needed: int | None  # golden examples (flaky share included) to detect `detect`; None: > MAX_EXAMPLES


EXACT_UP_TO = 400  # discordant examples: below, the critical value in exact integers; above, floats


@lru_cache(maxsize=65536)
def critical(discordant: int, alpha: float) -> int | None:
    """The fewest pass->fail flips among `discordant` that the test calls significant (None: none)."""
    if discordant > EXACT_UP_TO:  # the integers grow with D; a float tail decides the same but at a tie
        start, probs = binomial_window(discordant, 0.5)
        tail = 0.0
        for offset in range(len(probs) - 1, -1, -1):
            tail += probs[offset]
            if tail > alpha:
                return start + offset + 1
        return start
    # Walk the tail of Bin(D, 1/2) down from D in exact integers: the same numbers as mcnemar_p.
    tail, term, found = 0, 1, None
    for k in range(discordant, -1, -1):
        tail += term
        if tail / 2**discordant > alpha:
            return found
        found = k
        term = term * k // (discordant - k + 1)  # C(D, k-1) from C(D, k)
    return found


def binomial_window(n: int, p: float) -> tuple[int, list[float]]:
    """(start, probabilities): P(X = start + i) for X ~ Bin(n, p) wherever it is above 1e-18 of the
    mode's. Built outward from the mode by the ratio of neighbours: O(sqrt(n)) terms, no overflow."""
    if p <= 0.0 or p >= 1.0:
        return (n if p >= 1.0 else 0), [1.0]
    mode = min(n, int((n + 1) * p))
    log_mode = math.lgamma(n + 1) - math.lgamma(mode + 1) - math.lgamma(n - mode + 1)
    peak = math.exp(log_mode + mode * math.log(p) + (n - mode) * math.log1p(-p))
    odds = p / (1.0 - p)
    below, value, k = [], peak, mode
    while k > 0 and value > peak * 1e-18:
        value *= k / ((n - k + 1) * odds)  # P(k-1) from P(k)
        k -= 1
        below.append(value)
    above, value, k = [], peak, mode
    while k < n and value > peak * 1e-18:
        value *= (n - k) / (k + 1) * odds  # P(k+1) from P(k)
        k += 1
        above.append(value)
    return mode - len(below), [*reversed(below), peak, *above]


def power(examples: int, drop: float, discordance: float, alpha: float) -> float:
    """P(the exact one-sided McNemar test at `alpha` rejects) for this drop and discordance."""
    if not 0.0 <= drop <= discordance <= 1.0:
        raise ValueError(f"need 0 <= drop <= discordance <= 1, got drop={drop} discordance={discordance}")
    if examples <= 0 or discordance == 0.0:
        return 0.0
    to_fail = (discordance + drop) / (2 * discordance)  # a discordant example's chance of being pass->fail
    first, weights = binomial_window(examples, discordance)
    total = 0.0
    for discordant, weight in enumerate(weights, first):
        k = critical(discordant, alpha)
        if k is None:
            continue
        start, probs = binomial_window(discordant, to_fail)
        total += weight * sum(probs[max(k - start, 0) :])
    return min(total, 1.0)


def power_at(examples: int, drop: float, churn: float, alpha: float) -> float:
    """Power for a real drop on top of random churn (q = churn + drop)."""
    return power(examples, drop, min(churn + drop, 1.0), alpha)


def detectable_drop(examples: int, churn: float, alpha: float) -> float | None:
    """The smallest drop detected with TARGET power (to 0.001), None when even the largest is not."""
    high = 1.0 - churn
    if power_at(examples, high, churn, alpha) < TARGET:
        return None
    low = 0.0
    while high - low > 0.001:  # power grows with the drop: more discordant examples, more of them one way
        middle = (low + high) / 2
        low, high = (low, middle) if power_at(examples, middle, churn, alpha) >= TARGET else (middle, high)
    return high


def paired_needed(drop: float, churn: float, alpha: float) -> int | None:
    """About the fewest paired examples that detect `drop` with TARGET power (None: > MAX_EXAMPLES).

    Power is not monotone in n (the critical value moves in whole flips: a saw-tooth of a few
    points), so this is the smallest n of a doubling-then-bisecting search, not a guaranteed floor."""
    if drop <= 0.0 or churn + drop > 1.0:
        return None
    high = 8
    while power_at(high, drop, churn, alpha) < TARGET:
        if high >= MAX_EXAMPLES:
            return None
        high = min(high * 2, MAX_EXAMPLES)
    low = 0  # power at 0 examples is 0
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if power_at(middle, drop, churn, alpha) >= TARGET else (middle, high)
    return high


def plan(
    answered: int, flaky: int, pass_rate: float, churn: float, churn_source: str, alpha: float, detect: float
) -> Power:
    """The whole figure for a golden set of `answered` examples, `flaky` of them left out of the test."""
    churn = min(max(churn, 0.0), 1.0)
    examples, flaky_share = answered - flaky, flaky / answered if answered else 0.0
    needed = paired_needed(detect, churn, alpha)
    return Power(
        answered=answered,
        examples=examples,
        pass_rate=pass_rate,
        churn=churn,
        churn_source=churn_source,
        flaky_share=flaky_share,
        alpha=alpha,
        detectable_drop=detectable_drop(examples, churn, alpha),
        detect=detect,
        examples_needed=math.ceil(needed / (1.0 - flaky_share)) if needed is not None and flaky_share < 1.0 else None,
    )


def of_comparison(compared: Paired, pass_rate: float, alpha: float, detect: float) -> Power:
    """The figure for a gate's comparison: churn from its fail->pass flips (see the module docstring)."""
    examples = compared.examples - len(compared.flaky)
    churn = 2 * len(compared.fail_to_pass) / examples if examples else 0.0
    source = f"this comparison: {len(compared.fail_to_pass)} fail→pass flip(s), mirrored"
    return plan(compared.examples, len(compared.flaky), pass_rate, churn, source, alpha, detect)


def of_results(
    results: Sequence[Result], metric: Metric, alpha: float, detect: float, churn: float | None = None
) -> Power:
    """The figure for one side's results alone: the flaky share stands for the churn unless one is given."""
    rates = example_rates(results, metric)
    flaky = sum(0 < rate < 1 for rate in rates.values())
    share = flaky / len(rates) if rates else 0.0
    pass_rate = sum(rates.values()) / len(rates) if rates else 0.0
    if churn is None:
        churn, source = share, f"assumed: the flaky share ({flaky} of {len(rates)} examples' repeats disagree)"
    else:
        source = "assumed: --churn"
    return plan(len(rates), flaky, pass_rate, churn, source, alpha, detect)
