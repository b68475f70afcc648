"""Paired statistics for the gate: the same examples on the base and the head, compared one by one.

Why paired: both sides answer the same golden set, so the question is not "are two pass rates
different" but "did this change turn passing examples into failing ones more often than the
reverse". Only the *discordant* examples carry that information, and the exact McNemar test asks
whether pass->fail flips outnumber fail->pass flips more than a fair coin would.

Units. Results are matched by example id; an example's repeats give it a pass rate per side. An
example that passes every answered repeat is `pass`, one that fails every repeat is `fail`, anything
in between is *flaky*. Flaky examples (on either side) and examples without an answer (errors: they
count in `error_rate`, not here) are left out of the test, so they cannot fail the gate alone. One
example is one unit, whatever the number of repeats: counting repeats as independent pairs would
multiply the evidence of a single changed answer.

Decision, for a rate metric with a tolerance (`decide`):
- a drop within `gate.tolerance` passes (the tolerance says what size of change matters at all);
- a drop beyond it fails when the flips are significant (one-sided p <= `gate.alpha`), or when the
  net share of examples that flipped to failing reaches `gate.max_drop`, significant or not: with
  a few dozen examples McNemar needs 5+ net flips to reach p < 0.05, and a real 10-point regression
  must not pass because the golden set is small;
- otherwise it passes with a warning in the report (beyond tolerance, yet indistinguishable from
  noise: add examples or repeats to know).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..evaluation.catalogue import Metric
from ..evaluation.results import Result


def paired_metrics(names: Iterable[str], catalogue: Mapping[str, Metric]) -> list[Metric]:
    """The metrics among `names` that a per-call verdict exists for (the catalogue says how)."""
    found = [catalogue[n] for n in dict.fromkeys(names) if n in catalogue]
    return [m for m in found if m.verdict is not None]


def outcome(result: Result, metric: Metric) -> bool | None:
    """This call's verdict for `metric`; None when the call errored or the metric does not apply."""
    if result.passed is None or metric.verdict is None:
        return None
    kind, name = metric.verdict
    if kind == "passed":
        return bool(result.passed)
    if kind == "tag":
        return bool(result.passed) if name in result.tags else None
    return result.verdict(name)


def example_rates(results: Iterable[Result], metric: Metric) -> dict[str, float]:
    """Each example's pass rate for `metric` over its answered repeats (examples with none left out)."""
    verdicts: dict[str, list[bool]] = defaultdict(list)
    for result in results:
        verdict = outcome(result, metric)
        if verdict is not None:
            verdicts[result.id].append(verdict)
    return {example: sum(v) / len(v) for example, v in verdicts.items()}


def mcnemar_p(pass_to_fail: int, fail_to_pass: int) -> float:
    """Exact one-sided McNemar p-value: P(>= pass_to_fail of the discordant pairs | no change).

    The binomial tail in exact integers, not scipy.stats.binomtest: importing scipy costs the gate
    0.3-1.2 s for two lines of arithmetic. tests/test_gate.py checks it against binomtest."""
    discordant = pass_to_fail + fail_to_pass
    if discordant == 0:
        return 1.0
    return sum(math.comb(discordant, k) for k in range(pass_to_fail, discordant + 1)) / 2**discordant


@dataclass
class Paired:
    metric: str
    examples: int  # answered on both sides, flaky ones included
    pass_to_fail: list[str] = field(default_factory=list)
    fail_to_pass: list[str] = field(default_factory=list)
    flaky: dict[str, tuple[float, float]] = field(default_factory=dict)  # id -> (base rate, head rate)
    p_value: float = 1.0

    @property
    def net_drop(self) -> float:
        """Share of paired examples that flipped to failing, net of those that flipped back."""
        return (len(self.pass_to_fail) - len(self.fail_to_pass)) / self.examples if self.examples else 0.0


def compare(base: Sequence[Result], head: Sequence[Result], metric: Metric) -> Paired:
    """Pair base and head per example for `metric`: flips, flaky examples, exact McNemar p-value."""
    old, new = example_rates(base, metric), example_rates(head, metric)
    shared = sorted(old.keys() & new.keys())
    paired = Paired(metric.name, len(shared))
    for example in shared:
        before, after = old[example], new[example]
        if 0 < before < 1 or 0 < after < 1:
            paired.flaky[example] = (before, after)
        elif before == 1 and after == 0:
            paired.pass_to_fail.append(example)
        elif before == 0 and after == 1:
            paired.fail_to_pass.append(example)
    paired.p_value = mcnemar_p(len(paired.pass_to_fail), len(paired.fail_to_pass))
    return paired


def decide(worse_by: float, tolerance: float, paired: Paired | None, alpha: float, max_drop: float) -> tuple[str, str]:
    """(status, why) for a rate that moved `worse_by` against the base; see the module docstring."""
    if worse_by <= tolerance:
        return "ok", f"within tolerance {tolerance:g}"
    beyond = f"down {worse_by:.4g} (tolerance {tolerance:g})"
    if paired is None:
        return "regression", f"{beyond}; no paired results on the base, tolerance alone decides"
    flips = f"{len(paired.pass_to_fail)} pass→fail vs {len(paired.fail_to_pass)} fail→pass"
    if paired.p_value <= alpha:
        return "regression", f"{beyond}; {flips}, p={paired.p_value:.3g} ≤ α={alpha:g}"
    if paired.net_drop >= max_drop:
        return "regression", (
            f"{beyond}; {flips}, p={paired.p_value:.3g} not significant but net flips "
            f"{paired.net_drop:.1%} ≥ max_drop {max_drop:g}"
        )
    why = "only flaky examples moved" if not (paired.pass_to_fail or paired.fail_to_pass) else flips
    return "warn", f"{beyond} but not significant ({why}, p={paired.p_value:.3g} > α={alpha:g}): passes"
