"""`eval/report.html`: the evaluation as one self-contained page (summary, charts, every call).

Built from what the evaluate stage already holds - the results, the eval set's examples and the
prompts - so a single run and a merge of shards write the same bytes. The messages a prompt
example sent are rendered from its prompt, as the runner rendered them; each distinct message text
is stored once (a system prompt shared by 5,000 examples costs its length once, not 5,000 times).
A flow's messages depend on its model's earlier answers, so a flow example shows its input and reply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..app.prompts import Prompt, PromptError
from ..evaluation import catalogue
from ..evaluation.golden import Example
from ..evaluation.metrics import Miss, per_example
from ..evaluation.results import Result
from ..judge.summary import state, summarise
from . import charts
from .page import Section, document, esc, rows_container, section, table
from .page import controls as filter_bar


def shown_input(inputs: Mapping[str, Any]) -> str:
    """One text variable as its text; anything else as indented JSON."""
    if len(inputs) == 1 and isinstance(next(iter(inputs.values())), str):
        return str(next(iter(inputs.values())))
    return json.dumps(inputs, ensure_ascii=False, indent=2, sort_keys=True)


def shown_expectation(expectations: Mapping[str, Any]) -> str | None:
    if not expectations:
        return None
    if set(expectations) == {"expected"} and isinstance(expectations["expected"], str):
        return str(expectations["expected"])
    return json.dumps(dict(expectations), ensure_ascii=False, indent=2, sort_keys=True)


def judge_sections(results: Sequence[Result]) -> list[Section]:
    """The LLM judge's verdicts per rubric version and whether they gate (judge/summary.py); none
    when nothing was judged."""
    found = summarise(results)
    if not found:
        return []
    rows = tuple((s.version, s.judged, s.passed, s.errors, s.state) for s in found)
    note = "A rubric version's verdicts count towards pass_rate only once `judge calibrate` measured its agreement."
    return [Section("LLM judge", ("rubric version", "judged", "judge pass", "judge errors", "verdicts"), rows, note)]


def judged(result: Result) -> str | None:
    """Which rubric judged this call and whether its verdict counts (the verdict is a scorer's)."""
    if result.judge is None:
        return None
    error = result.judge.get("error")
    said = f"rubric {result.judge.get('rubric', '')}: {state(result.judge.get('gating') is True)}"
    return said + (f"; no verdict: {error}" if error else "")


def status(result: Result) -> str:
    return "error" if result.passed is None else ("pass" if result.passed else "fail")


class Texts:
    """A table of distinct strings: rows refer to a message's text by its index."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def ref(self, text: str) -> int:
        if text not in self.index:
            self.index[text] = len(self.items)
            self.items.append(text)
        return self.index[text]


def messages(example: Example | None, prompts: Mapping[str, Prompt], texts: Texts) -> list[list[Any]] | None:
    """[role, text index] of each message a prompt example sent; None for a flow or an unknown one."""
    if example is None or example.prompt is None or example.prompt not in prompts:
        return None
    try:
        rendered = prompts[example.prompt].render(example.input)
    except PromptError:
        return None
    return [[m["role"], texts.ref(m["content"])] for m in rendered]


def data(results: Sequence[Result], examples: Sequence[Example], prompts: Mapping[str, Prompt]) -> dict[str, Any]:
    """The page's JSON: one row per call, in the results' order."""
    by_id = {e.id: e for e in examples}
    summary = per_example(results)
    texts = Texts()
    rendered: dict[str, list[list[Any]] | None] = {}
    rows = []
    for r in results:
        example = by_id.get(r.id)
        if r.id not in rendered:
            rendered[r.id] = messages(example, prompts, texts)
        rows.append(
            {
                "id": r.id,
                "repeat": r.repeat,
                "repeats": summary[r.id]["runs"],
                "target": r.target,
                "tags": list(r.tags),
                "status": status(r),
                "flaky": bool(summary[r.id]["flaky"]),
                "input": shown_input(example.input) if example else "",
                "messages": rendered[r.id],
                "output": r.output,
                "expected": shown_expectation(example.expectations) if example else None,
                "scores": [[name, bool(s.get("passed")), s.get("detail") or ""] for name, s in r.scores.items()],
                "latency_ms": r.latency_ms,
                "error": r.error,
                "judge": judged(r),
            }
        )
    return {
        "kind": "eval",
        "rows": rows,
        "texts": texts.items,
        "tags": sorted({t for r in results for t in r.tags}),
        "targets": sorted({r.target for r in results}),
    }


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "—" if value is None else str(value)


def summary_cards(values: Mapping[str, Any]) -> str:
    low, high = values.get("pass_rate_ci_low"), values.get("pass_rate_ci_high")
    interval = f"95% CI {_number(low)}–{_number(high)}" if low is not None else "no interval"
    cards = [
        ("pass rate", _number(values.get("pass_rate")), interval),
        ("error rate", _number(values.get("error_rate")), "calls with no usable answer"),
        (
            "latency p50 / p95",
            f"{_number(values.get('latency_p50_ms'), 0)} / {_number(values.get('latency_p95_ms'), 0)}",
            "ms",
        ),
        ("tokens in / out", f"{values.get('tokens_in', 0)} / {values.get('tokens_out', 0)}", "answered calls"),
        ("cost", f"${_number(values.get('cost_usd'), 4)}", "at model.*_usd_per_1m_tokens"),
        (
            "examples / calls",
            f"{values.get('examples', 0)} / {values.get('calls', 0)}",
            f"{values.get('flaky_examples', 0)} flaky",
        ),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f"<div class=card><span>{esc(t)}</span><b>{esc(v)}</b><span>{esc(n)}</span></div>" for t, v, n in cards
        )
        + "</div>"
    )


def bars_table(
    values: Mapping[str, Any], minimum: Mapping[str, float], maximum: Mapping[str, float], missed: Sequence[Miss]
) -> str:
    failed = {(m.name, m.bound) for m in missed}
    rows = [
        (name, bound, bar, _number(values.get(name), 4), "missed" if (name, bound) in failed else "met")
        for bound, bars in (("min", minimum), ("max", maximum))
        for name, bar in sorted(bars.items())
    ]
    if not rows:
        return "<p>No thresholds in params.yaml.</p>"
    return table(("metric", "bound", "bar", "value", ""), rows, numeric=(2, 3))


def render(
    values: Mapping[str, Any],
    results: Sequence[Result],
    examples: Sequence[Example],
    prompts: Mapping[str, Prompt],
    *,
    minimum: Mapping[str, float],
    maximum: Mapping[str, float],
    missed: Sequence[Miss],
    model: str,
    aborted: str | None = None,
) -> str:
    """The whole page."""
    verdict, cls = ("thresholds missed", "verdict-bad") if missed else ("thresholds met", "verdict-ok")
    if aborted:
        verdict, cls = f"run stopped: {aborted}", "verdict-warn"
    tags = sorted((tag, values[name]) for name in values if (tag := catalogue.tag_of(name)) is not None)
    latencies = [r.latency_ms for r in results if r.passed is not None and r.latency_ms is not None]
    versions = sorted({(r.target, r.version) for r in results})
    body = [
        "<h1>Evaluation report</h1>",
        f'<p><b class="{cls}">{esc(verdict)}</b> · model <code>{esc(model)}</code></p>',
        summary_cards(values),
        "<h2>Thresholds</h2>",
        bars_table(values, minimum, maximum, missed),
        '<h2>Charts</h2><div class="charts">',
        charts.bars("Pass rate per tag", [t for t, _ in tags], [("pass rate", [v for _, v in tags])]) if tags else "",
        charts.histogram("Latency per answered call", latencies),
        "</div>",
        "<h2>Targets</h2>",
        table(("target", "version"), versions),
        *(section(part) for part in judge_sections(results)),
        "<h2>Calls</h2>",
        filter_bar(
            {
                "status": [("all", "all"), ("pass", "pass"), ("fail", "fail"), ("error", "error"), ("flaky", "flaky")],
                "tag": [("all", "all tags")],
                "target": [("all", "all targets")],
            }
        ),
        rows_container(),
    ]
    return document("Evaluation report", "\n".join(body), data(results, examples, prompts))
