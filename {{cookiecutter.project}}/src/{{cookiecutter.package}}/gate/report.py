"""The gate's Markdown report: verdict per metric, the paired statistics, the flipped examples.

Rendering only: it gets the verdict and the inputs it was judged on, and reads nothing itself.

It is posted as a PR comment and written to the job summary, so every cell that carries model
output or user data is truncated and escaped: a `|` would break the table, a `<` could open HTML.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..evaluation.catalogue import tag_of
from ..evaluation.metrics import is_number
from ..evaluation.results import Result
from ..judge import summary as judge_summary
from ..viewer.charts import mermaid_bars
from .inputs import GateInputs
from .power import MAX_EXAMPLES, TARGET, Power
from .verdict import APPROVAL_LABEL, GateResult

ORDER = {"regression": 0, "warn": 1, "ok": 2, "new": 3, "info": 4}

ICONS = {"regression": "❌", "warn": "⚠️", "ok": "✅", "new": "🆕", "info": "·"}
CELL_CHARS = 120
MAX_ROWS = 25  # flipped examples listed per direction; the rest are counted


def cell(value: Any, limit: int = CELL_CHARS) -> str:
    """One table cell: JSON for structures, one line, truncated, `|` and `<` escaped."""
    if value is None:
        return "—"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("`", "'")


def number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def title(status: str, base: str) -> str:
    heading = {
        "failed": "❌ Gate failed",
        "warn": "⚠️ Gate passed with warnings",
        "passed": "✅ Gate passed",
        "unusable": "⛔ Gate could not judge",
    }[status]
    return f"## {heading} (base `{cell(base)}`)"


def metrics_table(verdicts: Sequence[Any]) -> list[str]:
    lines = ["| metric | base | head | delta | verdict |", "| --- | ---: | ---: | ---: | --- |"]
    for v in verdicts:
        numeric = all(is_number(x) for x in (v.old, v.new))
        delta = number(v.new - v.old) if numeric else "—"
        lines.append(
            f"| {v.metric} | {number(v.old)} | {number(v.new)} | {delta} | {ICONS[v.status]} {cell(v.why, 300)} |"
        )
    return lines


def paired_table(paired: Sequence[Any], alpha: float) -> list[str]:
    lines = [
        "### Paired comparison (same examples, base → head)",
        "",
        f"Exact McNemar test on the examples that flipped (one-sided, α = {alpha:g}); flaky examples "
        "(repeats disagree) and errors are left out of the test.",
        "",
        "| metric | examples | pass→fail | fail→pass | flaky | p-value |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in paired:
        lines.append(
            f"| {p.metric} | {p.examples} | {len(p.pass_to_fail)} | {len(p.fail_to_pass)} | {len(p.flaky)} | {p.p_value:.3g} |"
        )
    return lines


def examples_table(
    heading: str,
    ids: Sequence[str],
    golden: Mapping[str, Mapping[str, Any]],
    base: Mapping[str, Result],
    head: Mapping[str, Result],
) -> list[str]:
    """Input, expectation and both outputs of each listed example."""
    if not ids:
        return []
    lines = [
        f"### {heading} ({len(ids)})",
        "",
        "| id | input | expected | base output | head output |",
        "| --- | --- | --- | --- | --- |",
    ]
    for example in ids[:MAX_ROWS]:
        spec = golden.get(example, {})
        lines.append(
            f"| {cell(example)} | {cell(shown_input(spec.get('input')))} | {cell(expectation(spec))} | "
            f"{cell(shown_output(base.get(example)))} | {cell(shown_output(head.get(example)))} |"
        )
    if len(ids) > MAX_ROWS:
        lines.append(f"\n… and {len(ids) - MAX_ROWS} more (see eval/results.jsonl).")
    return [*lines, ""]


def shown_input(inputs: Any) -> Any:
    """A one-variable input as its text; several as `name: value` pairs, last first: templates put
    the context first and the user's own words last, and those are what a reviewer needs to see."""
    if not isinstance(inputs, Mapping) or not inputs:
        return inputs
    if len(inputs) == 1:
        return next(iter(inputs.values()))
    return "; ".join(f"{k}: {v}" for k, v in reversed(list(inputs.items())))


def expectation(spec: Mapping[str, Any]) -> Any:
    """What the golden set expects of an example: every key but its id, prompt, input and tags."""
    rest = {k: v for k, v in spec.items() if k not in ("id", "prompt", "flow", "input", "tags")}
    if set(rest) == {"expected"}:
        return rest["expected"]
    return rest or None


def shown_output(result: Result | None) -> Any:
    if result is None:
        return None
    return result.output if result.error is None else f"error: {result.error}"


def flaky_list(paired: Any) -> list[str]:
    if not paired.flaky:
        return []
    items = [f"`{cell(k)}` {base:.0%} → {head:.0%}" for k, (base, head) in sorted(paired.flaky.items())]
    return [
        f"### Flaky examples ({len(items)}): repeats disagree, so they cannot fail the gate alone",
        "",
        "Pass rate over repeats, base → head: " + ", ".join(items[:MAX_ROWS]),
        "",
    ]


def points(share: float) -> str:
    """A pass-rate drop in percentage points, rounded up: the figure never claims more than it can."""
    return f"{math.ceil(share * 100 - 1e-9):g} pts"


