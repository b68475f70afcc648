"""A baked project's pipeline for real: `dvc repro` -> MLflow (sqlite), promote, rollback, plots.

The model is the project's fake OpenAI-compatible server on 127.0.0.1 (it knows the golden set, so
the thresholds pass and its call count shows what reached the model), except in the one test
that loads the registered app on the embedded llama.cpp model.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.baked import fake_model, local_store, private_project
from tests.conftest import run

pytestmark = [pytest.mark.slow, pytest.mark.long]
NAME = "support-bot"
QUESTION = "Where is my order? I placed it last Tuesday."


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A default bake after one `dvc repro` on the fake model (the server stays up for the module)."""
    project = private_project(tmp_path_factory.mktemp("pipeline"))
    env = local_store(project)
    with fake_model(project) as model:
        run(project, "git", "-c", "user.name=test", "-c", "user.email=test@test.invalid", "commit", "-qam",
            "test: the model is the local fake server")  # fmt: skip
        first = run(project, "python", "-m", "dvc", "repro", env=env)
        yield SimpleNamespace(project=project, env=env, model=model, first=first)


def client(pipeline):
    from mlflow import MlflowClient

    uri = pipeline.env["MLFLOW_TRACKING_URI"]
    return MlflowClient(uri, registry_uri=uri)


def cli(pipeline, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(pipeline.project, "support-bot", *args, check=check, env=pipeline.env)


def golden_count(project: Path, target: str, key: str = "prompt") -> int:
    """How many golden examples call `target` (a prompt; a flow with key="flow")."""
    lines = (project / "eval/golden.jsonl").read_text().splitlines()
    return sum(json.loads(line).get(key) == target for line in lines if line.strip())


FLOW_CALLS = 3  # the support flow: classify, extract, answer


def test_repro_registers_a_candidate_with_its_run_prompts_and_lineage(pipeline):
    project, mlflow = pipeline.project, client(pipeline)
    prompts = ("classify_intent", "extract_order", "answer_policy")
    flows = golden_count(project, "answer", key="flow")
    assert flows >= 5, "the example's golden set has end-to-end examples"
    assert pipeline.model.calls() == sum(golden_count(project, p) for p in prompts) + FLOW_CALLS * flows
    record = json.loads((project / "models/version.json").read_text())
    assert record["registry"]["version"] == "1" and record["registry"]["alias"] == "candidate"

    version = mlflow.get_model_version_by_alias(NAME, "candidate")
    assert str(version.version) == "1"
    tags = version.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True)
    assert tags["git_sha"] == head.stdout.strip()
    assert tags["data_sha256"] == json.loads((project / "data/processed/manifest.json").read_text())["sha256"]
    assert re.fullmatch(r"[0-9a-f]{12}", tags["dvc.stage.preprocess"])
    assert re.fullmatch(r"[0-9a-f]{12}", tags["dvc.stage.evaluate"])

    run_ = mlflow.get_run(version.run_id)
    metrics = json.loads((project / "eval/metrics.json").read_text())
    assert run_.data.metrics["pass_rate"] == pytest.approx(metrics["pass_rate"]) and metrics["pass_rate"] >= 0.5
    assert run_.data.params["prompt.classify_intent"] == record["prompts"]["classify_intent"]
    assert run_.data.params["model.temperature"] == "0.0"
    eval_artifacts = {Path(a.path).name for a in mlflow.list_artifacts(run_.info.run_id, "eval")}
    assert eval_artifacts == {"metrics.json", "catalogue.json", "results.jsonl", "report.md", "report.html"}
    prompt_files = {Path(a.path).name for a in mlflow.list_artifacts(run_.info.run_id, "app_version/prompts")}
    assert {"classify_intent.yaml", "extract_order.yaml", "answer_policy.yaml"} <= prompt_files
    for prompt_id, content_hash in record["prompts"].items():
        registered = mlflow.load_prompt(f"{NAME}.{prompt_id}", version=1)
        assert registered.tags["content_hash"] == content_hash


def test_the_register_stage_prints_only_its_own_lines(pipeline):
    """On a fresh store: no MLflow INFO lines (table creation, a new experiment), none of the lines
    its registration prints, no type-hint warning in colour; MLflow's errors would still show."""
    out = pipeline.first.stdout
    stage = out[out.index("Running stage 'register':") :].splitlines()[1:]
    stage = stage[: next(i for i, line in enumerate(stage) if line.startswith("Updating lock file"))]
    assert stage[0].startswith("> python -m support_bot register ")
    assert stage[1:] == ["registered support-bot version 1 as candidate (models/version.json)"]
    for noise in ("mlflow", "MLflow", "INFO", "Warning", "\x1b["):
        assert noise not in pipeline.first.stderr, pipeline.first.stderr


