import os
import re
from pathlib import Path

import pytest
from pipeline_outputs import register, write_eval_outputs

from {{ cookiecutter.package }} import lifecycle, registry, versions
from {{ cookiecutter.package }}.errors import UserError
from {{ cookiecutter.package }}.prompts import load_all
from {{ cookiecutter.package }}.stages import plots
from {{ cookiecutter.package }}.stages import register as register_stage
from {{ cookiecutter.package }}.testing.fake_model import FakeModel, golden_answers

# Jinja renders this file: literal double braces are built, not written.
OPEN, CLOSE = "{" * 2, "}" * 2
ORDER_QUESTION = "Where is my order? I placed it last Tuesday."


def test_sqlite_path_and_redacted_uris():
    assert registry.sqlite_path("sqlite:///mlflow.db") == Path("mlflow.db")
    assert registry.sqlite_path("sqlite:////tmp/x/mlflow.db") == Path("/tmp/x/mlflow.db")
    assert registry.sqlite_path("http://127.0.0.1:5000") is None
    assert registry.redact("https://user:s3cret@mlflow.example:8443/x") == "https://mlflow.example:8443/x"
    assert registry.redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_stage_hashes_follow_the_lock_and_skip_register():
    lock = "schema: '2.0'\nstages:\n  evaluate:\n    cmd: a\n    outs:\n    - path: x\n      md5: 1\n  register:\n    cmd: b\n"
    hashes = registry.stage_hashes(lock)
    assert set(hashes) == {"evaluate"} and len(hashes["evaluate"]) == 12
    assert registry.stage_hashes(lock.replace("md5: 1", "md5: 2"))["evaluate"] != hashes["evaluate"]
    assert registry.stage_hashes("") == {}


def test_prompts_become_mlflow_templates(project):
    prompt = load_all(project / "prompts")["classify_intent"]
    template = registry.mlflow_template(prompt)
    assert [m["role"] for m in template] == [m["role"] for m in prompt.messages]
    assert template[-1]["content"] == f"{OPEN}message{CLOSE}"


def test_only_finite_numbers_are_logged_as_metrics():
    assert registry.numeric_metrics({"a": 1, "b": 0.5, "c": True, "d": None, "e": float("nan"), "f": "x"}) == {
        "a": 1.0,
        "b": 0.5,
    }


def test_plot_rows_skip_errors_and_group_tags():
    results = [
        {"id": "a", "repeat": 0, "prompt": "p", "passed": True, "latency_ms": 10.0, "tags": ["x", "y"]},
        {"id": "b", "repeat": 0, "prompt": "p", "passed": False, "latency_ms": 30.0, "tags": ["x"]},
        {"id": "c", "repeat": 0, "prompt": "p", "passed": None, "latency_ms": None, "tags": ["x"]},
    ]
    assert [r["example"] for r in plots.latency_rows(results)] == ["a#0", "b#0"]
    assert plots.tag_rows(results) == [
        {"tag": "x", "pass_rate": 0.5, "calls": 2},
        {"tag": "y", "pass_rate": 1.0, "calls": 1},
    ]


@pytest.fixture
def fake_model(project):
    """The project's params pointed at a local OpenAI-compatible server that knows the golden set."""
    with FakeModel(golden_answers(project / "eval/golden.jsonl")) as model:
        params = project / "params.yaml"
        text = re.sub(r"(?m)^  base_url: .*$", f"  base_url: {model.base_url}", params.read_text())
        params.write_text(re.sub(r"(?m)^  api_key_env: .*$", '  api_key_env: ""', text))
        yield model


