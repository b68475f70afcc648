"""The MLflow registry on a real sqlite store: register, promote, rollback, and what is served back.

The app registered is the framework's toy app (testing/toy.py), so these tests hold for any app."""

import contextlib
import json
import os
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import free_port
from pipeline_outputs import commit_all, register, write_eval_outputs

from {{ cookiecutter.package }} import PROJECT, cli, settings
from {{ cookiecutter.package }}.app.prompts import load_all
from {{ cookiecutter.package }}.errors import UserError
from {{ cookiecutter.package }}.evaluation.results import Result
from {{ cookiecutter.package }}.registry import faults, lifecycle, release, store, versions
from {{ cookiecutter.package }}.stages import plots
from {{ cookiecutter.package }}.stages import register as register_stage
from {{ cookiecutter.package }}.testing import toy
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

ROOT = Path(__file__).resolve().parents[1]
# Jinja renders this file: literal double braces are built, not written.
OPEN, CLOSE = "{" * 2, "}" * 2


def test_sqlite_path_and_redacted_uris():
    assert store.sqlite_path("sqlite:///mlflow.db") == Path("mlflow.db")
    assert store.sqlite_path("sqlite:////tmp/x/mlflow.db") == Path("/tmp/x/mlflow.db")
    assert store.sqlite_path("http://127.0.0.1:5000") is None
    assert store.redact("https://user:s3cret@mlflow.example:8443/x") == "https://mlflow.example:8443/x"
    assert store.redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_stage_hashes_follow_the_lock_and_skip_register():
    lock = "schema: '2.0'\nstages:\n  evaluate:\n    cmd: a\n    outs:\n    - path: x\n      md5: 1\n  register:\n    cmd: b\n"
    hashes = store.stage_hashes(lock)
    assert set(hashes) == {"evaluate"} and len(hashes["evaluate"]) == 12
    assert store.stage_hashes(lock.replace("md5: 1", "md5: 2"))["evaluate"] != hashes["evaluate"]
    assert store.stage_hashes("") == {}


def test_prompts_become_mlflow_templates(toy_project):
    prompt = load_all(toy_project / "prompts")["echo"]
    template = store.mlflow_template(prompt)
    assert [m["role"] for m in template] == [m["role"] for m in prompt.messages]
    assert template[-1]["content"] == f"{OPEN}text{CLOSE}"


def test_only_finite_numbers_are_logged_as_metrics():
    assert store.numeric_metrics({"a": 1, "b": 0.5, "c": True, "d": None, "e": float("nan"), "f": "x"}) == {
        "a": 1.0,
        "b": 0.5,
    }


def test_plot_rows_skip_errors_and_group_tags():
    results = [
        Result("a", 0, "p", "v", "x", True, latency_ms=10.0, tags=["x", "y"]),
        Result("b", 0, "p", "v", "y", False, latency_ms=30.0, tags=["x"]),
        Result("c", 0, "p", "v", None, None, tags=["x"]),
    ]
    assert [r["example"] for r in plots.latency_rows(results)] == ["a#0", "b#0"]
    assert plots.tag_rows(results) == [
        {"tag": "x", "pass_rate": 0.5, "calls": 2},
        {"tag": "y", "pass_rate": 1.0, "calls": 1},
    ]


