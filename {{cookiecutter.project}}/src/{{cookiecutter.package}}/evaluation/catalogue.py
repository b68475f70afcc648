"""The metric catalogue: what each metric in eval/metrics.json means, written beside it.

`eval/metrics.json` stays flat numbers (what `dvc metrics diff` compares); `eval/catalogue.json`
says, for each of them, which way is better, what it summarises and how one call votes on it. The
gate and `register` read the catalogue instead of decoding meaning from a metric's name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

HIGHER, LOWER, NEITHER = "higher", "lower", "neither"


@dataclass(frozen=True)
class Metric:
    name: str
    better: str  # HIGHER | LOWER | NEITHER (a count or a bound that is not judged on its own)
    summarises: str
    # How one evaluated call votes on this metric, for the paired comparison of base and head:
    # ("passed", "") its overall verdict, ("tag", t) its verdict if tagged t, ("scorer", s) one scorer's.
    verdict: tuple[str, str] | None = None
    interval_of: str | None = None  # for a confidence bound: the rate it bounds

    @property
    def judged(self) -> bool:
        """Whether a move of this metric can be a regression (a bound moves with its rate)."""
        return self.better != NEITHER and self.interval_of is None


FIXED: tuple[Metric, ...] = (
    Metric("examples", NEITHER, "golden examples evaluated"),
    Metric("calls", NEITHER, "calls made: examples x repeats"),
    Metric("pass_rate", HIGHER, "share of answered calls that pass every check of their example", ("passed", "")),
    Metric("pass_rate_ci_low", NEITHER, "lower bound of the 95% Wilson interval of pass_rate", interval_of="pass_rate"),
    Metric(
        "pass_rate_ci_high", NEITHER, "upper bound of the 95% Wilson interval of pass_rate", interval_of="pass_rate"
    ),
    Metric("error_rate", LOWER, "share of calls with no usable answer (transport, HTTP, unparsable body)"),
    Metric("flaky_examples", LOWER, "examples whose repeats disagree"),
    Metric("latency_p50_ms", LOWER, "median model time per answered call (a flow: all its calls)"),
    Metric("latency_p95_ms", LOWER, "95th percentile of model time per answered call"),
    Metric("tokens_in", LOWER, "prompt tokens over all answered calls"),
    Metric("tokens_out", LOWER, "completion tokens over all answered calls"),
    Metric("cost_usd", LOWER, "tokens priced at model.*_usd_per_1m_tokens"),
    # Only when an LLM judge is configured (params.yaml `judge`); its verdicts are `judge_rate`.
    Metric("judge_error_rate", LOWER, "share of judged answers with no usable verdict (transport, refusal, bad JSON)"),
    Metric("judge_tokens", LOWER, "the judge's prompt and completion tokens (not in tokens_in/tokens_out)"),
    Metric("judge_cost_usd", LOWER, "the judge's tokens priced at judge.*_usd_per_1m_tokens (not in cost_usd)"),
)
FIXED_NAMES = frozenset(m.name for m in FIXED)


def scorer_metrics(scorer: str, what: str) -> tuple[Metric, ...]:
    """`<scorer>_rate` and its interval bounds."""
    name = f"{scorer}_rate"
    return (
        Metric(name, HIGHER, f"share of answered calls checked by {scorer} that pass: {what}", ("scorer", scorer)),
        Metric(f"{name}_ci_low", NEITHER, f"lower bound of the 95% Wilson interval of {name}", interval_of=name),
        Metric(f"{name}_ci_high", NEITHER, f"upper bound of the 95% Wilson interval of {name}", interval_of=name),
    )


def tag_metric(tag: str) -> Metric:
    return Metric(
        f"tag_{tag}_pass_rate", HIGHER, f"pass_rate of the calls whose example is tagged {tag!r}", ("tag", tag)
    )


def tag_of(name: str) -> str | None:
    """The tag of a `tag_<tag>_pass_rate` metric name; None for any other name."""
    head, tail = "tag_", "_pass_rate"
    if name.startswith(head) and name.endswith(tail) and len(name) > len(head) + len(tail):
        return name[len(head) : -len(tail)]
    return None


def build(names: Iterable[str], scorers: Mapping[str, str], tags: Iterable[str]) -> dict[str, Metric]:
    """The catalogue of the metrics `names`, given the scorers (name -> what it checks) and tags seen."""
    known = {m.name: m for m in FIXED}
    for scorer, what in scorers.items():
        known.update({m.name: m for m in scorer_metrics(scorer, what)})
    known.update({m.name: m for m in map(tag_metric, tags)})
    return {name: known[name] for name in names if name in known}


def dumps(catalogue: Mapping[str, Metric]) -> str:
    entries = {}
    for name, metric in catalogue.items():
        entry = {k: v for k, v in asdict(metric).items() if k != "name" and v is not None}
        entries[name] = entry
    return json.dumps(entries, indent=2, ensure_ascii=False) + "\n"


def parse(text: str, source: str) -> dict[str, Metric]:
    """A catalogue written by `dumps`; a ValueError naming `source` when it is not one."""
    try:
        data = json.loads(text)
        catalogue = {}
        for name, entry in data.items():
            verdict = entry.get("verdict")
            catalogue[name] = Metric(
                name,
                entry["better"],
                entry["summarises"],
                tuple(verdict) if verdict else None,
                entry.get("interval_of"),
            )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{source}: not a metric catalogue ({exc})") from None
    if any(m.better not in (HIGHER, LOWER, NEITHER) for m in catalogue.values()):
        raise ValueError(f"{source}: `better` must be one of {HIGHER}, {LOWER}, {NEITHER}")
    return catalogue


def known_name(name: str, scorers: Iterable[str]) -> bool:
    """Whether a metric of this name can exist (for settings that name metrics before any run)."""
    if name in FIXED_NAMES:
        return True
    if tag_of(name) is not None:
        return True
    return any(name in {m.name for m in scorer_metrics(s, "")} for s in scorers)


def as_json(metric: Metric) -> dict[str, Any]:
    return {k: v for k, v in asdict(metric).items() if v is not None}
