"""Stage `evaluate`: eval set + prompts + the app -> metrics.json, catalogue.json, results.jsonl, report.md.

The stage always writes its outputs, even when thresholds are missed, so a bad head can still be
reported and gated; `--check` (for CI scripts) makes it exit 1 when they are missed. Results are
appended to results.jsonl as they arrive, so a run that stops early (Ctrl-C, too many errors, a
refused key) keeps what finished - but writes no metrics.json: numbers from part of the golden set
must not pass for a result.

`--shard I/N --shard-dir DIR` (or `--shard-index-env JOB_COMPLETION_INDEX`, N = eval.shards)
answers only shard I's examples (evaluation/shards.py) and writes DIR/shard-I-of-N.jsonl, nothing
else; `merge` (stages/merge.py) then writes what a single run would. With `eval.cache_url`, the
shared response cache is read before the calls and this run's new answers are added after them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import settings as settings_mod
from ..app.loader import load_app
from ..app.prompts import Prompt, load_all
from ..app.runtime import client_chat, connect, endpoint_identity, sampling
from ..errors import UserError, quote
from ..evaluation import catalogue, golden, metrics, report, runner, shards
from ..evaluation.cache import ResponseCache, pull, push
from ..evaluation.results import Result, dumps
from ..judge.command import keying as judge_keying
from ..judge.command import setup as judge_setup
from ..viewer import eval_page


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


@dataclass(frozen=True)
class Outputs:
    """The files a whole evaluation writes (a single run, or a merge of shards)."""

    metrics: Path
    catalogue: Path
    results: Path
    report: Path
    html: Path  # the viewer's page (viewer/eval_page.py)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--metrics", type=Path, default=Path("eval/metrics.json"))
        parser.add_argument("--catalogue", type=Path, default=Path("eval/catalogue.json"))
        parser.add_argument("--results", type=Path, default=Path("eval/results.jsonl"))
        parser.add_argument("--report", type=Path, default=Path("eval/report.md"))
        parser.add_argument("--html", type=Path, default=Path("eval/report.html"), help="the report as a web page")

    @classmethod
    def of(cls, args: argparse.Namespace) -> Outputs:
        return cls(args.metrics, args.catalogue, args.results, args.report, args.html)


def write_outputs(
    results: list[Result],
    config: settings_mod.Settings,
    prompts: Mapping[str, Prompt],
    outputs: Outputs,
    stopped: str | None = None,
    examples: Sequence[golden.Example] = (),
) -> tuple[dict[str, float | int], list[metrics.Miss]]:
    """results.jsonl, metrics.json, catalogue.json, report.md and report.html (with `examples`'
    inputs and expectations) from results in plan order: the one function a single run and a merge
    of shards both write with, so they write the same bytes.
    `stopped` (why a run ended early): no metrics or catalogue, and the report says why."""
    for path in (outputs.metrics, outputs.catalogue, outputs.results, outputs.report, outputs.html):
        path.parent.mkdir(parents=True, exist_ok=True)
    outputs.results.write_text(dumps(results))
    model = config.model
    prices = {"input": model.input_usd_per_1m_tokens, "output": model.output_usd_per_1m_tokens}
    judge = config.judge
    judge_prices = {"input": judge.input_usd_per_1m_tokens, "output": judge.output_usd_per_1m_tokens}
    values = metrics.compute(results, prices, judge_prices)
    missed = metrics.missed_thresholds(values, config.thresholds.min, config.thresholds.max)
    if stopped:
        # Numbers from part of the golden set must not pass for a result (nor the catalogue of
        # them): the finished calls are in results.jsonl and in the cache, and the next run resumes.
        outputs.metrics.unlink(missing_ok=True)
        outputs.catalogue.unlink(missing_ok=True)
    else:
        outputs.metrics.write_text(json.dumps(values, indent=2) + "\n")
        outputs.catalogue.write_text(catalogue.dumps(metrics.catalogue_of(values, results)))
    versions = {p.id: p.version for p in prompts.values()}
    outputs.report.write_text(
        report.render(values, results, missed=missed, prompt_versions=versions, model=model.name, aborted=stopped)
    )
    thresholds = config.thresholds
    page = eval_page.render(
        values, results, examples, prompts, minimum=thresholds.min, maximum=thresholds.max, missed=missed,
        model=model.name, aborted=stopped,
    )  # fmt: skip
    outputs.html.write_text(page)
    return values, missed


def summary(values: Mapping[str, float | int], made: str) -> str:
    return (
        f"{values['calls']} calls ({made}), pass_rate {values['pass_rate']:.3f}, "
        f"error_rate {values['error_rate']:.3f}, p95 {values['latency_p95_ms']:.0f} ms"
    )


def shard_header(
    config: settings_mod.Settings, prompts: Mapping[str, Prompt], eval_set: Path, shard: tuple[int, int]
) -> shards.Header:
    """What a shard's answers are made from (a merge checks every shard against its own)."""
    return shards.Header(
        shard=shard[0],
        shards=shard[1],
        eval_set_sha256=shards.file_sha256(eval_set),
        prompt_versions={p.id: p.version for p in prompts.values()},
        settings_sha256=shards.settings_hash(
            # The judge shapes each result's verdict; with none, the hash is what it always was.
            {"app": config.app, "model": config.model, "eval": config.eval}
            | ({"judge": config.judge} if config.judge.enabled else {})
        ),
    )


def which_shard(args: argparse.Namespace, config: settings_mod.Settings) -> tuple[int, int] | None:
    if args.shard and args.shard_index_env:
        raise UserError("--shard and --shard-index-env: give one")
    if args.shard_index_env:
        value = os.environ.get(args.shard_index_env, "")
        if not value.strip().isdigit():
            raise UserError(f"--shard-index-env: {args.shard_index_env} must hold a shard index, got {quote(value)}")
        return shards.parse_spec(f"{value}/{config.eval.shards}")
    if args.shard:
        return shards.parse_spec(args.shard)
    return None


