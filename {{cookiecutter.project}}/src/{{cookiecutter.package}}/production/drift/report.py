"""What `drift` writes: flat numbers for `drift/metrics.json`, the Markdown report, the summary line."""

from __future__ import annotations

from pathlib import Path

from .. import records
from .verdict import Verdict


def metrics(verdict: Verdict, captures: records.Captures) -> dict[str, float]:
    """Flat numbers for `drift/metrics.json` (what `dvc metrics diff` compares between commits)."""
    values: dict[str, float] = {
        "drifted": int(bool(verdict.drifted)),
        "signals_judged": len(verdict.signals),
        "signals_drifted": len(verdict.drifted),
        "tests": verdict.tests,
        "answers": len(captures.answers),
        "ratings": len(captures.feedback),
        "skipped_lines": captures.skipped,
    }
    for signal in verdict.signals:
        prefix = signal.name if signal.target == "all" else f"{signal.target}.{signal.name}"
        values[f"{prefix}.drifted"] = int(signal.drifted)
        values.update({f"{prefix}.{key}": _round(value) for key, value in signal.numbers.items()})
    return values


def _round(value: float) -> float:
    return value if isinstance(value, int) else round(float(value), 6)


def render(verdict: Verdict, sources: str) -> str:
    """The Markdown report: the verdict, what moved, every number, and what was not judged and why."""
    drifted = verdict.drifted
    if drifted:
        head = f"**Drift**: {len(drifted)} of {len(verdict.signals)} judged signals moved."
    elif verdict.signals:
        head = f"**No drift**: {len(verdict.signals)} signals judged, none moved."
    else:
        head = "**Cannot judge**: nothing could be judged (see below)."
    lines = ["# Drift report", "", head, "", sources, ""]
    if verdict.tests:
        lines += [
            f"A distribution test flags drift when its permutation p-value is below alpha / tests = "
            f"{verdict.level * verdict.tests:g} / {verdict.tests} = {verdict.level:.2g} (so the whole report "
            "raises a false alarm at most alpha of the time) and its effect reaches its bar.",
            "",
        ]
    if drifted:
        lines += ["## What moved", ""] + [f"- **{s.target} {s.name}**: {s.says}." for s in drifted] + [""]
    if verdict.signals:
        lines += ["## Judged", "", "| target | signal | drifted | numbers | in words |", "|---|---|---|---|---|"]
        for s in verdict.signals:
            numbers = ", ".join(f"{k} {_show(v)}" for k, v in s.numbers.items())
            says = s.says.replace("|", "\\|")  # a category or provider name must not split the row
            lines.append(f"| {s.target} | {s.name} | {'yes' if s.drifted else 'no'} | {numbers} | {says} |")
        lines.append("")
    if verdict.skipped:
        lines += ["## Not judged", ""] + [f"- {s.target} {s.name}: {s.why}." for s in verdict.skipped] + [""]
    if verdict.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in verdict.notes] + [""]
    return "\n".join(lines)


def _show(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def summary(verdict: Verdict, out_dir: Path) -> str:
    if verdict.drifted:
        names = ", ".join(s.name if s.target == "all" else f"{s.target} {s.name}" for s in verdict.drifted)
        return f"drift: {names} ({len(verdict.drifted)} of {len(verdict.signals)} signals); report {out_dir}/report.md"
    if verdict.signals:
        return (
            f"no drift: {len(verdict.signals)} signals judged, {len(verdict.skipped)} not; report {out_dir}/report.md"
        )
    return f"cannot judge: nothing could be judged ({len(verdict.skipped)} signals skipped); report {out_dir}/report.md"
