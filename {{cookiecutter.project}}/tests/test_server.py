"""The HTTP service, served for real on 127.0.0.1 against small fake model servers.

The app is the framework's toy app (testing/toy.py: a `reply` flow over an `echo` and a `label`
prompt, and a data file), so these tests hold whatever app the project has.
"""

import contextlib
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from live_server import in_process, in_thread, metric, wait_for

from {{ cookiecutter.package }}.app.loader import load_app
from {{ cookiecutter.package }}.errors import UserError
from {{ cookiecutter.package }}.registry.versions import from_directory, load
from {{ cookiecutter.package }}.serving.server import create_app, open_service
from {{ cookiecutter.package }}.testing import toy
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "{{ cookiecutter.package }}"
TEXT = "a good lamp, write to jo@example.com"
VERSION_HEADERS = ("x-app-version", "x-model", "x-prompt-version", "x-model-alias")


@pytest.fixture
def fake():
    with FakeModel(toy.answers) as model:
        yield model


@contextlib.contextmanager
def running(tmp_path: Path, base_url: str, env: dict | None = None, name: str = "v", **sections):
    source = toy.write_version(ROOT, tmp_path / name, base_url, **sections)
    with open_service("champion", str(source), env or {}) as service, in_thread(create_app(service)) as url:
        yield url, service


