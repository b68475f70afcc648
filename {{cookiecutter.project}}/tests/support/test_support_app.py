"""The example app (src/{{ cookiecutter.package }}/support/): its flow served, evaluated and registered.

These tests belong to the example and go with it: a project that replaces the support assistant
deletes this folder with it.
"""

import contextlib
import io
import json
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest
import requests
import yaml
from live_server import in_thread, metric, wait_for
from pipeline_outputs import write_eval_outputs
from support_fakes import support_answers

from {{ cookiecutter.package }}.errors import UserError
from {{ cookiecutter.package }}.evaluation.golden import load as load_golden
from {{ cookiecutter.package }}.registry.versions import from_directory
from {{ cookiecutter.package }}.serving.observability import configure_logging
from {{ cookiecutter.package }}.serving.server import create_app, open_service
from {{ cookiecutter.package }}.stages import register as register_stage
from {{ cookiecutter.package }}.support import APP
from {{ cookiecutter.package }}.support.policies import POLICIES_FILE
from {{ cookiecutter.package }}.support.policies import load as load_policies
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = "Where is my order BH-10422? You can reach me at jo@example.com"


def write_support_version(dest: Path, base_url: str, **sections: dict) -> Path:
    """A version directory of this project's app, its model pointed at `base_url`."""
    shutil.copytree(ROOT / "prompts", dest / "prompts")
    (dest / "data").mkdir(parents=True)
    shutil.copy(ROOT / POLICIES_FILE, dest / POLICIES_FILE)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"].update(base_url=base_url, name="fake-model", api_key_env="")
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


@contextlib.contextmanager
def running(tmp_path: Path, base_url: str, env: dict | None = None, name: str = "v"):
    source = write_support_version(tmp_path / name, base_url)
    with open_service("champion", str(source), env or {}) as service, in_thread(create_app(service)) as url:
        yield url, service


@pytest.fixture
def fake():
    with FakeModel(support_answers()) as model:
        yield model


def test_the_golden_set_covers_every_queue_end_to_end():
    examples = load_golden(ROOT / "eval" / "golden.jsonl")
    assert 30 <= len(examples) <= 80
    assert {"normal", "edge", "injection", "e2e"} <= {t for e in examples for t in e.tags}
    end_to_end = [e for e in examples if e.flow == "answer"]
    intents = {e.expectations["expected"]["intent"] for e in end_to_end}
    assert intents == set(load_policies(ROOT)), "one end-to-end example per queue at least"


def test_answer_classifies_extracts_and_answers_from_policy(fake, tmp_path):
    with running(tmp_path, fake.base_url) as (url, service):
        response = requests.post(f"{url}/v1/answer", json={"message": MESSAGE}, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["intent"] == "order_status"
        assert body["order"] == {"order_id": "BH-10422", "email": "jo@example.com"}
        assert "Orders ship within 2 business days" in body["reply"]  # the order_status policy
        assert fake.calls() == 3
        assert body["version"]["id"] == service.version.id
        assert metric(url, "llm_requests_total", status="200", route="/v1/answer") == 1
        # prompt_routes is off for this app: only its flow is served.
        assert (
            requests.post(f"{url}/v1/run/classify_intent", json={"variables": {"message": "x"}}, timeout=5).status_code
            == 404
        )


def test_an_empty_or_blank_message_is_422(fake, tmp_path):
    with running(tmp_path, fake.base_url) as (url, _):
        for body in ({"message": ""}, {"message": "   "}, {"msg": "hi"}, {"message": 3}):
            assert requests.post(f"{url}/v1/answer", json=body, timeout=5).status_code == 422, body
        assert fake.calls() == 0


def test_shadow_compares_the_route_and_the_order_fields(fake, tmp_path):
    gate = threading.Event()
    with FakeModel(support_answers(intent="other"), gate=gate) as worse:
        try:
            # The canary: the same app on a worse model, served like stable (a Service of its own).
            with running(tmp_path, worse.base_url, name="canary") as (canary_url, _):
                env = {"SHADOW_FRACTION": "1.0", "SHADOW_URL": canary_url}
                with running(tmp_path, fake.base_url, env=env) as (url, _):
                    assert requests.post(f"{url}/v1/answer", json={"message": MESSAGE}, timeout=10).status_code == 200
                    gate.set()
                    wait_for(lambda: metric(url, "llm_shadow_requests_total", outcome="disagree") == 1, what="disagree")
        finally:
            gate.set()


def test_logs_name_the_queue_never_the_message(fake, tmp_path):
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    configure_logging("INFO", stream=buffer)
    try:
        with running(tmp_path, fake.base_url) as (url, _):
            requests.post(f"{url}/v1/answer", json={"message": MESSAGE}, timeout=10)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("uvicorn.access").disabled = False
    entries = [json.loads(line) for line in buffer.getvalue().splitlines()]
    (request,) = [e for e in entries if e["event"] == "request"]
    assert request["intent"] == "order_status" and request["has_order_id"] is True
    assert "jo@example.com" not in buffer.getvalue() and "BH-10422" not in buffer.getvalue()


def test_policies_are_part_of_the_version_and_checked(tmp_path):
    a = write_support_version(tmp_path / "a", "http://127.0.0.1:9/v1")
    b = write_support_version(tmp_path / "b", "http://127.0.0.1:9/v1")
    policies = b / POLICIES_FILE
    policies.write_text(policies.read_text().replace("30 days", "14 days"))
    assert from_directory("champion", b).id != from_directory("champion", a).id
    policies.write_text("refund: Returns within 30 days.\n")
    with pytest.raises(UserError, match=r"policies\.yaml: needs an 'other' policy"):
        from_directory("champion", b)


def test_register_refuses_a_version_the_service_could_not_load(project):
    write_eval_outputs(project)
    (project / POLICIES_FILE).write_text("refund: Returns within 30 days.\n")  # no 'other' policy
    with pytest.raises(UserError, match=r"policies\.yaml: needs an 'other' policy"):
        register_stage.main(["--out", "models/version.json"])
    (project / POLICIES_FILE).unlink()
    with pytest.raises(UserError, match=r"policies\.yaml"):
        register_stage.main(["--out", "models/version.json"])
    assert not (project / "models/version.json").exists()
    assert not Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")).exists()  # MLflow untouched


def test_the_app_declares_what_the_framework_needs():
    assert set(APP.prompts) <= {p.stem for p in (ROOT / "prompts").glob("*.yaml")}
    assert APP.files == (POLICIES_FILE,) and set(APP.flows) == {"answer"}
