"""`eval/gate.html`: the gate's verdict as one self-contained page, base and head side by side.

Rendering only, like the Markdown report: it gets the verdict and the inputs it was judged on
(`GateResult`, `GateInputs`) and reads nothing. Every example is listed, flipped ones first, with
a word-level difference of its two outputs computed here (difflib) and drawn by the page's script.
Views that judge more (a power analysis, an LLM judge) add theirs as `page.Section`s: `extra`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..evaluation.metrics import per_example
from ..evaluation.results import Result
from ..gate.inputs import GateInputs
from ..gate.report import ORDER, expectation, first_repeat, power_section, shown_input, shown_output, tag_rates
from ..gate.verdict import GateResult
from . import charts
from .eval_page import judge_sections
from .page import Section, document, esc, rows_container, section, table
from .page import controls as filter_bar

TITLES = {"failed": "Gate failed", "warn": "Gate passed with warnings", "passed": "Gate passed"}
CLASSES = {"failed": "verdict-bad", "warn": "verdict-warn", "passed": "verdict-ok", "unusable": "verdict-bad"}
FLIP_ORDER = {"pass→fail": 0, "fail→pass": 1, "flaky": 2}
_WORDS = re.compile(r"\s+|\w+|[^\w\s]")


def diff_segments(old: str | None, new: str | None) -> list[list[Any]]:
    """[op, text] runs that spell both outputs: op 0 in both, -1 base only, 1 head only."""
    a, b = _WORDS.findall(old or ""), _WORDS.findall(new or "")
    segments: list[list[Any]] = []

    def add(op: int, words: Sequence[str]) -> None:
        if not words:
            return
        if segments and segments[-1][0] == op:
            segments[-1][1] += "".join(words)
        else:
            segments.append([op, "".join(words)])

    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            add(0, a[i1:i2])
        else:
            add(-1, a[i1:i2])
            add(1, b[j1:j2])
    return segments


def side_status(rates: Mapping[str, Mapping[str, Any]], example: str) -> str:
    entry = rates.get(example)
    if entry is None:
        return "absent"
    rate = entry["pass_rate"]
    return "error" if rate is None else "pass" if rate == 1 else "fail" if rate == 0 else "flaky"


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def rows(result: GateResult, inputs: GateInputs) -> list[dict[str, Any]]:
    """Every example on either side, flipped first (pass→fail, fail→pass, flaky), then by id."""
    base_results: Sequence[Result] = inputs.base_results or ()
    old, new = first_repeat(base_results), first_repeat(inputs.head_results)
    old_rates, new_rates = per_example(base_results), per_example(inputs.head_results)
    overall = result.paired.get("pass_rate")
    flips: dict[str, str] = {}
    if overall is not None:
        flips |= {i: "flaky" for i in overall.flaky}
        flips |= {i: "pass→fail" for i in overall.pass_to_fail}
        flips |= {i: "fail→pass" for i in overall.fail_to_pass}
    out = []
    for example in sorted(old.keys() | new.keys(), key=lambda i: (FLIP_ORDER.get(flips.get(i, ""), 3), i)):
        before, after = _text(shown_output(old.get(example))), _text(shown_output(new.get(example)))
        spec = inputs.golden.get(example, {})
        out.append(
            {
                "id": example,
                "flip": flips.get(example, ""),
                "changed": before != after,
                "base": side_status(old_rates, example),
                "head": side_status(new_rates, example),
                "input": _text(shown_input(spec.get("input"))) or "",
                "expected": _text(expectation(spec)),
                "diff": diff_segments(before, after),
            }
        )
    return out


def power(result: GateResult) -> list[Section]:
    """What the paired test can detect here (gate/power.py), as the Markdown report words it."""
    if result.power is None:
        return []
    lines = [line.removeprefix("- ") for line in power_section(result.power, heading=False) if line.strip()]
    return [Section("Power", ("",), tuple((line,) for line in lines[1:]), note=lines[0])]


def _number(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def render(result: GateResult, inputs: GateInputs, policy_ref: str | None = None, extra: Sequence[Section] = ()) -> str:
    """The whole page: verdict, metrics, paired statistics, policy changes, extra sections, examples."""
    status = result.status
    verdicts = sorted(result.verdicts, key=lambda v: ORDER[v.status])  # regressions first, as in gate.md
    body = [
        f"<h1>{esc(TITLES[status])}</h1>",
        f'<p><b class="{CLASSES[status]}">{esc(status)}</b> · base <code>{esc(inputs.base)}</code>'
        f" · bars from <code>{esc(policy_ref or inputs.base)}</code></p>",
        "<h2>Metrics</h2>",
        table(
            ("metric", "base", "head", "verdict", "why"),
            [(v.metric, _number(v.old), _number(v.new), v.status, v.why) for v in verdicts],
            numeric=(1, 2),
        ),
    ]
    if result.paired:
        body.append("<h2>Paired comparison (same examples, base → head)</h2>")
        body.append(
            table(
                ("metric", "examples", "pass→fail", "fail→pass", "flaky", "p-value"),
                [
                    (p.metric, p.examples, len(p.pass_to_fail), len(p.fail_to_pass), len(p.flaky), f"{p.p_value:.3g}")
                    for p in result.paired.values()
                ],
                numeric=(1, 2, 3, 4, 5),
            )
        )
    labels, base_rates, head_rates = tag_rates(result)
    if labels:
        body.append('<h2>Pass rate per tag</h2><div class="charts">')
        body.append(charts.bars("Pass rate per tag", labels, [("base", base_rates), ("head", head_rates)]))
        body.append("</div>")
    changes = result.changes
    if changes:
        body.append("<h2>Policy changes</h2>")
        body.append(table(("change",), [(str(bar),) for bar in changes.bars]) if changes.bars else "")
        for label, ids in (("removed", changes.removed), ("edited", changes.edited), ("added", changes.added)):
            if ids:
                body.append(f"<p>golden examples {esc(label)} ({len(ids)}): {esc(', '.join(ids))}</p>")
    body += [section(part) for part in (*power(result), *judge_sections(inputs.head_results), *extra)]
    if result.notes:
        body.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in result.notes) + "</ul>")
    body.append("<h2>Examples</h2>")
    body.append(
        filter_bar(
            {
                "flip": [
                    ("all", "all"),
                    ("flipped", "flipped"),
                    ("pass→fail", "pass→fail"),
                    ("fail→pass", "fail→pass"),
                    ("flaky", "flaky"),
                    ("changed", "output changed"),
                ]
            }
        )
    )
    body.append(rows_container())
    return document(TITLES[status], "\n".join(body), {"kind": "gate", "rows": rows(result, inputs)})


def render_unusable(base: str, reason: str) -> str:
    """The page for a gate that could not judge: the reason, and no rows."""
    body = (
        f'<h1>Gate could not judge</h1><p><b class="verdict-bad">unusable</b> · base <code>{esc(base)}</code></p>'
        f"<pre>{esc(reason)}</pre><p>Exit 2: fix the input and re-run <code>make gate</code>.</p>"
    )
    return document("Gate could not judge", body, {"kind": "none"})
