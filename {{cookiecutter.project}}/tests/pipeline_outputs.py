"""What `preprocess` and `evaluate` leave behind, written directly (no model), and `register` run on it:
tests of the registry and of what builds on it (promotion) start from a real registered candidate."""

import json
import subprocess
from pathlib import Path

from {{ cookiecutter.package }}.evaluation import catalogue
from {{ cookiecutter.package }}.settings import load
from {{ cookiecutter.package }}.stages import register as register_stage


def write_eval_outputs(root: Path, pass_rate: float = 0.9) -> None:
    """What `evaluate` and `preprocess` leave for `register` (written here: no model needed): every
    metric the project's thresholds name clears its bar, except `pass_rate`, which is as given."""
    (root / "eval").mkdir(exist_ok=True)
    thresholds = load(root / "params.yaml").thresholds
    metrics = {"examples": 2, "calls": 2, "pass_rate": pass_rate, "error_rate": 0.0, "json_schema_rate": 1.0}
    metrics |= {"latency_p95_ms": 12.5, "cost_usd": 0.0}
    metrics |= {name: 1.0 for name in thresholds.min if name not in metrics}
    metrics |= {name: 0.0 for name in thresholds.max if name not in metrics}
    (root / "eval/metrics.json").write_text(json.dumps(metrics))
    tags = [n[len("tag_") : -len("_pass_rate")] for n in metrics if n.startswith("tag_") and n.endswith("_pass_rate")]
    scorers = {
        n[: -len("_rate")]: "a check"
        for n in metrics
        if n.endswith("_rate") and not n.startswith("tag_") and n not in catalogue.FIXED_NAMES
    }
    known = catalogue.build(metrics, scorers, tags)
    (root / "eval/catalogue.json").write_text(catalogue.dumps(known))
    (root / "eval/results.jsonl").write_text('{"id": "smoke-01", "passed": true}\n')
    (root / "eval/report.md").write_text("# Eval report\n")
    (root / "eval/report.html").write_text("<!DOCTYPE html><title>Eval report</title>\n")
    (root / "data/processed").mkdir(parents=True, exist_ok=True)
    (root / "data/processed/manifest.json").write_text(json.dumps({"examples": 2, "sha256": "ab" * 32}))


def register(root: Path) -> dict:
    args = ["--params", "params.yaml", "--metrics", "eval/metrics.json", "--catalogue", "eval/catalogue.json"]
    args += ["--results", "eval/results.jsonl", "--report", "eval/report.md", "--html", "eval/report.html"]
    args += ["--manifest", "data/processed/manifest.json", "--lock", "dvc.lock", "--out", "models/version.json"]
    assert register_stage.main(args) == 0
    return json.loads((root / "models/version.json").read_text())


def commit_all(root: Path, message: str = "test") -> str:
    """Commit everything in `root` (a git repository from the first call); returns the commit."""
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@test.invalid"]
    if not (root / ".git").exists():
        subprocess.run([*git, "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], cwd=root, check=True)
    return subprocess.run(
        [*git, "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True, text=True
    ).stdout.strip()
