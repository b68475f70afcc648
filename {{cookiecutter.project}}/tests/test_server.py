"""The HTTP service, served for real on 127.0.0.1 against small fake model servers."""

import contextlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from live_server import in_thread, metric, wait_for, write_version

from {{ cookiecutter.package }}.errors import UserError
from {{ cookiecutter.package }}.server import create_app, open_service
from {{ cookiecutter.package }}.testing.fake_model import FakeModel, support_answers
from {{ cookiecutter.package }}.versions import from_directory, load

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = "Where is my order BH-10422? You can reach me at jo@example.com"
VERSION_HEADERS = ("x-app-version", "x-model", "x-prompt-version", "x-model-alias")


@pytest.fixture
def fake():
    model = FakeModel(support_answers())
    model.start()
    yield model
    model.stop()


@contextlib.contextmanager
def running(tmp_path: Path, base_url: str, env: dict | None = None, name: str = "v", **sections):
    source = write_version(ROOT, tmp_path / name, base_url, **sections)
    with open_service("champion", str(source), env or {}) as service, in_thread(create_app(service)) as url:
        yield url, service


def test_answer_classifies_extracts_and_answers_from_policy(fake, tmp_path):
    with running(tmp_path, fake.base_url) as (url, service):
        response = requests.post(f"{url}/v1/answer", json={"message": MESSAGE}, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["intent"] == "order_status"
        assert body["order"] == {"order_id": "BH-10422", "email": "jo@example.com"}
        assert "Orders ship within 2 business days" in body["reply"]  # the order_status policy
        assert fake.calls() == 3
        version = service.version
        assert body["version"] == {
            "alias": "champion", "id": version.id, "model": "fake-model", "prompt_version": version.prompt_version,
        }  # fmt: skip
        assert response.headers["x-app-version"] == version.id
        assert response.headers["x-prompt-version"] == version.prompt_version
        assert response.headers["x-model"] == "fake-model"
        assert response.headers["x-model-alias"] == "champion"
        assert len(response.headers["x-request-id"]) == 32
        timing = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
        assert 0 < float(timing["model"]) <= float(timing["app"])

        assert metric(url, "llm_requests_total", status="200", model="fake-model") == 1
        assert metric(url, "llm_tokens_total", kind="prompt") > 0
        assert metric(url, "llm_tokens_total", kind="completion") > 0
        assert metric(url, "llm_model_calls_total", outcome="ok") == 3
        assert metric(url, "llm_request_latency_seconds_count") == 1
        assert metric(url, "llm_app_info", alias="champion", version=version.id) == 1


def test_every_response_carries_the_version(fake, tmp_path):
    with running(tmp_path, fake.base_url) as (url, service):
        for response in (
            requests.get(f"{url}/healthz", timeout=5),
            requests.get(f"{url}/readyz", timeout=5),
            requests.get(f"{url}/metrics", timeout=5),
            requests.get(f"{url}/nope", timeout=5),
            requests.post(f"{url}/v1/answer", data="not json", timeout=5),
        ):
            assert all(response.headers.get(h) for h in VERSION_HEADERS), (response.url, response.headers)
            assert response.headers["x-app-version"] == service.version.id


def test_request_id_is_kept_only_when_well_formed(fake, tmp_path):
    with running(tmp_path, fake.base_url) as (url, _):
        ok = requests.post(f"{url}/v1/answer", json={"message": "hi"}, headers={"X-Request-Id": "abc-123"}, timeout=5)
        assert ok.headers["x-request-id"] == "abc-123" and ok.json()["request_id"] == "abc-123"
        odd = requests.post(f"{url}/v1/answer", json={"message": "hi"}, headers={"X-Request-Id": "a b" * 40}, timeout=5)
        assert odd.headers["x-request-id"] != "a b" * 40 and len(odd.headers["x-request-id"]) == 32


def test_invalid_requests_are_422_without_model_calls(fake, tmp_path):
    with running(tmp_path, fake.base_url, serve={"max_message_chars": 50}) as (url, _):
        for kwargs in ({"json": {"message": ""}}, {"json": {"message": "x" * 51}}, {"json": {"msg": "hi"}},
                       {"json": ["hi"]}, {"data": "{not json"}):  # fmt: skip
            response = requests.post(f"{url}/v1/answer", timeout=5, **kwargs)
            assert response.status_code == 422, (kwargs, response.text)
        assert fake.calls() == 0
        assert metric(url, "llm_requests_total", status="422") == 5
        assert metric(url, "llm_requests_total") == 5


def test_model_errors_are_502_and_timeouts_504(tmp_path):
    failing, slow = FakeModel(support_answers(), error_every=1), FakeModel(support_answers(), latency_s=1.0)
    failing.start(), slow.start()
    try:
        with running(tmp_path, failing.base_url, name="a") as (url, _):
            response = requests.post(f"{url}/v1/answer", json={"message": MESSAGE}, timeout=10)
            assert response.status_code == 502 and response.json()["kind"] == "http"
            assert MESSAGE not in response.text  # the model's error body (it echoes) stays inside
            assert metric(url, "llm_requests_total", status="502") == 1
            assert metric(url, "llm_model_calls_total", outcome="http") == 1
        with running(tmp_path, slow.base_url, name="b", model={"read_timeout_s": 0.2}, serve={"max_attempts": 1}) as (
            url,
            _,
        ):
            response = requests.post(f"{url}/v1/answer", json={"message": MESSAGE}, timeout=10)
            assert response.status_code == 504 and response.json()["kind"] == "timeout"
            assert metric(url, "llm_requests_total", status="504") == 1
    finally:
        failing.stop(), slow.stop()


def test_readyz_follows_the_model_endpoint(fake, tmp_path):
    with running(tmp_path, fake.base_url) as (url, service):
        service.ready_ttl_s = 0.0
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
        fake.stop()
        response = requests.get(f"{url}/readyz", timeout=5)
        assert response.status_code == 503 and "unreachable" in response.json()["reason"]
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200  # alive, just not ready


def test_readyz_is_not_ready_with_a_wrong_key(tmp_path, monkeypatch):
    model = FakeModel(support_answers(), api_key="right-key")
    model.start()
    monkeypatch.setenv("TEST_MODEL_KEY", "wrong-key")
    source = write_version(ROOT, tmp_path / "v", model.base_url)
    params = source / "params.yaml"
    params.write_text(params.read_text().replace("api_key_env: ''", "api_key_env: TEST_MODEL_KEY"))
    try:
        with open_service("champion", str(source), {}) as service:
            assert service.ready() == (False, "model endpoint answered HTTP 401")
        monkeypatch.setenv("TEST_MODEL_KEY", "right-key")
        with open_service("champion", str(source), {}) as service:
            assert service.ready() == (True, "ok")
    finally:
        model.stop()


def test_shadow_runs_after_the_response_and_records_agreement(fake, tmp_path):
    gate = threading.Event()
    shadow = FakeModel(support_answers(), gate=gate)
    shadow.start()
    shadow_dir = write_version(ROOT, tmp_path / "shadow", shadow.base_url)
    env = {"SHADOW_FRACTION": "1", "SHADOW_SOURCE": str(shadow_dir)}
    try:
        with running(tmp_path, fake.base_url, env=env) as (url, service):
            assert service.shadow is not None and service.shadow.runner.version.alias == "candidate"
            response = requests.post(f"{url}/v1/answer", json={"message": MESSAGE}, timeout=10)
            # The shadow model is still blocked: the user got the answer without waiting for it.
            assert response.status_code == 200 and response.json()["intent"] == "order_status"
            wait_for(lambda: shadow.calls() == 1, what="the shadow call to start")
            assert metric(url, "llm_shadow_requests_total") == 0
            gate.set()
            wait_for(lambda: metric(url, "llm_shadow_requests_total", outcome="agree") == 1, what="agreement")
            assert metric(url, "llm_requests_total") == 1  # shadow calls are not user requests
            assert metric(url, "llm_model_calls_total", model="fake-model") == 6  # 3 served + 3 shadow
    finally:
        gate.set()
        shadow.stop()


def test_shadow_disagreement_and_drops_when_busy(fake, tmp_path):
    gate = threading.Event()
    worse = FakeModel(support_answers(intent="other"), gate=gate)
    worse.start()
    shadow_dir = write_version(ROOT, tmp_path / "shadow", worse.base_url)
    env = {"SHADOW_FRACTION": "1.0", "SHADOW_SOURCE": str(shadow_dir)}
    try:
        with running(tmp_path, fake.base_url, env=env, serve={"shadow_max_inflight": 1}) as (url, _):
            for _ in range(3):
                assert requests.post(f"{url}/v1/answer", json={"message": MESSAGE}, timeout=10).status_code == 200
            assert metric(url, "llm_shadow_requests_total", outcome="dropped") == 2
            gate.set()
            wait_for(lambda: metric(url, "llm_shadow_requests_total", outcome="disagree") == 1, what="disagreement")
            assert metric(url, "llm_shadow_requests_total", outcome="agree") == 0
    finally:
        gate.set()
        worse.stop()


def test_version_id_is_a_content_hash(tmp_path):
    a = write_version(ROOT, tmp_path / "a", "http://127.0.0.1:9/v1")
    b = write_version(ROOT, tmp_path / "b", "http://127.0.0.1:9/v1")
    assert from_directory("champion", a).id == from_directory("champion", b).id
    policies = b / "data" / "policies.yaml"
    policies.write_text(policies.read_text().replace("30 days", "14 days"))
    changed = from_directory("champion", b)
    assert changed.id != from_directory("champion", a).id
    assert changed.prompt_version == from_directory("champion", a).prompt_version  # prompts unchanged


def test_bad_version_directories_are_clear_errors(tmp_path, monkeypatch):
    source = write_version(ROOT, tmp_path / "v", "http://127.0.0.1:9/v1")
    with pytest.raises(UserError, match="not one of champion, candidate"):
        load("production", source)
    (source / "data" / "policies.yaml").write_text("refund: Returns within 30 days.\n")
    with pytest.raises(UserError, match=r"policies\.yaml: needs an 'other' policy"):
        load("champion", source)
    (source / "prompts" / "extract_order.yaml").unlink()
    with pytest.raises(UserError, match="needs prompt"):
        load("champion", source)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(UserError, match="registry"):
        load("champion", "registry")
    assert not list(scratch.iterdir())  # a failed fetch leaves no empty download directory behind
    # The image installs only the `serve` extra: no mlflow there, one clear line instead of a traceback.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(UserError, match="needs the mlflow package"):
        load("champion", "registry")
    assert not list(scratch.iterdir())


def test_serve_rejects_a_bad_shadow_fraction_in_one_line(tmp_path):
    source = write_version(ROOT, tmp_path / "v", "http://127.0.0.1:9/v1")
    env = {"APP_VERSION_SOURCE": str(source), "SHADOW_FRACTION": "lots", "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package }}", "serve", "--port", "1"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "SHADOW_FRACTION: expected a number from 0 to 1, got 'lots'" in proc.stderr
    assert "Traceback" not in proc.stderr