def main(argv: list[str] | None = None, prog: str = "evaluate") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--eval-set", type=Path, default=Path("data/processed/eval_set.jsonl"))
    parser.add_argument("--prompts", type=Path, default=Path("prompts"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    Outputs.add_arguments(parser)
    parser.add_argument("--no-cache", action="store_true", help="call the model for every example")
    parser.add_argument("--check", action="store_true", help="exit 1 when an absolute threshold is missed")
    parser.add_argument(
        "--shard", metavar="I/N", help="only shard I (0-based) of N; writes --shard-dir/shard-I-of-N.jsonl"
    )
    parser.add_argument("--shard-index-env", metavar="NAME",
                        help="I from this env var (JOB_COMPLETION_INDEX), N = eval.shards")  # fmt: skip
    parser.add_argument("--shard-dir", type=Path, default=Path("eval/shards"), help="where a shard writes its file")
    args = parser.parse_args(argv)

    config = settings_mod.load(args.params)
    shard = which_shard(args, config)
    prompts = load_all(args.prompts)
    app = load_app(config.app.entry)
    examples = golden.load(args.eval_set)
    golden.check_targets(examples, prompts, app.flows, str(args.eval_set))
    check_tag_metrics(config, examples, args.params, args.eval_set)
    outputs = Outputs.of(args)
    shard_file = args.shard_dir / shards.file_name(*shard) if shard else None
    whole = len(examples) * config.eval.repeats  # the error budget is a share of all shards' calls
    if shard is not None and shard_file is not None:
        examples = [e for e in examples if shards.shard_of(e.id, shard[1]) == shard[0]]
        shard_file.unlink(missing_ok=True)  # a stale shard must not be merged with this run's others
    # The app's data files, read as the service reads them from a version, here from this checkout.
    data = app.load(args.params.parent) if any(e.flow for e in examples) else None
    model = config.model
    if model.api_key_env:
        model.api_key()  # a missing key is a clear error before any call, not 38 HTTP 401s
    cache = ResponseCache(config.eval.cache_dir, enabled=not args.no_cache)
    if config.eval.cache_url and not args.no_cache:
        pulled = pull(config.eval.cache_url, cache.root)  # an unreachable URL fails here, before any call
        print(f"{pulled} cache segment(s) from {config.eval.cache_url}")
    judge = judge_setup(config, prompts, args.params.parent)
    judge_model = config.judge.as_model()
    evaluation = runner.Evaluation(
        solver=runner.app_solver(prompts, app, data),
        cache=cache,
        keying=runner.Keying(endpoint_identity(model), model.name, sampling(model)),
        versions=runner.target_versions(prompts, app),
        judge=judge,
        judge_keying=judge_keying(config.judge) if judge else None,
    )
    tasks = runner.plan(examples, config.eval.repeats)

    # A shard's results go to its shard file only when it finished; a whole run's stream into
    # results.jsonl as they arrive, so a run that stops keeps what finished.
    live = outputs.results if shard is None else Path(os.devnull)
    live.parent.mkdir(parents=True, exist_ok=True)
    with live.open("w") as results_file, cache:

        def record(result: Result) -> None:
            results_file.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
            results_file.flush()

        replayed = runner.replay(tasks, evaluation)
        # Everything cached: no model server, no HTTP client (a re-run must be instant).
        nothing_left = not replayed[1]
        judging = judge is not None and not nothing_left
        with (
            contextlib.nullcontext() if nothing_left else connect(model, config.eval) as client,
            connect(judge_model, config.eval) if judging else contextlib.nullcontext() as judge_client,
        ):
            outcome = runner.run(
                tasks, evaluation, None if client is None else client_chat(client, model),
                concurrency=config.eval.concurrency, max_error_rate=config.eval.max_error_rate,
                on_result=record, replayed=replayed, whole=whole,
                judge_chat=None if judge_client is None else client_chat(judge_client, judge_model),
            )  # fmt: skip
    if config.eval.cache_url and not args.no_cache:
        push(config.eval.cache_url, cache.segment)  # even after a stop: what finished is not asked again

    stopped = f"interrupted, {outcome.counts()}" if outcome.interrupted else outcome.aborted
    cached = sum(r.cached for r in outcome.results)
    made = f"{outcome.calls_made} to the model, {cached} cached"
    if shard is not None and shard_file is not None and not stopped:
        # Written aside and renamed: a merge never reads half a shard.
        shard_file.parent.mkdir(parents=True, exist_ok=True)
        partial = shard_file.with_name(shard_file.name + ".part")
        partial.write_text(shards.dumps_shard(shard_header(config, prompts, args.eval_set, shard), outcome.results))
        partial.replace(shard_file)
        print(f"shard {shard[0]} of {shard[1]}: {outcome.counts()} ({made}) -> {shard_file}")
        return 0
    missed: list[metrics.Miss] = []
    if shard is not None:
        print(f"shard {shard[0]} of {shard[1]}: {outcome.counts()} ({made}); no shard file written")
    else:
        values, missed = write_outputs(outcome.results, config, prompts, outputs, stopped, examples)
        if stopped:
            print(f"{outcome.counts()} ({made}); no metrics written")
        else:
            print(summary(values, made))
    if outcome.interrupted:
        print(f"{prog}: {stopped}; the finished ones are kept and cached", file=sys.stderr)
        return 130
    if outcome.aborted:
        raise UserError(outcome.aborted)
    for item in missed:
        print(f"threshold missed: {item}", file=sys.stderr if args.check else sys.stdout)
    return 1 if (args.check and missed) else 0
