"""The canary analysis as PromQL: one query per check, each answering 1 (the canary passes) or 0.

The same queries run in the cluster's controller (rendered into the rollout's analysis by the
manifests' render command) and in `<project> canary analyze --prometheus`, and are proven against a
real Prometheus by the template's tests, so the logic that decides a rollout is the logic tested.

Placeholders: `{canary}` and `{stable}` are label matchers that select each track's pods (e.g.
`track="canary"`), `{window}` is the range (e.g. `2m`); `render` fills them in. Every query gives NO
sample while either track has answered fewer than `canary.min_requests` requests in the window, so
too little traffic is never a pass: a controller reads it as inconclusive, never as success.

Checks, thresholds from params.yaml `canary.*`:
- error-rate: the canary's share of 5xx answers <= error_rate_ratio x stable's + error_rate_margin;
- latency-p95: the canary's p95 (histogram_quantile) <= latency_p95_ratio x stable's + margin;
- cost-per-answer: USD per 200 answer (`llm_cost_usd_total`) <= cost_ratio x stable's + margin;
- schema-valid: the share of the canary's answers of prompts with an output schema that match it
  (`llm_schema_checks_total`) >= min_schema_valid_rate (no such answers: passes);
- agreement: on the traffic the stable track mirrors to the canary, the share of flows whose
  decision is the same (`llm_shadow_requests_total`, comparisons of two different versions only)
  >= min_agreement; no sample below min_shadow_samples comparisons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..settings import CanarySettings

TRACKS = ("canary", "stable")


@dataclass(frozen=True)
class Check:
    name: str  # kebab-case: the analysis metric's name, e.g. "error-rate"
    query: str  # PromQL: one sample, 1 = pass, 0 = fail; none on too little traffic (see the module)


def render(query: str, canary: str, stable: str, window: str) -> str:
    """A check's query with its placeholders filled in (matchers without braces, e.g. `track="canary"`)."""
    return query.replace("{canary}", canary).replace("{stable}", stable).replace("{window}", window)


def _increase(metric: str, track: str, matchers: str = "") -> str:
    """sum(increase(metric{<track>, matchers}[<window>])): one sample with no labels, or none."""
    selector = "{" + "{" + track + "}" + (", " + matchers if matchers else "") + "}"
    return f"sum(increase({metric}{selector}[{{window}}]))"


def _zero(expression: str) -> str:
    """A count that is 0 when no series exists yet (a counter that never moved)."""
    return f"({expression} or vector(0))"


def _enough(cfg: CanarySettings) -> str:
    return " and on() ".join(f"({_increase('llm_requests_total', t)} >= {cfg.min_requests})" for t in TRACKS)


def _judged(comparison: str, cfg: CanarySettings) -> str:
    return f"({comparison}) and on() {_enough(cfg)}"


def _error_rate(track: str) -> str:
    errors = _zero(_increase("llm_requests_total", track, 'status=~"5.."'))
    return f"{errors} / {_increase('llm_requests_total', track)}"


def _p95(track: str) -> str:
    buckets = f"sum by (le) (increase(llm_request_latency_seconds_bucket{{{{{track}}}}}[{{window}}]))"
    return f"histogram_quantile(0.95, {buckets})"


def _cost_per_answer(track: str) -> str:
    # At least one answer in the denominator: no 200 at all is the error check's to judge, not NaN.
    answers = _zero(_increase("llm_requests_total", track, 'status="200"'))
    return f"{_zero(_increase('llm_cost_usd_total', track))} / clamp_min({answers}, 1)"


def _canary_within(signal: Callable[[str], str], ratio: float, margin: float) -> str:
    """1 when the canary's value <= ratio x stable's + margin, else 0."""
    return f"{signal('canary')} <= bool {ratio!r} * {signal('stable')} + {margin!r}"


def checks(canary: CanarySettings) -> tuple[Check, ...]:
    """Every check of the analysis, thresholds from `canary` (params.yaml `canary.*`)."""
    c = canary
    valid = _zero(_increase("llm_schema_checks_total", "canary", 'result="valid"'))
    schema_checks = _increase("llm_schema_checks_total", "canary")
    agree = _zero(_increase("llm_shadow_requests_total", "stable", 'outcome="agree"'))
    compared = _increase("llm_shadow_requests_total", "stable", 'outcome=~"agree|disagree"')
    found = {
        "error-rate": _canary_within(_error_rate, c.error_rate_ratio, c.error_rate_margin),
        "latency-p95": _canary_within(_p95, c.latency_p95_ratio, c.latency_p95_margin_s),
        "cost-per-answer": _canary_within(_cost_per_answer, c.cost_ratio, c.cost_margin_usd),
        # No answer of a prompt with a schema: nothing to judge, a pass (the error check sees errors).
        "schema-valid": f"({valid} / ({schema_checks} > 0) >= bool {c.min_schema_valid_rate!r}) or on() vector(1)",
        "agreement": f"{agree} / ({compared} >= {c.min_shadow_samples}) >= bool {c.min_agreement!r}",
    }
    return tuple(Check(name, _judged(comparison, c)) for name, comparison in found.items())
