"""Stage `evaluate`: eval set + prompts + the app -> metrics.json, catalogue.json, results.jsonl, report.md.

The stage always writes its outputs, even when thresholds are missed, so a bad head can still be
reported and gated; `--check` (for CI scripts) makes it exit 1 when they are missed. Results are
appended to results.jsonl as they arrive, so a run that stops early (Ctrl-C, too many errors, a
refused key) keeps what finished - but writes no metrics.json: numbers from part of the golden set
must not pass for a result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from .. import settings as settings_mod
from ..app.loader import load_app
from ..app.prompts import load_all
from ..app.runtime import client_chat, connect, endpoint_identity, sampling
from ..errors import UserError, quote
from ..evaluation import catalogue, golden, metrics, report, runner
from ..evaluation.cache import ResponseCache
from ..evaluation.results import Result, dumps


def check_tag_metrics(
    config: settings_mod.Settings, examples: list[golden.Example], params: Path, eval_set: Path
) -> None:
    """A `tag_<tag>_pass_rate` in params.yaml must name a tag of the golden set: a typo there would
    read as a missing metric (a missed bar, a gate that cannot judge) only after every model call."""
    tags = {tag for example in examples for tag in example.tags}
    for keys, name in settings_mod.metric_names(config):
        tag = catalogue.tag_of(name)
        if tag is not None and tag not in tags:
            have = ", ".join(sorted(tags)[:20]) or "none"
            raise settings_mod.SettingsError(
                f"{settings_mod.locate(keys, params)}: no example in {eval_set} is tagged {quote(tag)} (tags: {have})"
            )


def main(argv: list[str] | None = None, prog: str = "evaluate") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--eval-set", type=Path, default=Path("data/processed/eval_set.jsonl"))
    parser.add_argument("--prompts", type=Path, default=Path("prompts"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--metrics", type=Path, default=Path("eval/metrics.json"))
    parser.add_argument("--catalogue", type=Path, default=Path("eval/catalogue.json"))
    parser.add_argument("--results", type=Path, default=Path("eval/results.jsonl"))
    parser.add_argument("--report", type=Path, default=Path("eval/report.md"))
    parser.add_argument("--no-cache", action="store_true", help="call the model for every example")
    parser.add_argument("--check", action="store_true", help="exit 1 when an absolute threshold is missed")
    args = parser.parse_args(argv)

    config = settings_mod.load(args.params)
    prompts = load_all(args.prompts)
    app = load_app(config.app.entry)
    examples = golden.load(args.eval_set)
    golden.check_targets(examples, prompts, app.flows, str(args.eval_set))
    check_tag_metrics(config, examples, args.params, args.eval_set)
    # The app's data files, read as the service reads them from a version, here from this checkout.
    data = app.load(args.params.parent) if any(e.flow for e in examples) else None
    model = config.model
    if model.api_key_env:
        model.api_key()  # a missing key is a clear error before any call, not 38 HTTP 401s
    cache = ResponseCache(config.eval.cache_dir, enabled=not args.no_cache)
    evaluation = runner.Evaluation(
        solver=runner.app_solver(prompts, app, data),
        cache=cache,
        keying=runner.Keying(endpoint_identity(model), model.name, sampling(model)),
        versions=runner.target_versions(prompts, app),
    )
    tasks = runner.plan(examples, config.eval.repeats)

    for path in (args.metrics, args.catalogue, args.results, args.report):
        path.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("w") as results_file, cache:

        def record(result: Result) -> None:
            results_file.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
            results_file.flush()

        replayed = runner.replay(tasks, evaluation)
        # Everything cached: no model server, no HTTP client (a re-run must be instant).
        nothing_left = not replayed[1]
        with contextlib.nullcontext() if nothing_left else connect(model, config.eval) as client:
            outcome = runner.run(
                tasks, evaluation, None if client is None else client_chat(client, model),
                concurrency=config.eval.concurrency, max_error_rate=config.eval.max_error_rate,
                on_result=record, replayed=replayed,
            )  # fmt: skip
    # Rewrite in plan order (the live file was in completion order).
    args.results.write_text(dumps(outcome.results))

    prices = {"input": model.input_usd_per_1m_tokens, "output": model.output_usd_per_1m_tokens}
    values = metrics.compute(outcome.results, prices)
    missed = metrics.missed_thresholds(values, config.thresholds.min, config.thresholds.max)
    stopped = f"interrupted, {outcome.counts()}" if outcome.interrupted else outcome.aborted
    if outcome.partial:
        # Numbers from part of the golden set must not pass for a result (nor the catalogue of
        # them): the finished calls are in results.jsonl and in the cache, and the next run resumes.
        args.metrics.unlink(missing_ok=True)
        args.catalogue.unlink(missing_ok=True)
    else:
        args.metrics.write_text(json.dumps(values, indent=2) + "\n")
        args.catalogue.write_text(catalogue.dumps(metrics.catalogue_of(values, outcome.results)))
    versions = {p.id: p.version for p in prompts.values()}
    args.report.write_text(
        report.render(
            values, outcome.results, missed=missed, prompt_versions=versions, model=model.name, aborted=stopped
        )
    )
    cached = sum(r.cached for r in outcome.results)
    made = f"{outcome.calls_made} to the model, {cached} cached"
    if outcome.partial:
        print(f"{outcome.counts()} ({made}); no metrics written")
    else:
        print(
            f"{values['calls']} calls ({made}), pass_rate {values['pass_rate']:.3f}, "
            f"error_rate {values['error_rate']:.3f}, p95 {values['latency_p95_ms']:.0f} ms"
        )
    if outcome.interrupted:
        print(f"{prog}: {stopped}; the finished ones are kept and cached", file=sys.stderr)
        return 130
    if outcome.aborted:
        raise UserError(outcome.aborted)
    for item in missed:
        print(f"threshold missed: {item}", file=sys.stderr if args.check else sys.stdout)
    return 1 if (args.check and missed) else 0
