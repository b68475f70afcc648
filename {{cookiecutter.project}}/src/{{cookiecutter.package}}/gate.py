"""The PR gate: `dvc metrics diff <base> --json` checked metric by metric, plus paired statistics.

Exit codes: 0 pass, 1 regression, 2 unusable input (the reason is named, in the report too).
`dvc metrics diff` itself exits 0 on null or corrupt metrics and `--md` rounds, so the gate reads
the full-precision JSON and checks the head's metrics file itself. What it checks:
- required metrics (`gate.required`) present and numeric on the head; the head not stale (the
  `evaluate` stage unchanged since it ran, per `dvc status`); the base revision known;
- absolute thresholds (`thresholds.min/max`) on the head;
- per-metric tolerances (`gate.tolerance`), direction-aware: latency, cost, tokens, errors up is
  worse, everything else down is worse. Rates with a per-example verdict (pass_rate, tag and scorer
  rates) are then judged by the paired comparison with the base's eval/results.jsonl (read through
  git: it is committed, `cache: false`) - see `paired.py` for how significance and tolerance combine.
Metrics missing on the base (first run) pass with a note; without results on the base the
tolerances alone decide, also with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import gate_report, paired
from . import settings as settings_mod
from .evaluation.metrics import is_number, missed_thresholds
from .gate_inputs import (
    GateInputError,
    at_base,
    check_base,
    check_fresh,
    load_json,
    read_diff,
    read_golden,
    read_head,
)

# Metrics where a rise is a regression; every other metric is better when higher.
LOWER_IS_BETTER_SUFFIXES = ("_ms", "_usd", "error_rate", "tokens_in", "tokens_out", "flaky_examples")


def lower_is_better(name: str) -> bool:
    return name.endswith(LOWER_IS_BETTER_SUFFIXES)


@dataclass
class Verdict:
    metric: str
    old: float | None
    new: float | None
    status: str  # "ok" | "regression" | "warn" | "new" | "info"
    why: str = ""


@dataclass
class GateResult:
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    paired: dict[str, paired.Paired] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(v.status == "regression" for v in self.verdicts)

    @property
    def status(self) -> str:
        if self.failed:
            return "failed"
        return "warn" if any(v.status == "warn" for v in self.verdicts) else "passed"


def check_head(metrics: Mapping[str, Any], required: Sequence[str], source: str) -> None:
    for name in required:
        if name not in metrics:
            raise GateInputError(f"required metric {name!r} is missing from {source} (gate.required)")
        if not is_number(metrics[name]):
            raise GateInputError(f"required metric {name!r} is {json.dumps(metrics[name])} in {source}, not a number")


def judge(
    diff: Mapping[str, Mapping[str, Any]],
    config: settings_mod.Settings,
    head_metrics: Mapping[str, Any],
    pairs: Mapping[str, paired.Paired] | None = None,
) -> GateResult:
    """Verdict per metric. `pairs` holds the paired comparisons (None: no results on the base)."""
    gate = config.gate
    if not diff:
        raise GateInputError(
            "`dvc metrics diff` returned nothing although the metrics file is declared: is it committed and "
            "listed under `metrics:` in dvc.yaml?"
        )
    check_head(head_metrics, gate.required, "the head's metrics")
    result = GateResult(paired=dict(pairs or {}))
    for name, entry in sorted(diff.items()):
        if name.endswith(("_ci_low", "_ci_high")):
            continue  # interval bounds move with the rate; the rate is judged, the bounds would double-count
        old, new = entry.get("old"), entry.get("new")
        if new is None:
            if name in gate.required:
                raise GateInputError(f"required metric {name!r} is null on the head side")
            result.verdicts.append(Verdict(name, old, None, "info", "no value on the head"))
            continue
        if old is None:
            result.verdicts.append(Verdict(name, None, new, "new", "no value on the base (first run): passes"))
            continue
        tolerance = gate.tolerance.get(name)
        if tolerance is None:
            result.verdicts.append(Verdict(name, old, new, "info"))
            continue
        worse_by = (new - old) if lower_is_better(name) else (old - new)
        if name in result.paired:
            status, why = paired.decide(worse_by, tolerance, result.paired[name], gate.alpha, gate.max_drop)
        elif worse_by > tolerance:
            direction = "up" if lower_is_better(name) else "down"
            status, why = "regression", f"{direction} {abs(new - old):.4g} (tolerance {tolerance:g})"
        else:
            status, why = "ok", f"within tolerance {tolerance:g}"
        result.verdicts.append(Verdict(name, old, new, status, why))
    for miss in missed_thresholds(head_metrics, config.thresholds.min, config.thresholds.max):
        side = "below" if miss.bound == "min" else "above"
        old = diff.get(miss.name, {}).get("old")
        result.verdicts.append(
            Verdict(miss.name, old, miss.value, "regression", f"{side} the absolute threshold {miss.bar:g}")
        )
    return result


def render(
    result: GateResult,
    base: str,
    alpha: float,
    golden: Mapping[str, Mapping[str, Any]],
    base_results: Sequence[Mapping[str, Any]],
    head_results: Sequence[Mapping[str, Any]],
) -> str:
    """The whole Markdown report: regressions first, then the paired statistics and the examples."""
    order = {"regression": 0, "warn": 1, "ok": 2, "new": 3, "info": 4}
    verdicts = sorted(result.verdicts, key=lambda v: order[v.status])
    lines = [gate_report.title(result.status, base), "", *gate_report.metrics_table(verdicts), ""]
    if result.paired:
        lines += [*gate_report.paired_table(list(result.paired.values()), alpha), ""]
    overall = result.paired.get("pass_rate")
    if overall is not None:
        old, new = first_repeat(base_results), first_repeat(head_results)
        lines += gate_report.examples_table("Flipped pass → fail", overall.pass_to_fail, golden, old, new)
        lines += gate_report.examples_table("Flipped fail → pass", overall.fail_to_pass, golden, old, new)
        lines += gate_report.flaky_list(overall)
    lines += [f"- {note}" for note in result.notes]
    return "\n".join(lines).rstrip() + "\n"


def first_repeat(records: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """id -> the record of its lowest repeat: the output the report shows."""
    return {r["id"]: r for r in sorted(records, key=lambda r: r.get("repeat", 0), reverse=True)}


def gather(args: argparse.Namespace, config: settings_mod.Settings) -> tuple[GateResult, list, list]:
    """Read and check every input, then judge: (result, base results, head results)."""
    check_base(args.base)
    metrics_file, results_file = str(args.metrics), str(args.results)
    head_metrics = load_json(read_head(args.metrics), f"{metrics_file} (head)")
    check_head(head_metrics, config.gate.required, f"{metrics_file} (head)")
    try:
        head_results = paired.parse_results(read_head(args.results), f"{results_file} (head)")
    except paired.ResultsError as exc:
        raise GateInputError(str(exc)) from None
    base_text = at_base(args.base, metrics_file)
    if base_text is not None:
        load_json(base_text, f"{metrics_file} at {args.base}")  # a corrupt base would make every metric "new"
    check_fresh(metrics_file)
    diff = read_diff(args.base, metrics_file)
    notes = []
    base_results: list[dict[str, Any]] = []
    pairs: dict[str, paired.Paired] | None = None
    text = at_base(args.base, results_file)
    if base_text is None:
        notes.append(f"No {metrics_file} at `{args.base}` (first run?): nothing to compare, the gate passes.")
    if text is None:
        notes.append(f"No {results_file} at `{args.base}`: paired statistics skipped.")
    else:
        try:
            base_results = paired.parse_results(text, f"{results_file} at {args.base}")
        except paired.ResultsError as exc:
            notes.append(f"Paired statistics skipped: {exc}")
        else:
            names = paired.paired_metrics(["pass_rate", *config.gate.tolerance], head_results)
            pairs = {name: paired.compare(base_results, head_results, name) for name in dict.fromkeys(names)}
    result = judge(diff, config, head_metrics, pairs)
    result.notes[:0] = notes
    return result, base_results, head_results


def main(argv: list[str] | None = None, prog: str = "gate") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare with (e.g. main, origin/main)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--metrics", type=Path, default=Path("eval/metrics.json"))
    parser.add_argument("--results", type=Path, default=Path("eval/results.jsonl"))
    parser.add_argument("--golden", type=Path, default=Path("eval/golden.jsonl"))
    parser.add_argument("--report", type=Path, default=Path("eval/gate.md"))
    args = parser.parse_args(argv)
    config = settings_mod.load(args.params)
    try:
        result, base_results, head_results = gather(args, config)
    except GateInputError as exc:
        print(f"{prog}: unusable input: {exc}", file=sys.stderr)
        publish(gate_report.render_unusable(args.base, str(exc)), args.report)
        return 2
    text = render(result, args.base, config.gate.alpha, read_golden(args.golden), base_results, head_results)
    publish(text, args.report)
    print(text)
    return 1 if result.failed else 0


def publish(text: str, report: Path) -> None:
    """The report to its file and, in GitHub Actions, to the job summary."""
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as out:
            out.write(text + "\n")
