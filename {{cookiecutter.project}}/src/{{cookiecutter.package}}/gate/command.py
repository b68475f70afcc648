"""`<project> gate --base REV`: the PR gate, in three steps - load every input once (inputs.py),
judge with a pure function (verdict.py), render the report (report.py).

Exit codes: 0 pass, 1 regression, 2 unusable input (the reason is named, in the report too).
The bars are the base's params.yaml (`--policy-from` another revision, e.g. HEAD on the protected
branch itself): a change cannot loosen the bars that judge it, and loosening them, or removing or
editing golden examples, fails unless `--policy-approved` (CI: the PR's `gate-policy-approved` label).
`dvc metrics diff` itself exits 0 on null or corrupt metrics and `--md` rounds, so the gate reads
the full-precision JSON and checks the head's metrics file itself; the head must not be stale (the
pipeline unchanged since it ran, per `dvc status`) and the base revision must be known.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import settings as settings_mod
from ..viewer import gate_page
from . import inputs, report, verdict


def main(argv: list[str] | None = None, prog: str = "gate") -> int:
    if argv and argv[0] == "plan":  # `gate plan`: the golden set's power, no base needed
        from . import plan

        return plan.main(argv[1:], prog=f"{prog} plan")
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare with (e.g. main, origin/main)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--metrics", type=Path, default=Path("eval/metrics.json"))
    parser.add_argument("--catalogue", type=Path, default=Path("eval/catalogue.json"))
    parser.add_argument("--results", type=Path, default=Path("eval/results.jsonl"))
    parser.add_argument("--golden", type=Path, default=Path("eval/golden.jsonl"))
    parser.add_argument("--report", type=Path, default=Path("eval/gate.md"))
    parser.add_argument("--html", type=Path, default=Path("eval/gate.html"), help="the report as a web page")
    parser.add_argument("--policy-from", help="revision whose params.yaml bars judge (default: --base)")
    parser.add_argument(
        "--policy-approved", action="store_true", default=approved_by_env(),
        help="loosened bars and removed/edited golden examples were approved (env GATE_POLICY_APPROVED=true)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    config = settings_mod.load(args.params)  # the head's params must be valid, whatever the base's bars
    paths = inputs.GatePaths(args.metrics, args.catalogue, args.results, args.golden, args.params)
    try:
        loaded = inputs.load(args.base, paths, args.policy_from)
        result = verdict.judge(loaded, args.policy_approved)
    except inputs.GateInputError as exc:
        print(f"{prog}: unusable input: {exc}", file=sys.stderr)
        publish(report.render_unusable(args.base, str(exc)), args.report)
        write_page(gate_page.render_unusable(args.base, str(exc)), args.html)
        return 2
    section = ""
    if config.judge.enabled and config.judge.pairwise:  # the LLM judge compares base and head answers too
        from ..judge.command import gate_pairwise

        section = gate_pairwise(config, loaded, result)
    text = report.render(result, loaded, args.policy_from) + section
    publish(text, args.report)
    write_page(gate_page.render(result, loaded, args.policy_from), args.html)
    print(text)
    return 1 if result.failed else 0


def approved_by_env() -> bool:
    return os.environ.get("GATE_POLICY_APPROVED", "").strip().lower() in ("1", "true", "yes")


def write_page(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def publish(text: str, path: Path) -> None:
    """The report to its file and, in GitHub Actions, to the job summary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as out:
            out.write(text + "\n")
