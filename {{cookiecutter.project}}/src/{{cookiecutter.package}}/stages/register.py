"""Stage `register`: record the evaluated app version in MLflow and models/version.json, only when
the absolute thresholds in params.yaml pass (a version that misses one is refused, exit 1).

MLflow gets one run (params, metrics, the eval's results, report and metric catalogue, the served
files), the prompts in its prompt registry, and a model version of the app aliased `candidate`,
tagged with its lineage: the git commit (what a deploy resolves, registry/release.py), a hash per
dvc.lock stage, the eval set's hash and, in CI, the workflow run.

`--dry-run` checks everything a registration would (bars, servability) and touches no store: what a
pull request's CI runs, since only the protected branch registers versions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import settings as settings_mod
from ..app.loader import load_app
from ..errors import UserError
from ..evaluation import catalogue
from ..evaluation.metrics import missed_thresholds
from ..registry import store
from ..registry.versions import export, servable


def version_record(
    config: settings_mod.Settings, metrics: dict[str, Any], prompt_versions: dict[str, str], data_sha256: str
) -> dict[str, Any]:
    model = config.model
    return {
        "model": model.name,
        "endpoint": "embedded" if model.embedded else store.redact(model.base_url),
        "sampling": {"temperature": model.temperature, "max_tokens": model.max_tokens, "seed": model.seed},
        "app": config.app.entry or "prompts",
        "prompts": prompt_versions,
        "data_sha256": data_sha256,
        "metrics": {k: metrics[k] for k in ("pass_rate", "error_rate", "latency_p95_ms") if k in metrics},
    }


def ci_tags(env: Mapping[str, str]) -> dict[str, str]:
    """Which CI run registered the version (GitHub Actions' variables), so it links to its eval."""
    if not env.get("GITHUB_RUN_ID"):
        return {}
    server, repo = env.get("GITHUB_SERVER_URL", "https://github.com"), env.get("GITHUB_REPOSITORY", "")
    tags = {
        "ci.run": f"{server}/{repo}/actions/runs/{env['GITHUB_RUN_ID']}",
        "ci.event": env.get("GITHUB_EVENT_NAME", ""),
    }
    return {k: v for k, v in tags.items() if v}


def threshold_problems(config: settings_mod.Settings, known: dict[str, catalogue.Metric], source: str) -> list[str]:
    """Bars that cannot mean what they say: a metric no evaluation can produce (a typo would read as
    a missed bar), or a bar on the wrong side of a metric (a minimum on a lower-is-better one)."""
    from ..evaluation.scorers import SCORERS

    problems = []
    for bound, bars in (("min", config.thresholds.min), ("max", config.thresholds.max)):
        for name in bars:
            metric = known.get(name)
            if metric is None and not catalogue.known_name(name, SCORERS):
                problems.append(f"thresholds.{bound}.{name}: no such metric (see {source} and the README)")
            elif metric is not None and metric.better == (catalogue.LOWER if bound == "min" else catalogue.HIGHER):
                other = "max" if bound == "min" else "min"
                problems.append(
                    f"thresholds.{bound}.{name}: {name} is better {metric.better}: bar it under thresholds.{other}"
                )
    return problems


def main(argv: list[str] | None = None, prog: str = "register") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--metrics", type=Path, default=Path("eval/metrics.json"))
    parser.add_argument("--catalogue", type=Path, default=Path("eval/catalogue.json"))
    parser.add_argument("--results", type=Path, default=Path("eval/results.jsonl"))
    parser.add_argument("--report", type=Path, default=Path("eval/report.md"))
    parser.add_argument(
        "--html", type=Path, default=Path("eval/report.html"), help="the report page, logged with the run"
    )
    parser.add_argument("--manifest", type=Path, default=Path("data/processed/manifest.json"))
    parser.add_argument("--lock", type=Path, default=Path("dvc.lock"), help="lineage: a hash per stage")
    parser.add_argument("--out", type=Path, default=Path("models/version.json"))
    parser.add_argument("--dry-run", action="store_true", help="check bars and servability; register nothing")
    args = parser.parse_args(argv)
    config = settings_mod.load(args.params)
    metrics = json.loads(args.metrics.read_text())
    try:
        known = catalogue.parse(args.catalogue.read_text(), str(args.catalogue))
    except OSError as exc:
        raise UserError(f"{args.catalogue}: cannot read ({exc.strerror}); run the evaluate stage first") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    problems = threshold_problems(config, known, str(args.catalogue))
    if problems:
        raise UserError("; ".join(problems))
    missed = missed_thresholds(metrics, config.thresholds.min, config.thresholds.max)
    if missed:
        print(f"{prog}: refused: thresholds missed: " + "; ".join(map(str, missed)), file=sys.stderr)
        return 1
    # Refused here, not when a pod loads it: the served version must have what the service needs.
    root = args.params.parent
    app = load_app(config.app.entry)
    prompts, _ = servable(app, root)
    versions = {p.id: p.version for p in prompts.values()}
    if args.dry_run:
        print(f"{prog}: would register (bars met, servable); --dry-run: nothing registered")
        return 0
    data_sha = json.loads(args.manifest.read_text())["sha256"]
    record = version_record(config, metrics, versions, data_sha)

    uri = config.registry.resolved_tracking_uri()
    stages = store.stage_hashes(args.lock.read_text()) if args.lock.is_file() else {}
    tags = store.lineage_tags(git_commit=store.git_sha(), stages=stages, data_sha256=data_sha, prompt_versions=versions)
    tags |= ci_tags(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        export(root, Path(tmp))
        registered = store.register(
            uri=uri, model_name=config.registry.model_name, model=config.model, prompts=prompts,
            version_dir=Path(tmp), metrics=metrics, artifacts=[args.metrics, args.catalogue, args.results, args.report, args.html],
            tags=tags,
        )  # fmt: skip
    record["registry"] = {
        "tracking_uri": store.redact(uri),
        "model_name": registered.model_name,
        "version": registered.version,
        "run_id": registered.run_id,
        "alias": store.CANDIDATE,
        "prompt_registry_versions": registered.prompt_versions,
    }
    write_record(args.out, json.dumps(record, indent=2) + "\n")
    for run_id in registered.failed_runs:
        print(f"{prog}: run {run_id} of an interrupted register was left RUNNING: marked FAILED", file=sys.stderr)
    print(f"registered {registered.model_name} version {registered.version} as {store.CANDIDATE} ({args.out})")
    return 0


def write_record(path: Path, text: str) -> None:
    """Write `path` whole or not at all: written beside it, then renamed over it, so a register
    that fails (or is killed) midway leaves the last registered record as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
