"""Results -> the flat metrics DVC diffs: rates with 95% intervals, errors, latency, tokens, cost.

Flat keys of plain numbers only (`dvc metrics diff` flattens nested keys with dots, and the gate
reads them back by name); what each one means is in the catalogue written beside them
(`catalogue.py`). A pass rate is over *answered* calls: errors are counted apart, in `error_rate`,
so a flaky endpoint does not look like a worse prompt.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from . import catalogue
from .results import Result
from .stats import percentile, wilson_interval


def per_example(results: Sequence[Result]) -> dict[str, dict[str, Any]]:
    """Each example's pass rate over its repeats, and whether the repeats disagreed (flaky)."""
    grouped: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        grouped[result.id].append(result)
    summary = {}
    for example_id, runs in grouped.items():
        answered = [r for r in runs if r.passed is not None]
        passes = sum(bool(r.passed) for r in answered)
        summary[example_id] = {
            "runs": len(runs),
            "answered": len(answered),
            "pass_rate": passes / len(answered) if answered else None,
            "flaky": 0 < passes < len(answered),
        }
    return summary


def _rate(name: str, passes: int, total: int) -> dict[str, float]:
    low, high = wilson_interval(passes, total)
    return {name: passes / total if total else 0.0, f"{name}_ci_low": low, f"{name}_ci_high": high}


def compute(
    results: Sequence[Result], prices: Mapping[str, float], judge_prices: Mapping[str, float] | None = None
) -> dict[str, float | int]:
    answered = [r for r in results if r.passed is not None]
    errors = len(results) - len(answered)
    metrics: dict[str, float | int] = {
        "examples": len({r.id for r in results}),
        "calls": len(results),
    }
    metrics.update(_rate("pass_rate", sum(bool(r.passed) for r in answered), len(answered)))
    metrics["error_rate"] = errors / len(results) if results else 0.0
    examples = per_example(results)
    metrics["flaky_examples"] = sum(e["flaky"] for e in examples.values())
    by_scorer: dict[str, list[bool]] = defaultdict(list)
    for result in answered:
        for name, score in result.scores.items():
            by_scorer[name].append(bool(score["passed"]))
    for name in sorted(by_scorer):
        verdicts = by_scorer[name]
        metrics.update(_rate(f"{name}_rate", sum(verdicts), len(verdicts)))
    latencies = [r.latency_ms for r in answered if r.latency_ms is not None]
    metrics["latency_p50_ms"] = round(percentile(latencies, 50), 3)
    metrics["latency_p95_ms"] = round(percentile(latencies, 95), 3)
    tokens_in = sum(r.tokens_in for r in answered)
    tokens_out = sum(r.tokens_out for r in answered)
    metrics["tokens_in"] = tokens_in
    metrics["tokens_out"] = tokens_out
    metrics["cost_usd"] = round(
        tokens_in * prices.get("input", 0.0) / 1e6 + tokens_out * prices.get("output", 0.0) / 1e6, 6
    )
    metrics.update(judge_metrics(results, judge_prices or {}))
    by_tag: dict[str, list[bool]] = defaultdict(list)
    for result in answered:
        for tag in result.tags:
            by_tag[tag].append(bool(result.passed))
    for tag in sorted(by_tag):
        metrics[f"tag_{tag}_pass_rate"] = sum(by_tag[tag]) / len(by_tag[tag])
    return metrics


def judge_metrics(results: Sequence[Result], prices: Mapping[str, float]) -> dict[str, float | int]:
    """The LLM judge's own costs and failures, apart from the app's (none when nothing was judged;
    its verdicts are the scorer `judge`, so `judge_rate`)."""
    judged = [r.judge for r in results if r.judge is not None]
    if not judged:
        return {}
    tokens_in = sum(int(j.get("tokens_in", 0)) for j in judged)
    tokens_out = sum(int(j.get("tokens_out", 0)) for j in judged)
    return {
        "judge_error_rate": sum(j.get("error") is not None for j in judged) / len(judged),
        "judge_tokens": tokens_in + tokens_out,
        "judge_cost_usd": round(
            tokens_in * prices.get("input", 0.0) / 1e6 + tokens_out * prices.get("output", 0.0) / 1e6, 6
        ),
    }


def catalogue_of(metrics: Mapping[str, Any], results: Sequence[Result]) -> dict[str, catalogue.Metric]:
    """The catalogue entry of every metric `compute` returned for `results`."""
    from ..judge.rubric import CHECKS as JUDGE_CHECKS
    from .scorers import CHECKS

    used = {name for r in results for name in r.scores}
    tags = {tag for r in results for tag in r.tags}
    checks = {**CHECKS, "judge": JUDGE_CHECKS}
    return catalogue.build(metrics, {s: checks.get(s, s) for s in sorted(used)}, tags)


def is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Miss:
    """An absolute threshold (params.yaml `thresholds`) that a metric misses."""

    name: str
    value: Any  # None when the metric is missing
    bar: float
    bound: str  # "min" | "max"

    def __str__(self) -> str:
        return f"{self.name} = {self.value} {'<' if self.bound == 'min' else '>'} {self.bar} ({self.bound})"


def missed_thresholds(
    metrics: Mapping[str, Any], minimum: Mapping[str, float], maximum: Mapping[str, float]
) -> list[Miss]:
    """The absolute thresholds the metrics miss: the evaluate stage, register and the gate all ask
    this one function. A missing or non-numeric metric misses."""
    missed = []
    for bound, bars in (("min", minimum), ("max", maximum)):
        for name, bar in bars.items():
            value = metrics.get(name)
            if not is_number(value) or (value < bar if bound == "min" else value > bar):
                missed.append(Miss(name, value, bar, bound))
    return missed