def test_a_flow_answers_through_its_prompts(fake, tmp_path):
    with running(tmp_path, fake.base_url) as (url, service):
        response = requests.post(f"{url}/v1/reply", json={"text": TEXT}, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["label"] == "good" and body["echo"] == f"Hello {TEXT}"  # the app's data file is used
        assert fake.calls() == 2
        version = service.version
        assert body["version"] == {
            "alias": "champion", "id": version.id, "model": "fake-model", "prompt_version": version.prompt_version,
        }  # fmt: skip
        assert body["request_id"] == response.headers["x-request-id"] and len(body["request_id"]) == 32
        assert response.headers["x-app-version"] == version.id
        assert response.headers["x-prompt-version"] == version.prompt_version
        assert response.headers["x-model"] == "fake-model"
        assert response.headers["x-model-alias"] == "champion"
        timing = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
        assert 0 < float(timing["model"]) <= float(timing["app"])

        assert metric(url, "llm_requests_total", status="200", route="/v1/reply", model="fake-model") == 1
        assert metric(url, "llm_tokens_total", kind="prompt") > 0
        assert metric(url, "llm_tokens_total", kind="completion") > 0
        assert metric(url, "llm_model_calls_total", outcome="ok") == 2
        assert metric(url, "llm_request_latency_seconds_count", route="/v1/reply") == 1
        assert metric(url, "llm_app_info", alias="champion", version=version.id) == 1


def test_cost_and_schema_checks_of_the_answers_are_counted(tmp_path):
    prices = {"input_usd_per_1m_tokens": 2.0, "output_usd_per_1m_tokens": 10.0}

    def answers(request):  # `label` answers outside its schema for a text with "maybe", and not JSON for "??"
        if "label" in request.fields and "maybe" in request.content:
            return '{"label": "maybe"}'
        return "not json" if "label" in request.fields and "??" in request.content else toy.answers(request)

    with FakeModel(answers) as model, running(tmp_path, model.base_url, model=prices) as (url, _):
        assert metric(url, "llm_cost_usd_total") == 0  # there before the first answer: rate() sees that one
        for text in ("a good lamp", "maybe", "??"):
            assert requests.post(f"{url}/v1/reply", json={"text": text}, timeout=10).status_code == 200
        tokens_in, tokens_out = (metric(url, "llm_tokens_total", kind=k) for k in ("prompt", "completion"))
        assert tokens_in > 0 and tokens_out > 0
        expected = tokens_in * 2.0 / 1e6 + tokens_out * 10.0 / 1e6
        assert metric(url, "llm_cost_usd_total", model="fake-model") == pytest.approx(expected)
        assert metric(url, "llm_schema_checks_total", prompt="label", result="valid") == 1
        assert metric(url, "llm_schema_checks_total", prompt="label", result="invalid") == 2
        assert metric(url, "llm_schema_checks_total", prompt="echo") == 0  # free text: nothing to check


def test_every_prompt_has_a_route_of_its_own_unless_switched_off(fake, tmp_path):
    with running(tmp_path, fake.base_url) as (url, _):
        response = requests.post(f"{url}/v1/run/label", json={"variables": {"text": "so good"}}, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["output"] == {"label": "good"} and response.json()["prompt"] == "label"
        echo = requests.post(f"{url}/v1/run/echo", json={"variables": {"text": "hi there"}}, timeout=10)
        assert echo.json()["output"] == "hi there"  # free text: the text itself
        assert metric(url, "llm_requests_total", route="/v1/run/label") == 1
    with running(tmp_path, fake.base_url, name="flows-only", serve={"prompt_routes": False}) as (url, _):
        assert requests.post(f"{url}/v1/run/label", json={"variables": {"text": "x"}}, timeout=5).status_code == 404
        assert requests.post(f"{url}/v1/reply", json={"text": "x"}, timeout=5).status_code == 200


def test_every_response_carries_the_version(fake, tmp_path):
    with running(tmp_path, fake.base_url) as (url, service):
        for response in (
            requests.get(f"{url}/healthz", timeout=5),
            requests.get(f"{url}/readyz", timeout=5),
            requests.get(f"{url}/metrics", timeout=5),
            requests.get(f"{url}/nope", timeout=5),
            requests.post(f"{url}/v1/reply", data="not json", timeout=5),
        ):
            assert all(response.headers.get(h) for h in VERSION_HEADERS), (response.url, response.headers)
            assert response.headers["x-app-version"] == service.version.id


def test_request_id_is_kept_only_when_well_formed(fake, tmp_path):
    with running(tmp_path, fake.base_url) as (url, _):
        ok = requests.post(f"{url}/v1/reply", json={"text": "hi"}, headers={"X-Request-Id": "abc-123"}, timeout=5)
        assert ok.headers["x-request-id"] == "abc-123" and ok.json()["request_id"] == "abc-123"
        odd = requests.post(f"{url}/v1/reply", json={"text": "hi"}, headers={"X-Request-Id": "a b" * 40}, timeout=5)
        assert odd.headers["x-request-id"] != "a b" * 40 and len(odd.headers["x-request-id"]) == 32


def test_invalid_requests_are_422_without_model_calls(fake, tmp_path):
    with running(tmp_path, fake.base_url, serve={"max_input_chars": 50}) as (url, _):
        for path, kwargs in (
            ("reply", {"json": {"text": ""}}),
            ("reply", {"json": {"text": "x" * 51}}),
            ("reply", {"json": {"msg": "hi"}}),
            ("reply", {"json": {"text": "hi", "extra": 1}}),
            ("reply", {"json": ["hi"]}),
            ("reply", {"data": "{not json"}),
            ("run/label", {"json": {"variables": {"txt": "hi"}}}),
            ("run/label", {"json": {"text": "hi"}}),
            ("run/label", {"json": {"variables": {"text": 3}}}),
        ):
            response = requests.post(f"{url}/v1/{path}", timeout=5, **kwargs)
            assert response.status_code == 422, (path, kwargs, response.text)
        assert fake.calls() == 0
        assert metric(url, "llm_requests_total", status="422") == 9
        assert metric(url, "llm_requests_total") == 9


def test_probes_and_metrics_answer_while_the_model_hangs(tmp_path):
    """Liveness never waits on the model, and model calls do not hold threads: with more calls hung
    at the model than any thread pool has threads (anyio's default: 40), /healthz, /readyz and
    /metrics still answer, and every hung call is still answered once the model comes back."""
    gate, hung = threading.Event(), 60  # the fake model releases a hung call after 30 s: wait for less
    with FakeModel(toy.answers, gate=gate) as model, running(tmp_path, model.base_url) as (url, _):
        replies: list[int] = []

        def ask(i: int) -> None:
            replies.append(
                requests.post(f"{url}/v1/run/echo", json={"variables": {"text": f"hi {i}"}}, timeout=60).status_code
            )

        askers = [threading.Thread(target=ask, args=(i,)) for i in range(hung)]
        try:
            for asker in askers:
                asker.start()
            wait_for(lambda: model.calls() == hung, timeout=20, what=f"{hung} calls waiting at the model")
            calls = model.calls()
            for probe in ("/healthz", "/readyz", "/metrics"):
                assert requests.get(f"{url}{probe}", timeout=5).status_code == 200, probe
            assert model.calls() == calls  # the probes made no model call
            assert metric(url, "llm_inflight_requests") == hung
        finally:
            gate.set()
            for asker in askers:
                asker.join(timeout=30)
        assert replies == [200] * hung


def test_a_lone_surrogate_or_a_non_json_value_is_a_422_not_a_500(fake, tmp_path):
    with running(tmp_path, fake.base_url) as (url, _):
        for raw, says in (
            (b'{"text": "x \\ud800 y"}', "lone surrogate (\\ud800)"),
            (b'{"text": "x \\udfff"}', "lone surrogate (\\udfff)"),
            (b'{"text": NaN}', "NaN is not a JSON value"),
            (b'{"text": "x", "n": 1' + b"1" * 5000 + b"}", "not JSON"),
            (b"[" * 20_000 + b"]" * 20_000, "nested more than"),
            (b'{"text": "caf\xe9"}', "not valid UTF-8"),
        ):
            response = requests.post(
                f"{url}/v1/reply", data=raw, headers={"Content-Type": "application/json"}, timeout=5
            )
            assert response.status_code == 422, (raw[:40], response.text)
            assert says in response.json()["detail"], response.json()
        # A surrogate PAIR is an ordinary character (here an emoji): answered.
        pair = requests.post(f"{url}/v1/reply", data=b'{"text": "good \\ud83d\\ude00"}', timeout=5)
        assert pair.status_code == 200 and pair.json()["echo"] == "Hello good \U0001f600"
        assert fake.calls() == 2
        assert metric(url, "llm_requests_total", status="500") == 0


def test_a_text_that_makes_an_empty_prompt_is_a_422(fake, tmp_path):
    # The toy flow's schema takes any non-empty text; blanks only render its prompt empty.
    with running(tmp_path, fake.base_url) as (url, _):
        response = requests.post(f"{url}/v1/reply", json={"text": " \r\n"}, timeout=5)
        assert response.status_code == 422 and "renders empty" in response.json()["detail"], response.text
        assert fake.calls() == 0


def test_model_errors_are_502_and_timeouts_504(tmp_path):
    with FakeModel(toy.answers, error_every=1) as failing, FakeModel(toy.answers, latency_s=1.0) as slow:
        with running(tmp_path, failing.base_url, name="a") as (url, _):
            response = requests.post(f"{url}/v1/reply", json={"text": TEXT}, timeout=10)
            assert response.status_code == 502 and response.json()["kind"] == "http"
            assert TEXT not in response.text  # the model's error body (it echoes) stays inside
            assert metric(url, "llm_requests_total", status="502") == 1
            assert metric(url, "llm_model_calls_total", outcome="http") == 1
        sections = {"model": {"read_timeout_s": 0.2}, "serve": {"max_attempts": 1}}
        with running(tmp_path, slow.base_url, name="b", **sections) as (url, _):
            response = requests.post(f"{url}/v1/reply", json={"text": TEXT}, timeout=10)
            assert response.status_code == 504 and response.json()["kind"] == "timeout"
            assert metric(url, "llm_requests_total", status="504") == 1


def test_a_model_outage_degrades_answers_but_keeps_the_pod_ready(fake, tmp_path):
    """Every pod shares the endpoint: failing readiness on an outage would empty the Service."""
    with running(tmp_path, fake.base_url) as (url, service):
        service.ready_ttl_s = 0.0
        ready = requests.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["model_endpoint"] == "ok"
        assert metric(url, "llm_model_endpoint_up") == 1
        fake.stop()
        wait_for(lambda: requests.get(f"{url}/readyz", timeout=5).json()["model_endpoint"] != "ok", what="a probe")
        ready = requests.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text  # still in rotation
        assert ready.json() == {"status": "ready", "model_endpoint": "unreachable (transport)"}
        assert metric(url, "llm_model_endpoint_up") == 0  # what alerts read instead
        answer = requests.post(f"{url}/v1/reply", json={"text": TEXT}, timeout=10)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        body = answer.json()
        assert body["error"] == "model_unavailable" and body["kind"] == "transport"
        assert body["detail"] == "the model endpoint cannot be reached" and body["request_id"]
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200


def test_readyz_fails_only_when_the_endpoint_refuses_our_key(tmp_path, monkeypatch):
    with FakeModel(toy.answers, api_key="right-key") as model:
        monkeypatch.setenv("TEST_MODEL_KEY", "wrong-key")
        source = toy.write_version(ROOT, tmp_path / "v", model.base_url, model={"api_key_env": "TEST_MODEL_KEY"})
        with open_service("champion", str(source), {}) as service, in_thread(create_app(service), ready=False) as url:
            ready = requests.get(f"{url}/readyz", timeout=5)  # known from the first request on
            assert ready.status_code == 503
            assert ready.json()["reason"] == "the model endpoint refuses our key (HTTP 401)"
        monkeypatch.setenv("TEST_MODEL_KEY", "right-key")
        with open_service("champion", str(source), {}) as service, in_thread(create_app(service)) as url:
            assert requests.get(f"{url}/readyz", timeout=5).json() == {"status": "ready", "model_endpoint": "ok"}


@contextlib.contextmanager
def canary_process(tmp_path: Path, base_url: str, **env: str):
    """The canary track: a `serve` process of a DIFFERENT version (another greeting), its own mirror
    pointed at a dead port: had it mirrored a mirrored request, it would count an error."""
    source = toy.write_version(ROOT, tmp_path / "canary", base_url, greeting="Hi")
    env = {"SHADOW_FRACTION": "1", "SHADOW_URL": "http://127.0.0.1:9", **env}
    with in_process(PACKAGE, source, "candidate", tmp_path / "canary.log", **env) as url:
        yield url, from_directory("candidate", source).id


def test_stable_mirrors_to_the_canary_service_in_the_background_and_counts_agreement(fake, tmp_path):
    gate = threading.Event()
    with FakeModel(toy.answers, gate=gate) as canary_model:
        try:
            with canary_process(tmp_path, canary_model.base_url) as (canary_url, canary_version):
                env = {"SHADOW_FRACTION": "1", "SHADOW_URL": canary_url + "/"}
                with running(tmp_path, fake.base_url, env=env) as (url, service):
                    assert canary_version != service.version.id
                    response = requests.post(f"{url}/v1/reply", json={"text": TEXT}, timeout=10)
                    # The canary's model is still blocked: the user got the answer without waiting for it.
                    assert response.status_code == 200 and response.json()["echo"] == f"Hello {TEXT}"
                    wait_for(lambda: canary_model.calls() == 1, what="the mirrored request to reach the canary")
                    assert metric(url, "llm_shadow_requests_total") == 0
                    gate.set()
                    wait_for(lambda: metric(url, "llm_shadow_requests_total") == 1, what="the comparison")
                    assert metric(url, "llm_shadow_requests_total", outcome="agree", shadow_version=canary_version) == 1
                    assert metric(url, "llm_requests_total") == 1 and fake.calls() == 2
                    # The canary answered the mirror as a request of its own, and did not mirror it on.
                    assert metric(canary_url, "llm_requests_total", status="200", route="/v1/reply") == 1
                    assert metric(canary_url, "llm_shadow_requests_total") == 0
        finally:
            gate.set()


def test_shadow_disagreement_and_drops_when_busy(fake, tmp_path):
    gate = threading.Event()
    with FakeModel(toy.always("bad"), gate=gate) as worse:
        try:
            with running(tmp_path, worse.base_url, name="canary", greeting="Hi") as (canary_url, canary):
                canary_version = canary.version.id
                env = {"SHADOW_FRACTION": "1.0", "SHADOW_URL": canary_url}
                with running(tmp_path, fake.base_url, env=env, serve={"shadow_max_inflight": 1}) as (url, _):
                    for _ in range(3):
                        assert requests.post(f"{url}/v1/reply", json={"text": TEXT}, timeout=10).status_code == 200
                    assert metric(url, "llm_shadow_requests_total", outcome="dropped") == 2
                    gate.set()
                    wait_for(lambda: metric(url, "llm_shadow_requests_total", outcome="disagree") == 1, what="disagree")
                    assert metric(url, "llm_shadow_requests_total", shadow_version=canary_version) == 1
                    assert metric(url, "llm_shadow_requests_total", outcome="agree") == 0
        finally:
            gate.set()


def test_a_mirror_carries_the_callers_key_to_a_canary_that_asks_for_one(fake, tmp_path):
    keys = {"TEST_API_KEYS": "key-one"}
    serve = {"api_keys_env": "TEST_API_KEYS"}
    with running(tmp_path, fake.base_url, env=keys, name="canary", greeting="Hi", serve=serve) as (canary_url, _):
        env = {"SHADOW_FRACTION": "1", "SHADOW_URL": canary_url, **keys}
        with running(tmp_path, fake.base_url, env=env, serve=serve) as (url, _):
            auth = {"Authorization": "Bearer key-one"}
            assert requests.post(f"{url}/v1/reply", json={"text": TEXT}, headers=auth, timeout=10).status_code == 200
            wait_for(lambda: metric(url, "llm_shadow_requests_total") == 1, what="the mirror")
            assert metric(url, "llm_shadow_requests_total", outcome="agree") == 1


def test_a_mirror_to_the_same_version_or_a_dead_url_is_never_agreement(fake, tmp_path):
    """Between rollouts the canary Service points at the stable pods: same version, not a comparison."""
    with running(tmp_path / "other-pod", fake.base_url) as (twin_url, twin):
        env = {"SHADOW_FRACTION": "1", "SHADOW_URL": twin_url}
        with running(tmp_path, fake.base_url, env=env) as (url, service):
            assert service.version.id == twin.version.id
            assert requests.post(f"{url}/v1/reply", json={"text": TEXT}, timeout=10).status_code == 200
            wait_for(lambda: metric(url, "llm_shadow_requests_total") == 1, what="the mirror")
            assert metric(url, "llm_shadow_requests_total", outcome="same_version") == 1
    with running(tmp_path, fake.base_url, env={"SHADOW_FRACTION": "1", "SHADOW_URL": "http://127.0.0.1:9"}) as (url, _):
        assert requests.post(f"{url}/v1/reply", json={"text": TEXT}, timeout=10).status_code == 200
        wait_for(lambda: metric(url, "llm_shadow_requests_total", outcome="error") == 1, what="the failed mirror")
        assert metric(url, "llm_shadow_requests_total", outcome="agree") == 0


def test_version_id_is_a_content_hash_of_what_is_served(tmp_path):
    a = toy.write_version(ROOT, tmp_path / "a", "http://127.0.0.1:9/v1")
    b = toy.write_version(ROOT, tmp_path / "b", "http://127.0.0.1:9/v1")
    assert from_directory("champion", a).id == from_directory("champion", b).id
    (b / toy.DATA_FILE).write_text("Good morning\n")  # the app's own data file is part of the version
    changed = from_directory("champion", b)
    assert changed.id != from_directory("champion", a).id
    assert changed.prompt_version == from_directory("champion", a).prompt_version  # prompts unchanged
    assert changed.data == "Good morning"


def test_bad_version_directories_are_clear_errors(tmp_path, monkeypatch):
    source = toy.write_version(ROOT, tmp_path / "v", "http://127.0.0.1:9/v1")
    with pytest.raises(UserError, match="not one of champion, candidate"):
        load("production", source)
    (source / toy.DATA_FILE).write_text("   \n")
    with pytest.raises(UserError, match=r"greeting\.txt: expected a greeting"):
        load("champion", source)
    (source / toy.DATA_FILE).unlink()
    with pytest.raises(UserError, match=r"greeting\.txt: cannot read"):
        load("champion", source)
    (source / toy.DATA_FILE).write_text("Hi\n")
    (source / "prompts" / "label.yaml").unlink()
    with pytest.raises(UserError, match="the toy app needs prompt"):
        load("champion", source)
    params = source / "params.yaml"
    params.write_text(params.read_text().replace(toy.ENTRY, "nowhere.at_all:APP"))
    with pytest.raises(UserError, match=r"app\.entry: cannot import 'nowhere\.at_all'"):
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


def test_a_flow_that_is_not_async_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "blocking_app.py").write_text(
        "from {{ cookiecutter.package }}.app.contract import App, Flow\n\n"
        "def run(ctx, request):\n    return {'text': ctx.call('echo', request).text}\n\n"
        "APP = App(name='blocking', prompts=('echo',), flows={'reply': Flow(run)})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match=r"flow 'reply' of 'blocking_app:APP' must be an `async def` that awaits"):
        load_app("blocking_app:APP")


def test_serve_rejects_a_bad_shadow_fraction_in_one_line(tmp_path):
    source = toy.write_version(ROOT, tmp_path / "v", "http://127.0.0.1:9/v1")
    env = {"APP_VERSION_SOURCE": str(source), "SHADOW_FRACTION": "lots", "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package }}", "serve", "--port", "1"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "SHADOW_FRACTION: expected a number from 0 to 1, got 'lots'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "SHADOW_FRACTION is above 0 but SHADOW_URL (the canary's Service) is not set"),
        ("llm-app-canary:80", "SHADOW_URL: expected an http(s) base URL"),
    ],
)
def test_a_shadow_needs_a_url_to_mirror_to(tmp_path, url, message):
    source = toy.write_version(ROOT, tmp_path / "v", "http://127.0.0.1:9/v1")
    env = {"SHADOW_FRACTION": "0.1", "SHADOW_URL": url}
    with pytest.raises(UserError, match=re.escape(message)), open_service("champion", str(source), env):
        pass