def test_second_repro_is_a_no_op_and_a_prompt_change_reruns_only_its_examples(pipeline):
    project = pipeline.project
    calls = pipeline.model.calls()
    # Byte-code that Python writes beside the sources is not a code change (.dvcignore).
    (project / "src/support_bot/__pycache__").mkdir(exist_ok=True)
    (project / "src/support_bot/__pycache__/registry.cpython-311.pyc").write_bytes(b"\0")
    again = run(project, "python", "-m", "dvc", "repro", env=pipeline.env)
    assert "Data and pipelines are up to date." in again.stdout
    assert pipeline.model.calls() == calls
    assert len(client(pipeline).search_model_versions(f"name='{NAME}'")) == 1

    prompt = project / "prompts/classify_intent.yaml"
    prompt.write_text(prompt.read_text().replace("Reply with JSON only.", "Reply with JSON only, nothing else."))
    status = run(project, "python", "-m", "dvc", "status", env=pipeline.env).stdout
    assert "evaluate:" in status and "preprocess:" not in status
    rerun = run(project, "python", "-m", "dvc", "repro", env=pipeline.env)
    assert "Stage 'preprocess' didn't change, skipping" in rerun.stdout
    # The response cache answers every call of the unchanged prompts, inside flows too: only the
    # classify_intent calls are made again (its examples', and the first call of each flow example).
    flows = golden_count(project, "answer", key="flow")
    assert pipeline.model.calls() == calls + golden_count(project, "classify_intent") + flows
    record = json.loads((project / "models/version.json").read_text())
    assert record["registry"]["version"] == "2"
    assert record["registry"]["prompt_registry_versions"] == {
        "answer_policy": "1", "classify_intent": "2", "extract_order": "1",
    }  # fmt: skip


def test_promote_then_rollback_leaves_the_previous_champion(pipeline, tmp_path):
    mlflow = client(pipeline)
    # Nothing to roll back before any promotion: one line, exit 2.
    refused = cli(pipeline, "rollback", check=False)
    assert refused.returncode == 2 and "nothing to roll back" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr

    # Champion = version 1, then a newer candidate, then back to 1.
    mlflow.set_registered_model_alias(NAME, "candidate", "1")
    assert "champion -> version 1 (was none)" in cli(pipeline, "promote").stdout
    cli(pipeline, "register", "--out", str(tmp_path / "version.json"))  # a new candidate, no model calls
    newest = json.loads((tmp_path / "version.json").read_text())["registry"]["version"]
    assert int(newest) > 1
    assert f"champion -> version {newest} (was 1)" in cli(pipeline, "promote").stdout
    assert "already champion" in cli(pipeline, "promote", check=False).stderr
    assert "champion -> version 1" in cli(pipeline, "rollback").stdout
    assert str(mlflow.get_model_version_by_alias(NAME, "champion").version) == "1"

    calls = pipeline.model.calls()
    answers = predict(pipeline, "champion")
    assert answers[0]["data"] == {"intent": "order_status"}
    assert pipeline.model.calls() == calls + 1


def predict(pipeline, alias: str, **load_options) -> list:
    """Load `models:/<name>@<alias>` in a fresh process, as a user would, and classify QUESTION."""
    code = (
        "import json, mlflow;"
        f"m = mlflow.pyfunc.load_model('models:/{NAME}@{alias}', **{load_options!r});"
        f"print(json.dumps(m.predict([{{'prompt': 'classify_intent', 'variables': {{'message': {QUESTION!r}}}}}])))"
    )
    out = run(pipeline.project, "python", "-c", code, env=pipeline.env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_plots_render_offline(pipeline, tmp_path):
    project = pipeline.project
    tags = json.loads((project / "eval/plots/tags.json").read_text())
    assert {row["tag"] for row in tags} >= {"intent", "extract", "grounded"}
    latency = json.loads((project / "eval/plots/latency.json").read_text())
    assert len(latency) == sum(1 for line in (project / "eval/golden.jsonl").read_text().splitlines() if line.strip())
    out = tmp_path / "plots"
    run(project, "python", "-m", "dvc", "plots", "show", "--out", str(out), env=pipeline.env)
    html = (out / "index.html").read_text()
    assert "Latency per call (ms)" in html and "Pass rate per golden-set tag" in html


def test_registered_app_answers_on_the_embedded_model(pipeline):
    """The one end-to-end run on the real model: the candidate, pointed at `embedded` at load time."""
    calls = pipeline.model.calls()
    answers = predict(pipeline, "candidate", model_config={"base_url": "embedded"})
    assert answers[0]["text"].strip() and answers[0]["prompt"] == "classify_intent"
    assert pipeline.model.calls() == calls, "the fake server must not have answered"


def test_a_failed_register_keeps_the_last_registered_record(pipeline, tmp_path):
    """DVC deletes a stage's outputs before it runs: `persist` keeps models/version.json when the
    register stage then fails (here: the store is a corrupt file)."""
    record = (pipeline.project / "models/version.json").read_bytes()
    corrupt = tmp_path / "mlflow.db"
    corrupt.write_bytes(b"\x00 not a database " * 100)
    env = {**pipeline.env, "MLFLOW_TRACKING_URI": f"sqlite:///{corrupt}"}
    failed = run(pipeline.project, "python", "-m", "dvc", "repro", "--force", "--single-item", "register",
                 env=env, check=False)  # fmt: skip
    assert failed.returncode != 0
    assert (pipeline.project / "models/version.json").read_bytes() == record
    assert f"register: error: MLflow store sqlite:///{corrupt}: the file is not an SQLite database" in failed.stderr