def test_plots_name_a_missing_or_broken_results_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.jsonl: cannot read .*run the evaluate stage first"):
        plots.write(tmp_path / "nope.jsonl", tmp_path / "plots")
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n{torn\n')
    with pytest.raises(UserError, match=r"bad\.jsonl: not JSON Lines"):
        plots.write(tmp_path / "bad.jsonl", tmp_path / "plots")


def test_register_refuses_a_version_below_the_thresholds(project, capsys):
    write_eval_outputs(project, pass_rate="0.9")  # not a number: a miss, as in the gate
    assert register_stage.main(["--out", "models/version.json"]) == 1
    assert "refused: thresholds missed: pass_rate = 0.9 < " in capsys.readouterr().err
    write_eval_outputs(project, pass_rate=0.1)
    assert register_stage.main(["--out", "models/version.json"]) == 1
    assert "refused: thresholds missed: pass_rate" in capsys.readouterr().err
    assert not (project / "models/version.json").exists()
    assert not Path(registry.sqlite_path(os.environ["MLFLOW_TRACKING_URI"])).exists()


def test_register_refuses_a_version_the_service_could_not_load(project):
    write_eval_outputs(project)
    (project / "data/policies.yaml").write_text("refund: Returns within 30 days.\n")  # no 'other' policy
    with pytest.raises(UserError, match=r"policies\.yaml: needs an 'other' policy"):
        register_stage.main(["--out", "models/version.json"])
    (project / "data/policies.yaml").unlink()
    with pytest.raises(UserError, match=r"policies\.yaml"):
        register_stage.main(["--out", "models/version.json"])
    assert not (project / "models/version.json").exists()
    assert not Path(registry.sqlite_path(os.environ["MLFLOW_TRACKING_URI"])).exists()  # MLflow untouched


def test_serving_a_version_whose_files_are_gone_is_one_clear_error(project, tmp_path, monkeypatch):
    import shutil
    from urllib.parse import urlparse

    from mlflow import MlflowClient

    write_eval_outputs(project)
    register(project)
    assert lifecycle.main([], prog="x promote") == 0
    version = MlflowClient().search_model_versions()[0]
    artifacts = Path(urlparse(MlflowClient().get_run(version.run_id).info.artifact_uri).path)
    shutil.rmtree(artifacts / registry.APP_ARTIFACT)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    with pytest.raises(UserError, match=rf"cannot download {registry.APP_ARTIFACT}/ of .* version 1"):
        versions.load("champion", versions.REGISTRY_SOURCE)
    assert not list(scratch.iterdir())


def test_register_promote_rollback_and_the_champion_answers(project, fake_model, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    with pytest.raises(registry.RegistryError, match=r"nothing to promote: .* no version aliased 'candidate'"):
        lifecycle.main([], prog="x promote")
    write_eval_outputs(project)
    first = register(project)
    name = first["registry"]["model_name"]
    assert first["registry"]["version"] == "1" and first["registry"]["alias"] == "candidate"
    client = MlflowClient()
    version = client.get_model_version_by_alias(name, "candidate")
    run = client.get_run(version.run_id)
    assert run.data.params["prompt.classify_intent"] == first["prompts"]["classify_intent"]
    assert run.data.params["model.endpoint"].startswith("http://127.0.0.1:")
    assert run.data.metrics["pass_rate"] == 0.9
    assert version.tags["data_sha256"] == "ab" * 32 and version.tags["git_sha"]
    assert version.tags["prompt.classify_intent"] == first["prompts"]["classify_intent"]
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert logged == {"eval/metrics.json", "eval/results.jsonl", "eval/report.md"}
    registered_prompt = client.load_prompt(f"{name}.classify_intent", version=1)
    assert registered_prompt.tags["content_hash"] == first["prompts"]["classify_intent"]

    assert lifecycle.main([], prog="x promote") == 0
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    with pytest.raises(registry.RegistryError, match="already champion"):
        lifecycle.main([], prog="x promote")
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        lifecycle.main([], prog="x rollback")

    # A changed prompt: a new app version, and a new registry version of that prompt only.
    path = project / "prompts/classify_intent.yaml"
    path.write_text(path.read_text().replace("Reply with JSON only.", "Reply with JSON only, nothing else."))
    second = register(project)
    assert second["registry"]["version"] == "2"
    assert second["registry"]["prompt_registry_versions"] == {
        "answer_policy": "1",
        "classify_intent": "2",
        "extract_order": "1",
    }
    assert lifecycle.main([], prog="x promote") == 0
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == "2" and champion.tags["previous_champion"] == "1"
    assert lifecycle.main([], prog="x rollback") == 0
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"

    # What the server serves from the registry (APP_VERSION_SOURCE=registry) is that version.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    served = versions.load("champion", versions.REGISTRY_SOURCE)
    assert served.id == "1" and served.source == "registry:champion"
    assert not list(scratch.iterdir())  # read into memory; the downloaded copy is gone
    assert served.prompts["classify_intent"].version == first["prompts"]["classify_intent"]
    assert served.policies == versions.load_policies(project / "data/policies.yaml")

    # The champion answers with the prompts it was registered with, not the working tree's.
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    calls = fake_model.calls()
    answers = model.predict([{"prompt": "classify_intent", "variables": {"message": ORDER_QUESTION}}])
    assert answers[0]["data"] == {"intent": "order_status"}
    assert answers[0]["prompt_version"] == first["prompts"]["classify_intent"] != second["prompts"]["classify_intent"]
    assert fake_model.calls() == calls + 1
    with pytest.raises(Exception, match="unknown prompt 'nope'"):
        model.predict([{"prompt": "nope", "variables": {}}])