def power_line(power: Power) -> str:
    """The PR comment's one line: the smallest drop this golden set detects."""
    level = f"{TARGET:.0%} power, α = {power.alpha:g}"
    if power.detectable_drop is None:
        return f"This golden set detects no pass-rate drop ({level}): {power.examples} paired examples are too few."
    return f"This golden set detects drops ≥ {points(power.detectable_drop)} ({level})."


def power_section(power: Power, heading: bool = True) -> list[str]:
    """What the paired test can detect here, and the golden set that would detect `gate.detect`."""
    needed = power.examples_needed
    if needed is None:
        size = f"more than {MAX_EXAMPLES:,} golden examples: lower the churn first (a deterministic model, repeats)"
    else:
        more = "this set has enough" if needed <= power.answered else f"{needed - power.answered} more than this set"
        size = f"about {needed} golden examples ({more})"
    lines = ["### Power", ""] if heading else []
    lines += [
        power_line(power),
        "",
        f"- paired examples: {power.examples} of {power.answered} answered (pass rate {power.pass_rate:.3f}; "
        f"flaky, left out: {power.flaky_share:.1%})",
        f"- churn: {power.churn:.3f} of the examples flip at random, half each way ({cell(power.churn_source, 200)})",
        f"- to detect a drop of {points(power.detect)} (`gate.detect`) with {TARGET:.0%} power: {size}",
    ]
    return [*lines, ""]


def render_unusable(base: str, reason: str) -> str:
    return f"{title('unusable', base)}\n\n{cell(reason, 2000)}\n\nExit 2: fix the input and re-run `make gate`.\n"


def first_repeat(results: Sequence[Result]) -> dict[str, Result]:
    """id -> the result of its lowest repeat: the output the report shows."""
    return {r.id: r for r in sorted(results, key=lambda r: r.repeat, reverse=True)}


def policy_section(result: GateResult, policy_ref: str) -> list[str]:
    """What the change does to the gate's own bars and golden set; empty when nothing."""
    changes = result.changes
    if not changes:
        return []
    if not changes.need_approval:
        state = "nothing loosened: no approval needed"
    elif result.approved:
        state = f"approved ({APPROVAL_LABEL})"
    else:
        state = f"❌ needs approval: the `{APPROVAL_LABEL}` label, after review by the code owners"
    lines = [
        "### Policy changes",
        "",
        f"The bars that judge this change are `{cell(policy_ref)}`'s; these take effect once merged. {state}.",
        "",
    ]
    lines += [f"- `{cell(str(bar), 300)}`" for bar in changes.bars]
    for label, ids in (("removed", changes.removed), ("edited", changes.edited), ("added", changes.added)):
        if ids:
            shown = ", ".join(f"`{cell(i)}`" for i in ids[:MAX_ROWS]) + (" …" if len(ids) > MAX_ROWS else "")
            lines.append(f"- golden examples {label} ({len(ids)}): {shown}")
    return [*lines, ""]


def tag_rates(result: GateResult) -> tuple[list[str], list[float | None], list[float | None]]:
    """Per-tag pass rates, base and head, from the verdicts (what `dvc metrics diff` gave); a
    metric judged twice (a tolerance and an absolute bar) has one pair of values."""
    found: dict[str, tuple[Any, Any]] = {}
    for v in result.verdicts:
        tag = tag_of(v.metric)
        if tag is not None:
            found.setdefault(tag, (v.old, v.new))
    tags = sorted(found)
    number_or_none = lambda value: value if is_number(value) else None  # noqa: E731
    return tags, [number_or_none(found[t][0]) for t in tags], [number_or_none(found[t][1]) for t in tags]


def tag_chart(result: GateResult) -> list[str]:
    """Per-tag pass rates base vs head as a chart GitHub draws in the comment (the numbers are in
    the metrics table above it, for readers the chart does not reach)."""
    labels, old, new = tag_rates(result)
    if not labels:
        return []
    return [mermaid_bars("Pass rate per tag", labels, [("base", old), ("head", new)]), ""]


def render(result: GateResult, inputs: GateInputs, policy_ref: str | None = None) -> str:
    """The whole Markdown report: policy changes, regressions, the paired statistics, the examples."""
    alpha = inputs.policy.gate.alpha
    verdicts = sorted(result.verdicts, key=lambda v: ORDER[v.status])
    lines = [title(result.status, inputs.base), ""]
    lines += [power_line(result.power), ""] if result.power is not None else []
    lines += policy_section(result, policy_ref or inputs.base)
    lines += [*metrics_table(verdicts), "", *tag_chart(result)]
    if result.paired:
        lines += [*paired_table(list(result.paired.values()), alpha), ""]
    lines += power_section(result.power) if result.power is not None else []
    overall = result.paired.get("pass_rate")
    if overall is not None:
        old, new = first_repeat(inputs.base_results or ()), first_repeat(inputs.head_results)
        lines += examples_table("Flipped pass → fail", overall.pass_to_fail, inputs.golden, old, new)
        lines += examples_table("Flipped fail → pass", overall.fail_to_pass, inputs.golden, old, new)
        lines += flaky_list(overall)
    lines += judge_summary.lines(inputs.head_results, "###")
    lines += [f"- {note}" for note in result.notes]
    return "\n".join(lines).rstrip() + "\n"
