"""The registry against real stores: a real `mlflow server` on loopback (mlflow_tracking=server),
and concurrent registers on a fresh and on an existing sqlite store."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.baked import fake_model, free_port, local_store, private_project, server
from tests.bakery import project_env
from tests.conftest import run

pytestmark = [pytest.mark.slow, pytest.mark.long]
NAME = "support-bot"


def test_server_tracking_registers_promotes_and_serves_the_champion(tmp_path):
    project = private_project(tmp_path / "bake", mlflow_tracking="server")
    port = free_port()
    assert "tracking_uri: http://127.0.0.1:5000" in (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(
        (project / "params.yaml").read_text().replace("http://127.0.0.1:5000", f"http://127.0.0.1:{port}")
    )
    # No MLFLOW_TRACKING_URI: params.yaml's URL is the one used.
    env = {"MLFLOW_TRACKING_URI": ""}
    store = tmp_path / "server"
    store.mkdir()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "art")]
    cmd += ["--workers", "1"]
    # Before the server is up: one line naming params.yaml's URL, at once (MLflow alone retries
    # for about 4 minutes without a word).
    refused = run(project, "support-bot", "promote", env=env, check=False, timeout=60)
    assert refused.returncode == 2 and refused.stderr == (
        f"support-bot promote: error: MLflow store http://127.0.0.1:{port}: cannot connect (connection refused): "
        "is the tracking server running at that URL?\n"
    )
    with server(cmd, f"http://127.0.0.1:{port}/health", cwd=store, project=project), fake_model(project) as model:
        run(project, "python", "-m", "dvc", "repro", env=env)
        run(project, "support-bot", "promote", env=env)
        assert not (project / "mlflow.db").exists(), "registered locally instead of on the server"
        record = json.loads((project / "models/version.json").read_text())
        assert record["registry"]["tracking_uri"] == f"http://127.0.0.1:{port}"

        from mlflow import MlflowClient

        uri = f"http://127.0.0.1:{port}"
        client = MlflowClient(uri, registry_uri=uri)
        champion = client.get_model_version_by_alias(NAME, "champion")
        assert str(champion.version) == record["registry"]["version"] == "1"
        assert champion.run_id and client.get_run(champion.run_id).data.metrics["pass_rate"] >= 0.5
        assert client.load_prompt(f"{NAME}.classify_intent", version=1).tags["content_hash"]

        # The champion's artifacts come back through the server and it answers.
        code = (
            "import json, mlflow;"
            f"m = mlflow.pyfunc.load_model('models:/{NAME}@champion');"
            "print(json.dumps(m.predict([{'prompt': 'extract_order', 'variables': "
            "{'message': 'Where is BH-31007?'}}])))"
        )
        calls = model.calls()
        out = run(project, "python", "-c", code, env={**env, "MLFLOW_TRACKING_URI": uri}).stdout
        assert json.loads(out.strip().splitlines()[-1])[0]["data"] == {"order_id": "BH-31007", "email": None}
        assert model.calls() == calls + 1


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A default bake with the eval outputs `register` reads (evaluated on the fake model)."""
    project = private_project(tmp_path_factory.mktemp("concurrent"))
    env = local_store(project)
    with fake_model(project):
        run(project, "python", "-m", "dvc", "repro", "evaluate", env=env)
    return project, env


def register_concurrently(project: Path, env: dict[str, str], uri: str, outs: list[Path]) -> list[dict]:
    run_env = project_env(project, **{**env, "MLFLOW_TRACKING_URI": uri})
    procs = []
    for out in outs:
        cmd = ["support-bot", "register", "--out", str(out)]
        procs.append(
            subprocess.Popen(cmd, cwd=project, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"register exited {proc.returncode}\n{stdout}\n{stderr}"
    return [json.loads(out.read_text()) for out in outs]


def test_concurrent_registers_on_a_fresh_then_an_existing_store(evaluated, tmp_path):
    project, env = evaluated
    database = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{database}"
    # Fresh: the first process creates the schema under the lock; the other waits and reuses it.
    first = register_concurrently(project, env, uri, [tmp_path / "a.json", tmp_path / "b.json"])
    # Existing: both write at once.
    second = register_concurrently(project, env, uri, [tmp_path / "c.json", tmp_path / "d.json"])

    versions = sorted(int(r["registry"]["version"]) for r in first + second)
    assert versions == [1, 2, 3, 4]
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    assert sorted(int(v.version) for v in client.search_model_versions(f"name='{NAME}'")) == [1, 2, 3, 4]
    experiment = client.get_experiment_by_name(NAME)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    # Unchanged prompts are registered once, however many registers ran.
    assert {r["registry"]["prompt_registry_versions"]["classify_intent"] for r in first + second} == {"1"}
    candidate = client.get_model_version_by_alias(NAME, "candidate")
    assert int(candidate.version) in (3, 4)
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
