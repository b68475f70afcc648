"""The human report: a summary table and every failing or errored example, in Markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..judge import summary as judge_summary
from .metrics import per_example
from .results import Result


def _cell(value: Any, limit: int = 160) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render(
    metrics: Mapping[str, Any],
    results: Sequence[Result],
    *,
    missed: Sequence[object],  # metrics.Miss, shown as text
    prompt_versions: Mapping[str, str],
    model: str,
    aborted: str | None = None,
) -> str:
    lines = ["# Evaluation report", ""]
    verdict = "❌ thresholds missed" if missed else "✅ thresholds met"
    if aborted:
        verdict = f"⚠️ run aborted: {aborted}"
    lines += [
        f"**{verdict}** · model `{model}` · {metrics.get('examples', 0)} examples, {metrics.get('calls', 0)} calls",
        "",
    ]
    for item in missed:
        lines.append(f"- {item}")
    if missed:
        lines.append("")
    lines += ["| metric | value |", "| --- | --- |"]
    lines += [
        f"| {name} | {_fmt(value)} |" for name, value in metrics.items() if not name.endswith(("_ci_low", "_ci_high"))
    ]
    lines += ["", "| prompt | version |", "| --- | --- |"]
    lines += [f"| {pid} | `{version}` |" for pid, version in sorted(prompt_versions.items())]
    lines += ["", "Each metric's meaning and direction: `eval/catalogue.json`."]
    judged = judge_summary.lines(results)
    lines += ["", *judged[:-1]] if judged else []
    flaky = {i: e for i, e in per_example(results).items() if e["flaky"]}
    if flaky:
        lines += ["", f"## Flaky examples: repeats disagree ({len(flaky)})", "", "| id | pass rate | answered |"]
        lines += ["| --- | --- | --- |"]
        lines += [f"| {i} | {e['pass_rate']:.2f} | {e['answered']} of {e['runs']} |" for i, e in sorted(flaky.items())]
    failing = [r for r in results if r.passed is not True]
    lines += ["", f"## Failing and errored calls ({len(failing)})", ""]
    if not failing:
        lines.append("None.")
    else:
        lines += ["| id | repeat | target | verdict | output |", "| --- | --- | --- | --- | --- |"]
        for r in failing:
            if r.error is not None:
                why = f"error: {r.error}"
            else:
                why = "; ".join(f"{n}: {s['detail'] or 'failed'}" for n, s in r.scores.items() if not s["passed"])
            lines.append(f"| {r.id} | {r.repeat} | {r.target} | {_cell(why)} | {_cell(r.output)} |")
    return "\n".join(lines) + "\n"
