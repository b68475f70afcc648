"""The sharded eval as CI runs it: the `plan` job, one `shard` job per matrix value, then the `eval`
job merging their artifacts and gating, each job's own `run:` steps on a fresh "runner" (a clone).

main holds a baseline (`dvc repro evaluate` committed). The PR's branch sets `eval.shards: 2` and a
shared response cache (`eval.cache_url`, a local directory standing for the bucket); the model is the
project's fake model on 127.0.0.1. The merged eval/ files must be those one `make evaluate` writes
with the same answers (a last clone answering from the shared cache), byte for byte (but for each
result's `cached` flag), and fresh for the gate: `dvc commit` recorded them in dvc.lock. ~20 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.baked import fake_model, set_param
from tests.bakery import link_venv
from tests.conftest import run
from tests.workflow_runner import Event, checkout, matrix_values, run_job

pytestmark = [pytest.mark.slow, pytest.mark.long]
GIT = ["git", "-c", "user.name=shard test", "-c", "user.email=shard@test.invalid"]
OUTPUTS = ("metrics.json", "catalogue.json", "results.jsonl", "report.md", "report.html")


def commit(project: Path, message: str) -> None:
    run(project, "git", "add", "-A")
    run(project, *GIT, "commit", "-q", "-m", message)


def test_sharded_pr_merges_what_one_run_writes_and_gates_it(ready, tmp_path: Path) -> None:
    project = ready(project="shard-demo")
    shared = tmp_path / "shared-cache"
    with fake_model(project) as model:
        run(project, "python", "-m", "dvc", "repro", "evaluate")
        commit(project, "Baseline: eval results on main")
        run(project, "git", "checkout", "-q", "-b", "sharded")
        set_param(project, "shards", "2")
        set_param(project, "cache_url", f'"{shared}"')
        commit(project, "eval: two shards, one shared cache")
        calls_before = model.calls()

        event = Event("pull_request", "refs/pull/8/merge", base_ref="main")
        artifacts = tmp_path / "artifacts"

        def job(job_id: str, name: str, **matrix: str):
            clone = checkout(project, "sharded", tmp_path / name / "shard-demo")
            event.matrix = matrix
            store = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / name / 'mlflow.db'}"}
            return clone, run_job(clone, job_id, event, tmp_path / name, store, artifacts=artifacts)

        _, plan = job("plan", "plan")
        assert plan.outputs == {"shards": "2", "matrix": "[0, 1]"}, plan.outputs
        event.needs["plan"] = plan.outputs
        workflow = (project / ".github" / "workflows" / "ci.yml").read_text()

        shard_job = yaml.safe_load(workflow)["jobs"]["shard"]
        for shard in matrix_values(shard_job, "shard", event):
            job("shard", f"shard-{shard}", shard=shard)
        assert sorted(p.name for p in artifacts.iterdir()) == ["eval-shard-0", "eval-shard-1"]
        shard_calls = model.calls() - calls_before
        assert shard_calls > 0

        event.needs["shard"] = {}
        merged, ev = job("eval", "eval")
        assert ev.outcomes["evaluate"] == ev.outcomes["release-check"] == "success", ev.outcomes
        assert "merge --shard-dir .cache/shards" in ev.logs["evaluate"]
        assert model.calls() - calls_before == shard_calls, "the merge job called the model"
        gate = (merged / "eval" / "gate.md").read_text()
        assert gate.startswith("## ✅ Gate passed (base `origin/main`)"), gate
        assert "is stale" not in gate
        stored = artifacts / "eval-results" / "eval"
        assert sorted(p.name for p in stored.iterdir()) == sorted((*OUTPUTS, "gate.md", "gate.html"))

        # One run of the whole set (another runner, answering from the shared cache): the same files.
        single = checkout(project, "sharded", tmp_path / "single" / "shard-demo")
        link_venv(single)
        run(single, "make", "--no-print-directory", "evaluate")
        assert model.calls() - calls_before == shard_calls, "the single run missed the shared cache"
    for name in ("metrics.json", "catalogue.json", "report.md", "report.html"):
        assert (merged / "eval" / name).read_bytes() == (single / "eval" / name).read_bytes(), name
    # results.jsonl: the same lines in the same order; only `cached` tells where each answer came
    # from (the shards asked the model, the single run read their answers from the shared cache).
    lines = {
        side: (root / "eval" / "results.jsonl").read_text().splitlines()
        for side, root in (("merged", merged), ("single", single))
    }
    golden = (single / "eval" / "golden.jsonl").read_text().splitlines()
    assert len(lines["merged"]) == len(lines["single"]) == len(golden)
    for ours, theirs in zip(lines["merged"], lines["single"], strict=True):
        assert ours.replace('"cached": false', '"cached": true') == theirs
    assert json.loads((merged / "eval" / "metrics.json").read_text())["pass_rate"] is not None
    # dvc.lock records the merged outputs as the stage's: `dvc status` finds nothing to re-run.
    status = run(merged, "python", "-m", "dvc", "status", "evaluate", "--json")
    assert json.loads(status.stdout or "{}") == {}, status.stdout
