"""`drift`: read the reference, the captures and the settings once, judge, write the metrics and the
report (each whole or not at all), print one line. Exit 0 no drift, 1 drift, 2 nothing judged."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from ... import settings as settings_mod
from ...errors import UserError, read_text
from ...evaluation import golden
from ...evaluation.results import ResultsError, parse
from .. import records
from .report import metrics, render, summary
from .verdict import judge, judge_probe


def write(path: Path, text: str) -> None:
    """Replace `path` whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None, prog: str = "drift") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="the eval set (or a golden-set file)")
    parser.add_argument("--reference-results", type=Path, help="main's eval/results.jsonl: replies and providers")
    parser.add_argument("--current", type=Path, nargs="+", required=True, help="capture files or directories")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prompts", type=Path, default=Path("prompts"), help="for --probe")
    parser.add_argument("--probe", action="store_true", help="re-ask drift.probe_examples examples, uncached")
    parser.add_argument("--out-dir", type=Path, default=Path("drift"))
    args = parser.parse_args(argv)
    if args.probe and args.reference_results is None:
        raise UserError("--probe needs --reference-results (main's answers, to pair the probe's with)")

    from ...app.loader import load_app

    config = settings_mod.load(args.params)
    app = load_app(config.app.entry)
    examples = golden.load(args.reference)
    results = None
    if args.reference_results is not None:
        results = parse(read_text(args.reference_results, ResultsError), str(args.reference_results))
    captures = records.load(args.current)
    if not captures.answers and not captures.feedback:
        raise UserError(f"{', '.join(map(str, args.current))}: nothing to judge: {captures.note()}")

    verdict = judge(examples, results, captures, app, config.drift)
    if args.probe:
        from .probe import probe

        judge_probe(probe(config, args.params, args.prompts, app, examples, results or []), config.drift, verdict)

    sources = (
        f"Reference: `{args.reference}` ({len(examples)} examples)"
        + (f", `{args.reference_results}` ({len(results)} results)" if results is not None else "")
        + f". Current: {captures.note()}."
    )
    write(args.out_dir / "metrics.json", json.dumps(metrics(verdict, captures), indent=2) + "\n")
    write(args.out_dir / "report.md", render(verdict, sources))
    line = summary(verdict, args.out_dir)
    print(line, file=sys.stdout)
    if verdict.drifted:
        return 1
    return 0 if verdict.signals else 2
