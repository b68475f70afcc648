"""The PR gate: `dvc metrics diff <base> --json` checked metric by metric.

Exit codes: 0 pass, 1 regression, 2 unusable input (the reason is named). `dvc metrics diff`
itself exits 0 on null or corrupt metrics and `--md` rounds, so the gate reads the full-precision
JSON and checks every required metric itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import settings as settings_mod
from .errors import UserError

# Metrics where a rise is a regression; every other metric is better when higher.
LOWER_IS_BETTER_SUFFIXES = ("_ms", "_usd", "error_rate", "tokens_in", "tokens_out", "flaky_examples")


class GateInputError(UserError):
    """The gate cannot judge (no metrics, null metrics, dvc failed): exit 2."""


def lower_is_better(name: str) -> bool:
    return name.endswith(LOWER_IS_BETTER_SUFFIXES)


@dataclass
class Verdict:
    metric: str
    old: float | None
    new: float | None
    status: str  # "ok" | "regression" | "new" | "info"
    why: str = ""


@dataclass
class GateResult:
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(v.status == "regression" for v in self.verdicts)


def read_diff(base: str, metrics_file: str, cwd: Path = Path()) -> dict[str, dict[str, Any]]:
    """`dvc metrics diff <base> --json --all` for our metrics file: {metric: {old, new, diff}}."""
    cmd = [sys.executable, "-m", "dvc", "metrics", "diff", base, "--all", "--json", "--targets", metrics_file]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise GateInputError(f"`dvc metrics diff {base}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    try:
        data = json.loads(proc.stdout or "{}")
    except ValueError:
        raise GateInputError(f"`dvc metrics diff {base}` printed no JSON: {proc.stdout[:200]!r}") from None
    # Keys are paths as DVC prints them; match ours regardless of ./ or platform separators.
    for path, metrics in data.items():
        if Path(path) == Path(metrics_file):
            return metrics
    return {}


def judge(
    diff: Mapping[str, Mapping[str, Any]],
    config: settings_mod.Settings,
    head_metrics: Mapping[str, Any] | None,
) -> GateResult:
    result = GateResult()
    if head_metrics is None:
        raise GateInputError("eval/metrics.json is missing or not valid JSON on the head side; run `dvc repro`")
    if not diff:
        raise GateInputError(
            "`dvc metrics diff` returned nothing although eval/metrics.json is declared; is it committed/tracked in dvc.yaml?"
        )
    for name in config.gate.required:
        value = head_metrics.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise GateInputError(
                f"required metric {name!r} is {'missing' if name not in head_metrics else 'null or not a number'} on the head side"
            )
    for name, entry in sorted(diff.items()):
        old, new = entry.get("old"), entry.get("new")
        if new is None:
            if name in config.gate.required:
                raise GateInputError(f"required metric {name!r} is null on the head side")
            continue
        if old is None:
            result.verdicts.append(Verdict(name, None, new, "new", "no value on the base (first run): passes"))
            continue
        tolerance = config.gate.tolerance.get(name)
        if tolerance is None:
            result.verdicts.append(Verdict(name, old, new, "info"))
            continue
        worse_by = (new - old) if lower_is_better(name) else (old - new)
        if worse_by > tolerance:
            direction = "up" if lower_is_better(name) else "down"
            result.verdicts.append(
                Verdict(name, old, new, "regression", f"{direction} {abs(new - old):.4g} (tolerance {tolerance:g})")
            )
        else:
            result.verdicts.append(Verdict(name, old, new, "ok", f"within tolerance {tolerance:g}"))
    for name, bar in config.thresholds.min.items():
        value = head_metrics.get(name)
        if value is None or value < bar:
            result.verdicts.append(
                Verdict(
                    name, diff.get(name, {}).get("old"), value, "regression", f"below the absolute threshold {bar:g}"
                )
            )
    for name, bar in config.thresholds.max.items():
        value = head_metrics.get(name)
        if value is None or value > bar:
            result.verdicts.append(
                Verdict(
                    name, diff.get(name, {}).get("old"), value, "regression", f"above the absolute threshold {bar:g}"
                )
            )
    return result


def _fmt(value: Any) -> str:
    return "—" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def render(result: GateResult, base: str) -> str:
    icon = {"regression": "❌", "ok": "✅", "new": "🆕", "info": "·"}
    title = "❌ Gate failed" if result.failed else "✅ Gate passed"
    lines = [
        f"## {title} (base `{base}`)",
        "",
        "| metric | base | head | delta | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for v in result.verdicts:
        delta = _fmt(v.new - v.old) if isinstance(v.new, int | float) and isinstance(v.old, int | float) else "—"
        lines.append(f"| {v.metric} | {_fmt(v.old)} | {_fmt(v.new)} | {delta} | {icon[v.status]} {v.why} |")
    lines += [""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines).rstrip() + "\n"


def _head_metrics(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def main(argv: list[str] | None = None, prog: str = "gate") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare with (e.g. main, origin/main)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--metrics", default="eval/metrics.json")
    parser.add_argument("--report", type=Path, default=Path("eval/gate.md"))
    args = parser.parse_args(argv)
    config = settings_mod.load(args.params)
    try:
        result = judge(read_diff(args.base, args.metrics), config, _head_metrics(Path(args.metrics)))
    except GateInputError as exc:
        print(f"{prog}: unusable input: {exc}", file=sys.stderr)
        return 2
    text = render(result, args.base)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as out:
            out.write(text)
    print(text)
    return 1 if result.failed else 0
