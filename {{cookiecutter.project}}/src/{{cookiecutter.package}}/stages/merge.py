"""`merge`: the shard files of `evaluate --shard I/N` -> the eval/ files a single run writes.

Every shard is checked against this checkout's eval set, prompts and params (its header) and
every result against the eval set's tasks (evaluation/shards.py): a missing, duplicated, foreign,
mismatched or torn shard is one line naming the file, exit 2, and nothing is written. The results
are put back in the single run's order and written by the single run's own `write_outputs`, so
results.jsonl, metrics.json (intervals computed over the whole), catalogue.json, report.md and report.html are
the bytes a single run with the same answers writes. After it, in a DVC project: `dvc commit -f
evaluate` records these outputs for the stage, as `dvc repro` would have.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import settings as settings_mod
from ..app.prompts import load_all
from ..errors import UserError
from ..evaluation import golden, runner, shards
from .evaluate import Outputs, shard_header, summary, write_outputs


def main(argv: list[str] | None = None, prog: str = "merge") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--shard-dir", type=Path, default=Path("eval/shards"), help="where the shards wrote")
    parser.add_argument("--eval-set", type=Path, default=Path("data/processed/eval_set.jsonl"))
    parser.add_argument("--prompts", type=Path, default=Path("prompts"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    Outputs.add_arguments(parser)
    parser.add_argument("--check", action="store_true", help="exit 1 when an absolute threshold is missed")
    args = parser.parse_args(argv)

    config = settings_mod.load(args.params)
    prompts = load_all(args.prompts)
    examples = golden.load(args.eval_set)
    expected = shard_header(config, prompts, args.eval_set, (0, 0))
    order = [(t.example.id, t.repeat) for t in runner.plan(examples, config.eval.repeats)]
    results = shards.collect(args.shard_dir, expected, order)
    errors = sum(r.error is not None for r in results)
    # Each shard kept to its own share of errors; the whole must too, as one run would have.
    if errors > config.eval.max_error_rate * len(results):
        raise UserError(
            f"{args.shard_dir}: {errors} of {len(results)} calls errored, above "
            f"eval.max_error_rate={config.eval.max_error_rate}: no metrics written"
        )
    values, missed = write_outputs(results, config, prompts, Outputs.of(args), examples=examples)
    cached = sum(r.cached for r in results)
    print(summary(values, f"merged from {args.shard_dir}, {cached} cached"))
    for item in missed:
        print(f"threshold missed: {item}", file=sys.stderr if args.check else sys.stdout)
    return 1 if (args.check and missed) else 0
