"""`<project> gate plan`: what the paired test can detect on the current golden set, and the size it
needs to detect `gate.detect` - from the last evaluation's results alone (no base, no git).

One side only, so the churn a change brings cannot be measured: the flaky share stands for it (with
a deterministic model it is 0 and the figure is the best case; `gate` reports the measured one), or
`--churn` states it (e.g. what the Power section of a past gate report measured).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import settings as settings_mod
from ..errors import UserError, read_text
from ..evaluation import catalogue, results
from . import power, report


def main(argv: list[str] | None = None, prog: str = "gate plan") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--results", type=Path, default=Path("eval/results.jsonl"))
    parser.add_argument("--churn", help="share of examples a change flips at random (default: the flaky share)")
    args = parser.parse_args(argv)
    churn = share(args.churn) if args.churn is not None else None
    gate = settings_mod.load(args.params).gate
    found = results.parse(read_text(args.results, UserError, "run `make evaluate` first"), str(args.results))
    if not found:
        raise UserError(f"{args.results}: no results: run `make evaluate` first")
    pass_rate = next(m for m in catalogue.FIXED if m.name == "pass_rate")
    figure = power.of_results(found, pass_rate, gate.alpha, gate.detect, churn)
    print("\n".join(report.power_section(figure, heading=False)))
    return 0


def share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise UserError(f"--churn: must be a number from 0 to 1 (1 excluded), got {text[:40]!r}")
    return value
