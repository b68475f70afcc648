"""Stage `register`: record the evaluated app version in MLflow and models/version.json, only when
the absolute thresholds in params.yaml pass (a version that misses one is refused, exit 1).

MLflow gets one run (params, metrics, the eval's results and report, the prompts), the prompts in
its prompt registry, and a model version of the app aliased `candidate`, tagged with its lineage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import registry
from .. import settings as settings_mod
from ..evaluation.metrics import missed_thresholds
from ..versions import servable


def version_record(
    config: settings_mod.Settings, metrics: dict[str, Any], prompt_versions: dict[str, str], data_sha256: str
) -> dict[str, Any]:
    model = config.model
    return {
        "model": model.name,
        "endpoint": "embedded" if model.embedded else registry.redact(model.base_url),
        "sampling": {"temperature": model.temperature, "max_tokens": model.max_tokens, "seed": model.seed},
        "prompts": prompt_versions,
        "data_sha256": data_sha256,
        "metrics": {k: metrics[k] for k in ("pass_rate", "error_rate", "latency_p95_ms") if k in metrics},
    }


def main(argv: list[str] | None = None, prog: str = "register") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--metrics", type=Path, default=Path("eval/metrics.json"))
    parser.add_argument("--results", type=Path, default=Path("eval/results.jsonl"))
    parser.add_argument("--report", type=Path, default=Path("eval/report.md"))
    parser.add_argument("--prompts", type=Path, default=Path("prompts"))
    parser.add_argument("--policies", type=Path, default=Path("data/policies.yaml"), help="served with the prompts")
    parser.add_argument("--manifest", type=Path, default=Path("data/processed/manifest.json"))
    parser.add_argument("--lock", type=Path, default=Path("dvc.lock"), help="lineage: a hash per stage")
    parser.add_argument("--out", type=Path, default=Path("models/version.json"))
    args = parser.parse_args(argv)
    config = settings_mod.load(args.params)
    metrics = json.loads(args.metrics.read_text())
    missed = missed_thresholds(metrics, config.thresholds.min, config.thresholds.max)
    if missed:
        print(f"{prog}: refused: thresholds missed: " + "; ".join(map(str, missed)), file=sys.stderr)
        return 1
    # Refused here, not when a pod loads it: the served version must have what the service needs.
    prompts, _ = servable(args.prompts, args.policies)
    versions = {p.id: p.version for p in prompts.values()}
    data_sha = json.loads(args.manifest.read_text())["sha256"]
    record = version_record(config, metrics, versions, data_sha)

    uri = config.registry.resolved_tracking_uri()
    stages = registry.stage_hashes(args.lock.read_text()) if args.lock.is_file() else {}
    tags = registry.lineage_tags(
        git_commit=registry.git_sha(), stages=stages, data_sha256=data_sha, prompt_versions=versions
    )
    registered = registry.register(
        uri=uri, model_name=config.registry.model_name, model=config.model, prompts=prompts,
        prompts_dir=args.prompts, metrics=metrics, artifacts=[args.metrics, args.results, args.report], tags=tags,
        app_files={"params.yaml": args.params, "data/policies.yaml": args.policies},
    )  # fmt: skip
    record["registry"] = {
        "tracking_uri": registry.redact(uri),
        "model_name": registered.model_name,
        "version": registered.version,
        "run_id": registered.run_id,
        "alias": registry.CANDIDATE,
        "prompt_registry_versions": registered.prompt_versions,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"registered {registered.model_name} version {registered.version} as {registry.CANDIDATE} ({args.out})")
    return 0
