"""What `preprocess` and `evaluate` leave behind, written directly (no model), and `register` run on it:
tests of the registry and of what builds on it (promotion) start from a real registered candidate."""

import json
from pathlib import Path

from {{ cookiecutter.package }}.stages import register as register_stage


def write_eval_outputs(root: Path, pass_rate: float = 0.9) -> None:
    """What `evaluate` and `preprocess` leave for `register` (written here: no model needed)."""
    (root / "eval").mkdir(exist_ok=True)
    metrics = {"examples": 2, "calls": 2, "pass_rate": pass_rate, "error_rate": 0.0, "json_schema_rate": 1.0}
    metrics |= {"tag_intent_pass_rate": pass_rate, "latency_p95_ms": 12.5, "cost_usd": 0.0}
    (root / "eval/metrics.json").write_text(json.dumps(metrics))
    (root / "eval/results.jsonl").write_text('{"id": "intent-01", "passed": true}\n')
    (root / "eval/report.md").write_text("# Eval report\n")
    (root / "data/processed").mkdir(parents=True, exist_ok=True)
    (root / "data/processed/manifest.json").write_text(json.dumps({"examples": 2, "sha256": "ab" * 32}))


def register(root: Path) -> dict:
    args = ["--params", "params.yaml", "--metrics", "eval/metrics.json", "--results", "eval/results.jsonl"]
    args += ["--report", "eval/report.md", "--prompts", "prompts", "--manifest", "data/processed/manifest.json"]
    args += ["--policies", "data/policies.yaml", "--lock", "dvc.lock", "--out", "models/version.json"]
    assert register_stage.main(args) == 0
    return json.loads((root / "models/version.json").read_text())
