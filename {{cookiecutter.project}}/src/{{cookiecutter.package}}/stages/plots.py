"""Plot data for `dvc plots`: eval/results.jsonl -> eval/plots/latency.json and eval/plots/tags.json.

DVC plots read JSON/CSV/TSV/YAML, not JSON Lines, so the per-example results are reduced to two
small JSON tables: each answered call's latency, and the pass rate per golden-set tag. `dvc plots
diff main` then draws a branch's latency and tag pass rates against main's.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError, read_text
from ..evaluation.results import Result, ResultsError, parse

LATENCY_FILE = "latency.json"
TAGS_FILE = "tags.json"


def latency_rows(results: Iterable[Result]) -> list[dict[str, Any]]:
    """One row per answered call (errors have no meaningful latency), in plan order."""
    return [
        {"example": f"{r.id}#{r.repeat}", "target": r.target, "latency_ms": r.latency_ms}
        for r in results
        if r.passed is not None and r.latency_ms is not None
    ]


def tag_rows(results: Iterable[Result]) -> list[dict[str, Any]]:
    """Pass rate over answered calls, per tag, sorted by tag."""
    verdicts: dict[str, list[bool]] = defaultdict(list)
    for result in results:
        if result.passed is None:
            continue
        for tag in result.tags:
            verdicts[tag].append(bool(result.passed))
    return [{"tag": tag, "pass_rate": sum(v) / len(v), "calls": len(v)} for tag, v in sorted(verdicts.items())]


def write(results_path: Path, out_dir: Path) -> tuple[Path, Path]:
    try:
        results = parse(read_text(results_path, hint="run the evaluate stage first"), str(results_path))
    except ResultsError as exc:
        raise UserError(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    latency, tags = out_dir / LATENCY_FILE, out_dir / TAGS_FILE
    latency.write_text(json.dumps(latency_rows(results), indent=1) + "\n")
    tags.write_text(json.dumps(tag_rows(results), indent=1) + "\n")
    return latency, tags


def main(argv: list[str] | None = None, prog: str = "plots") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("eval/results.jsonl"))
    parser.add_argument("--out-dir", type=Path, default=Path("eval/plots"))
    args = parser.parse_args(argv)
    for path in write(args.results, args.out_dir):
        print(f"plot data -> {path}")
    return 0