def test_plots_name_a_missing_or_broken_results_file(tmp_path):
    with pytest.raises(UserError, match=r"nope\.jsonl: cannot read .*run the evaluate stage first"):
        plots.write(tmp_path / "nope.jsonl", tmp_path / "plots")
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n{torn\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: not valid JSON"):
        plots.write(tmp_path / "bad.jsonl", tmp_path / "plots")


def store_exists() -> bool:
    return Path(store.sqlite_path(os.environ["MLFLOW_TRACKING_URI"])).exists()


def test_register_refuses_a_version_below_the_thresholds(toy_project, capsys):
    write_eval_outputs(toy_project, pass_rate="0.9")  # not a number: a miss, as in the gate
    assert register_stage.main(["--out", "models/version.json"]) == 1
    assert "refused: thresholds missed: pass_rate = 0.9 < " in capsys.readouterr().err
    write_eval_outputs(toy_project, pass_rate=0.1)
    assert register_stage.main(["--out", "models/version.json"]) == 1
    assert "refused: thresholds missed: pass_rate" in capsys.readouterr().err
    assert not (toy_project / "models/version.json").exists() and not store_exists()


def test_register_refuses_bars_that_cannot_mean_what_they_say(toy_project):
    write_eval_outputs(toy_project)
    params = toy_project / "params.yaml"
    good = params.read_text()
    for bad, message in (
        ("    pass_rat: 0.5\n", r"thresholds\.min\.pass_rat: no such metric"),
        (
            "    error_rate: 0.1\n",
            r"thresholds\.min\.error_rate: error_rate is better lower: bar it under thresholds\.max",
        ),
    ):
        params.write_text(re.sub(r"(?m)^  min:\n", "  min:\n" + bad, good, count=1))
        with pytest.raises(UserError, match=message):
            register_stage.main(["--out", "models/version.json"])
    assert not store_exists()


def test_register_refuses_a_version_the_service_could_not_load(toy_project):
    write_eval_outputs(toy_project)
    (toy_project / toy.DATA_FILE).unlink()
    with pytest.raises(UserError, match=r"greeting\.txt: cannot read"):
        register_stage.main(["--out", "models/version.json"])
    assert not (toy_project / "models/version.json").exists() and not store_exists()  # MLflow untouched


def test_serving_a_version_whose_files_are_gone_is_one_clear_error(toy_project, tmp_path, monkeypatch):
    import shutil
    from urllib.parse import urlparse

    from mlflow import MlflowClient

    write_eval_outputs(toy_project)
    register(toy_project)
    assert lifecycle.main([], prog="x promote") == 0
    version = MlflowClient().search_model_versions()[0]
    artifacts = Path(urlparse(MlflowClient().get_run(version.run_id).info.artifact_uri).path)
    shutil.rmtree(artifacts / store.APP_ARTIFACT)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    with pytest.raises(UserError, match=rf"cannot download {store.APP_ARTIFACT}/ of .* version 1"):
        versions.load("champion", versions.REGISTRY_SOURCE)
    assert not list(scratch.iterdir())


def test_register_promote_rollback_and_the_champion_answers(toy_project, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    with FakeModel(toy.answers) as fake:
        toy_dir = toy.write_version(ROOT, toy_project, fake.base_url)
        with pytest.raises(store.RegistryError, match=r"nothing to promote: .* no version aliased 'candidate'"):
            lifecycle.main([], prog="x promote")
        write_eval_outputs(toy_dir)
        first = register(toy_dir)
        name = first["registry"]["model_name"]
        assert first["registry"]["version"] == "1" and first["registry"]["alias"] == "candidate"
        assert first["app"] == toy.ENTRY
        client = MlflowClient()
        version = client.get_model_version_by_alias(name, "candidate")
        run = client.get_run(version.run_id)
        assert run.data.params["prompt.label"] == first["prompts"]["label"]
        assert run.data.params["model.endpoint"].startswith("http://127.0.0.1:")
        assert run.data.metrics["pass_rate"] == 0.9
        assert version.tags["data_sha256"] == "ab" * 32 and version.tags["git_sha"]
        assert version.tags["prompt.label"] == first["prompts"]["label"]
        logged = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
        # The HTML report too: the registry shows the version's whole evaluation, every example.
        expected = {"eval/metrics.json", "eval/catalogue.json", "eval/results.jsonl", "eval/report.md"}
        assert logged == expected | {"eval/report.html"}
        served = {a.path for a in client.list_artifacts(run.info.run_id, store.APP_ARTIFACT)}
        assert served == {f"{store.APP_ARTIFACT}/{p}" for p in ("params.yaml", "prompts", "data")}
        registered_prompt = client.load_prompt(f"{name}.label", version=1)
        assert registered_prompt.tags["content_hash"] == first["prompts"]["label"]

        assert lifecycle.main([], prog="x promote") == 0
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
        with pytest.raises(store.RegistryError, match="already champion"):
            lifecycle.main([], prog="x promote")
        with pytest.raises(store.RegistryError, match="nothing to roll back to"):
            lifecycle.main([], prog="x rollback")

        # A changed prompt: a new app version, and a new registry version of that prompt only.
        path = toy_dir / "prompts/label.yaml"
        path.write_text(path.read_text().replace("Label the text.", "Label the text, carefully."))
        second = register(toy_dir)
        assert second["registry"]["version"] == "2"
        assert second["registry"]["prompt_registry_versions"] == {"echo": "1", "label": "2"}
        assert lifecycle.main([], prog="x promote") == 0
        champion = client.get_model_version_by_alias(name, "champion")
        assert str(champion.version) == "2" and champion.tags["previous_champion"] == "1"
        assert lifecycle.main([], prog="x rollback") == 0
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"

        # What the server serves from the registry (APP_VERSION_SOURCE=registry) is that version.
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        monkeypatch.setenv("TMPDIR", str(scratch))
        served_version = versions.load("champion", versions.REGISTRY_SOURCE)
        assert served_version.id == "1" and served_version.source == "registry:champion"
        assert not list(scratch.iterdir())  # read into memory; the downloaded copy is gone
        assert served_version.prompts["label"].version == first["prompts"]["label"]
        assert served_version.data == "Hello"

        # The champion answers with the prompts it was registered with, not the working tree's.
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        calls = fake.calls()
        answers = model.predict([{"prompt": "label", "variables": {"text": "a good day"}}])
        assert answers[0]["data"] == {"label": "good"}
        assert answers[0]["prompt_version"] == first["prompts"]["label"] != second["prompts"]["label"]
        (reply,) = model.predict([{"flow": "reply", "request": {"text": "so good"}}])
        assert reply == {"label": "good", "echo": "Hello so good"}  # the flow, with the version's data file
        assert fake.calls() == calls + 3
        with pytest.raises(Exception, match="unknown prompt 'nope'"):
            model.predict([{"prompt": "nope", "variables": {}}])
        with pytest.raises(Exception, match="unknown flow 'nope'"):
            model.predict([{"flow": "nope", "request": {}}])


def test_register_dry_run_checks_everything_and_registers_nothing(toy_project, capsys):
    write_eval_outputs(toy_project)
    assert register_stage.main(["--dry-run"]) == 0
    assert "nothing registered" in capsys.readouterr().out
    assert not (toy_project / "models/version.json").exists() and not store_exists()
    write_eval_outputs(toy_project, pass_rate=0.1)
    assert register_stage.main(["--dry-run"]) == 1 and not store_exists()


def test_a_deploy_resolves_exactly_the_version_of_its_commit(toy_project, capsys):
    from mlflow import MlflowClient

    write_eval_outputs(toy_project)
    first = commit_all(toy_project, "A")
    name = register(toy_project)["registry"]["model_name"]
    second = commit_all(toy_project, "B")
    assert register(toy_project)["registry"]["version"] == "2"
    client = store.connect(os.environ["MLFLOW_TRACKING_URI"])
    thresholds = settings.load("params.yaml").thresholds
    assert release.resolve(client, name, first, thresholds).version in (1, "1")
    assert release.resolve(client, name, second, thresholds).version in (2, "2")
    with pytest.raises(store.RegistryError, match=r"no version of .* was registered from commit 000000000000"):
        release.resolve(client, name, "0" * 40, thresholds)
    stricter = settings.Thresholds(min={"pass_rate": 0.95}, max={})
    with pytest.raises(store.RegistryError, match=r"version 1 \(commit .*\) misses pass_rate = 0.9 < 0.95"):
        release.resolve(client, name, first, stricter)
    # A deploy never resolves against a sqlite file: CI's is thrown away with the runner.
    with pytest.raises(store.RegistryError, match="deploy needs the team's MLflow store, not the sqlite file"):
        release.main(["resolve", "--commit", first])
    # `promote --commit`: champion is that commit's version, whatever the candidate is.
    assert lifecycle.main(["--commit", first], prog="x promote") == 0
    assert str(MlflowClient().get_model_version_by_alias(name, "champion").version) == "1"
    assert "champion -> version 1" in capsys.readouterr().out


# --- a store that cannot be used: one line naming it, at once, nothing lost -----------------------


def run_cli(root: Path, *args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m <package> ARGS` in `root`, as a user runs it (a process of its own)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")} | env
    cmd = [sys.executable, "-m", "{{ cookiecutter.package }}", *args]
    return subprocess.run(cmd, cwd=root, env=full, capture_output=True, text=True, timeout=timeout, check=False)


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A server on 127.0.0.1 that accepts connections and never answers; yields its URL and the
    connections it accepted."""
    accepted: list[socket.socket] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        with contextlib.suppress(OSError):  # closed at the end
            while True:
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        listener.close()
        for connection in accepted:
            connection.close()


def test_the_first_request_to_a_tracking_server_is_not_retried_unless_the_user_says_so():
    assert faults.first_contact_env({}) == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    mine = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7", "MLFLOW_HTTP_REQUEST_TIMEOUT": ""}
    assert faults.first_contact_env(mine) == {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def test_a_tracking_server_that_is_not_there_is_one_line_at_once(toy_project):
    # MLflow alone retries for about 4 minutes without a word; `timeout` only stops a hang here.
    write_eval_outputs(toy_project)
    closed = f"http://127.0.0.1:{free_port()}"
    refused = run_cli(toy_project, "promote", env={"MLFLOW_TRACKING_URI": closed}, timeout=60)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (
        f"{PROJECT} promote: error: MLflow store {closed}: cannot connect (connection refused): "
        "is the tracking server running at that URL?\n"
    )
    with silent_server() as (url, accepted):
        env = {"MLFLOW_TRACKING_URI": url, "MLFLOW_HTTP_REQUEST_TIMEOUT": "1"}  # the user's setting wins
        silent = run_cli(toy_project, "register", env=env, timeout=60)
        assert len(accepted) == 1, "the first request is not retried"
    assert silent.returncode == 2
    assert silent.stderr == (
        f"{PROJECT} register: error: MLflow store {url}: the tracking server accepted the connection but "
        "gave no answer within 1 s (MLFLOW_HTTP_REQUEST_TIMEOUT)\n"
    )
    assert not (toy_project / "models/version.json").exists()


def test_an_empty_corrupt_or_read_only_store_is_one_line_naming_it(toy_project, tmp_path, capsys):
    write_eval_outputs(toy_project)
    register(toy_project)  # a store with history
    good = store.sqlite_path(os.environ["MLFLOW_TRACKING_URI"])
    empty = tmp_path / "empty.db"  # a store truncated to nothing
    empty.touch()
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\x00\xff not a database " * 300)
    # Read-only: SQLite treats a file whose format write version (byte 18) is above 2 as one it may
    # read but not write, as it does a file it lacks permission to write (which root, who runs many
    # CI containers, never lacks).
    read_only = tmp_path / "read-only.db"
    data = bytearray(good.read_bytes())
    data[18] = 3
    read_only.write_bytes(bytes(data))
    capsys.readouterr()
    for path, why in (
        (empty, "the file is empty (0 bytes): its history is gone"),
        (corrupt, "the file is not an SQLite database"),
        (read_only, "attempt to write a readonly database: the store is read-only"),
    ):
        uri = f"sqlite:///{path}"
        os.environ["MLFLOW_TRACKING_URI"] = uri  # restored by the autouse fixture's monkeypatch
        before = path.read_bytes()
        for command in (["register", "--out", "models/version.json"], ["promote"]):
            assert cli.main(command) == 2, command
            err = capsys.readouterr().err
            assert err.startswith(f"{PROJECT} {command[0]}: error: MLflow store {uri}: {why}"), err
            assert err.count("\n") == 1, err
        assert path.read_bytes() == before, "the store was changed (MLflow re-created an empty one?)"
    assert json.loads((toy_project / "models/version.json").read_text())["registry"]["version"] == "1"


def count_rows(database: Path, query: str, *args: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
        return db.execute(query, args).fetchone()[0]


def kill_when(database: Path, query: str, *args: str) -> int:
    """Start a register and kill -9 it as soon as `query` counts more rows than before; its exit status."""
    before = count_rows(database, query, *args)
    proc = subprocess.Popen(
        [sys.executable, "-m", "{{ cookiecutter.package }}", "register", "--out", "models/killed.json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while proc.poll() is None:
        with contextlib.suppress(sqlite3.OperationalError):  # a write in progress: look again
            if count_rows(database, query, *args) > before:
                break
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=120)


def test_a_register_killed_midway_leaves_nothing_that_looks_servable(toy_project, capsys):
    from mlflow import MlflowClient

    write_eval_outputs(toy_project)
    name = register(toy_project)["registry"]["model_name"]  # the store exists: the kills land mid-register
    database = store.sqlite_path(os.environ["MLFLOW_TRACKING_URI"])
    running = "SELECT count(*) FROM runs WHERE status = 'RUNNING'"
    # kill -9 as soon as the model version exists (the old code wrote its lineage tags, finished
    # its run and set the alias after that), then as soon as a run is open.
    killed = toy_project / "models/killed.json"
    first = kill_when(database, "SELECT count(*) FROM model_versions WHERE name = ?", name)
    if first == 0 or killed.exists():  # it finished (the record is written last) before the kill landed
        killed.unlink()
    assert first in (0, -signal.SIGKILL) and not killed.exists()
    assert kill_when(database, running) == -signal.SIGKILL
    client = MlflowClient()
    for version in client.search_model_versions(f"name='{name}'"):
        assert {"git_sha", "data_sha256", "run_id", "prompt.label", "prompt_registry.label"} <= set(version.tags)
        assert client.get_run(version.run_id).info.status == "FINISHED"
    assert not killed.exists()
    assert count_rows(database, running) == 1  # the run of the last kill

    capsys.readouterr()
    register(toy_project)
    assert "of an interrupted register was left RUNNING: marked FAILED" in capsys.readouterr().err
    assert count_rows(database, running) == 0
    assert count_rows(database, "SELECT count(*) FROM runs WHERE status = 'FAILED'") == 1


def test_a_version_record_is_replaced_whole_or_not_at_all(tmp_path):
    out = tmp_path / "version.json"
    out.write_text('{"registry": {"version": "1"}}\n')
    old = out.read_text()

    def small_files() -> None:  # the disk is full after 4 KiB, as it were
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    def write(how: str) -> None:
        code = f"import sys; from pathlib import Path; {how}(Path(sys.argv[1]), 'x' * 100_000)"
        proc = subprocess.run([sys.executable, "-c", code, str(out)], preexec_fn=small_files, capture_output=True)
        assert proc.returncode == 1 and b"File too large" in proc.stderr

    write("from {{ cookiecutter.package }}.stages.register import write_record; write_record")
    assert out.read_text() == old and [p.name for p in tmp_path.iterdir()] == ["version.json"]
    write("Path.write_text")  # what a plain write leaves: a torn record
    assert 0 < len(out.read_text()) < 100_000
