"""Production capture and feedback: the sink (production/capture.py) on its own, with a clock and a
write it controls, and the service writing through it for real on 127.0.0.1 (the toy app against a
fake model), read back with records.load as `drift` and `harvest` read it."""

import contextlib
import datetime
import os
import re
import threading
from pathlib import Path

import pytest
import requests
from live_server import in_thread, metric, wait_for

from {{ cookiecutter.package }}.app.loader import load_app
from {{ cookiecutter.package }}.errors import UserError
from {{ cookiecutter.package }}.production import records
from {{ cookiecutter.package }}.production.capture import Capture, Config
from {{ cookiecutter.package }}.serving.observability import Metrics, Redactor
from {{ cookiecutter.package }}.serving.server import create_app, open_service
from {{ cookiecutter.package }}.settings import CaptureSettings
from {{ cookiecutter.package }}.testing import toy
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

ROOT = Path(__file__).resolve().parents[1]
EMAIL = "jo.doe@example.com"
KEY = "sk-" + "Q7" * 12  # a provider key typed into a message
SECRET_HEADER = "caller-key-" + "9f" * 10


@pytest.fixture
def fake():
    with FakeModel(toy.answers) as model:
        yield model


@contextlib.contextmanager
def running(tmp_path: Path, base_url: str, env: dict | None = None, name: str = "v", rand=None, **sections):
    """The service in a thread with capture to tmp_path/captures (fraction 1 unless env says)."""
    source = toy.write_version(ROOT, tmp_path / name, base_url, **sections)
    env = {"CAPTURE_FRACTION": "1", "CAPTURE_DIR": str(tmp_path / "captures"), **(env or {})}
    extra = {"rand": rand} if rand else {}
    with open_service("champion", str(source), env, **extra) as service, in_thread(create_app(service)) as url:
        yield url, service


def counted(url: str, outcome: str, kind: str | None = None) -> float:
    labels = {"outcome": outcome, **({"kind": kind} if kind else {})}
    return metric(url, "llm_capture_records_total", **labels)


def sink(tmp_path: Path, clock=None, write=None, **settings) -> tuple[Capture, Metrics]:
    metrics = Metrics("m", "p")
    config = Config.resolve(CaptureSettings(**settings), {"CAPTURE_FRACTION": "1", "CAPTURE_DIR": str(tmp_path)})
    extra = {k: v for k, v in (("clock", clock), ("write", write)) if v is not None}
    return Capture(config, Redactor("k"), metrics, host="testhost", **extra), metrics


def value(metrics: Metrics, kind: str, outcome: str) -> float:
    return metrics.registry.get_sample_value("llm_capture_records_total", {"kind": kind, "outcome": outcome}) or 0.0


def test_answers_are_captured_redacted_with_versions_provider_and_timings(fake, tmp_path):
    env = {"TEST_API_KEYS": SECRET_HEADER}
    auth = {"Authorization": f"Bearer {SECRET_HEADER}"}
    with running(tmp_path, fake.base_url, env, serve={"api_keys_env": "TEST_API_KEYS"}) as (url, service):
        text = f"a good lamp, mail {EMAIL} key {KEY}"
        answered = requests.post(f"{url}/v1/reply", json={"text": text}, headers=auth, timeout=10)
        assert answered.status_code == 200
        prompt = requests.post(f"{url}/v1/run/echo", json={"variables": {"text": "hi"}}, headers=auth, timeout=10)
        assert prompt.status_code == 200
        refused = requests.post(f"{url}/v1/reply", json={"text": ""}, headers=auth, timeout=10)
        assert refused.status_code == 422  # a caller's mistake: never captured
        wait_for(lambda: counted(url, "written", "answer") == 2, what="two answers on disk")
        assert list((tmp_path / "captures").rglob("*.jsonl.open"))  # still being written to
        assert not records.capture_files([tmp_path / "captures"])  # ...so a reader sees nothing yet
        version = service.version
    # Shut down: the file is closed and renamed, a complete .jsonl.
    (path,) = records.capture_files([tmp_path / "captures"])
    assert not list((tmp_path / "captures").rglob("*.open"))
    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    assert path.parent.name == day and path.name.startswith(f"capture-{service.capture.writer.host}-{os.getpid()}-")
    raw = path.read_text()
    for secret in (EMAIL, KEY, SECRET_HEADER):
        assert secret not in raw
    captured = records.load([tmp_path / "captures"])
    assert captured.skipped == 0
    alone, flow = sorted(captured.answers, key=lambda a: a.target)  # echo, flow:reply
    assert flow.request_id == answered.headers["x-request-id"] and flow.target == "flow:reply"
    assert flow.data["route"] == "/v1/reply" and flow.ok
    assert flow.request["text"].startswith("a good lamp, mail <email:") and "<secret:" in flow.request["text"]
    assert flow.reply["label"] == "good" and "<email:" in flow.reply["echo"]  # the reply's texts too
    assert flow.data["fields"] == {"label": "good"}  # the flow's loggable fields
    assert flow.data["version"] == {
        "id": version.id, "alias": "champion", "prompt_version": version.prompt_version,
        "prompts": version.prompt_versions, "model": "fake-model",
    }  # fmt: skip
    assert flow.data["provider"] == "fake-model fingerprint=fake-1"
    assert flow.data["tokens_in"] > 0 and flow.data["tokens_out"] > 0
    assert 0 < flow.data["model_ms"] <= flow.data["latency_ms"]
    assert flow.data["error"] is None and flow.data["mirror_of"] is None
    assert flow.data["category"] is None and flow.data["fallback"] is False  # the toy flow has no category
    assert alone.target == "echo" and alone.request == {"variables": {"text": "hi"}}
    assert alone.reply["output"] == "hi"


def test_the_fraction_is_honoured_and_model_failures_are_captured(fake, tmp_path):
    draws = iter([0.2, 0.7, 0.49, 0.5])  # sampled when below 0.5: the 1st and the 3rd
    with running(tmp_path, fake.base_url, {"CAPTURE_FRACTION": "0.5"}, rand=lambda: next(draws)) as (url, _):
        ids = []
        for i in range(4):
            response = requests.post(f"{url}/v1/reply", json={"text": f"good {i}"}, timeout=10)
            assert response.status_code == 200
            ids.append(response.headers["x-request-id"])
        assert requests.post(f"{url}/v1/reply", json={"text": 5}, timeout=10).status_code == 422  # never drawn for
        wait_for(lambda: counted(url, "written") == 2, what="the sampled answers")
    assert sorted(a.request_id for a in records.load([tmp_path / "captures"]).answers) == sorted([ids[0], ids[2]])
    with FakeModel(toy.answers, error_every=1) as failing, running(tmp_path / "b", failing.base_url) as (url, _):
        failed = requests.post(f"{url}/v1/reply", json={"text": "good"}, timeout=10)
        assert failed.status_code == 502
    (answer,) = records.load([tmp_path / "b" / "captures"]).answers
    assert answer.request_id == failed.headers["x-request-id"] and not answer.ok
    assert answer.data["status"] == 502 and answer.reply is None and answer.data["error"] == "http"
    assert answer.request == {"text": "good"} and answer.data["provider"] is None


def test_feedback_is_stored_with_the_capture_and_joined_to_its_answer(fake, tmp_path):
    with running(tmp_path, fake.base_url) as (url, _):
        answered = requests.post(f"{url}/v1/reply", json={"text": "a good lamp"}, timeout=10)
        rated = answered.headers["x-request-id"]
        correction = {"label": "bad", "note": f"ask {EMAIL}"}
        body = {"request_id": rated, "rating": "down", "correction": correction, "comment": f"call {EMAIL}"}
        response = requests.post(f"{url}/v1/feedback", json=body, timeout=10)
        assert response.status_code == 202 and response.json() == {"request_id": rated}
        # An answer that was not sampled (or is served by another pod) may be rated too.
        orphan = requests.post(f"{url}/v1/feedback", json={"request_id": "other-pod.1", "rating": "up"}, timeout=10)
        assert orphan.status_code == 202
        wait_for(lambda: counted(url, "written", "feedback") == 2, what="the ratings on disk")
        assert metric(url, "llm_requests_total", route="/v1/feedback", status="202") == 2
        # What LLMNegativeFeedbackHigh divides (k8s/prometheusrule.yaml).
        assert metric(url, "llm_feedback_total", rating="down") == metric(url, "llm_feedback_total", rating="up") == 1
    raw = "".join(p.read_text() for p in records.capture_files([tmp_path / "captures"]))
    assert EMAIL not in raw
    captured = records.load([tmp_path / "captures"])
    (answer,) = captured.answers
    assert answer.request_id == rated and answer.rating == "down"
    (feedback,) = answer.feedback
    assert feedback["correction"]["label"] == "bad" and feedback["correction"]["note"].startswith("ask <email:")
    assert feedback["comment"].startswith("call <email:")
    assert [f["request_id"] for f in captured.orphan_feedback] == ["other-pod.1"]


BAD_FEEDBACK = [
    ({"request_id": "abc"}, "(body): 'rating' is a required property"),
    ({"request_id": "abc", "rating": "meh"}, "rating: 'meh' is not one of ['up', 'down']"),
    ({"request_id": "a b", "rating": "up"}, "request_id: 'a b' does not match"),
    ({"request_id": "abc\n", "rating": "up"}, "request_id: 'abc\\n' does not match"),
    ({"request_id": "abc", "rating": "up", "stars": 5}, "Additional properties are not allowed ('stars'"),
    ({"request_id": "abc", "rating": "up", "correction": 3}, "correction: 3 is not of type 'object', 'string'"),
    ({"request_id": "abc", "rating": "up", "comment": "x" * 101}, "a text value is longer than 100 characters"),
    (["abc", "up"], "the request body must be a JSON object"),
    (b"{nope", "the request body is not JSON"),
]


def test_bad_feedback_is_one_clear_422_and_stores_nothing(fake, tmp_path):
    with running(tmp_path, fake.base_url, serve={"max_input_chars": 100}) as (url, _):
        for body, detail in BAD_FEEDBACK:
            sent = {"data": body} if isinstance(body, bytes) else {"json": body}
            response = requests.post(f"{url}/v1/feedback", timeout=10, **sent)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["error"] == "invalid_request" and detail in response.json()["detail"], body
            assert "\n" not in response.json()["detail"]
        assert requests.get(f"{url}/v1/feedback", timeout=10).status_code == 405
        assert metric(url, "llm_requests_total", route="/v1/feedback", status="422") == len(BAD_FEEDBACK)
        assert counted(url, "written") + counted(url, "dropped") == 0
    assert records.load([tmp_path / "captures"]).feedback == []


def test_feedback_is_admitted_like_answers_and_off_without_capture(fake, tmp_path):
    env = {"TEST_API_KEYS": "alice-key"}
    limits = {"api_keys_env": "TEST_API_KEYS", "client_rate_per_s": 0.001}
    body = {"request_id": "abc", "rating": "up"}
    with running(tmp_path, fake.base_url, env, serve=limits) as (url, _):
        assert requests.post(f"{url}/v1/feedback", json=body, timeout=10).status_code == 401
        alice = {"Authorization": "Bearer alice-key"}
        assert requests.post(f"{url}/v1/feedback", json=body, headers=alice, timeout=10).status_code == 202
        again = requests.post(f"{url}/v1/feedback", json=body, headers=alice, timeout=10)
        assert again.status_code == 429 and again.json()["reason"] == "client_rate"  # one bucket for both routes
        assert requests.post(f"{url}/v1/reply", json={"text": "good"}, headers=alice, timeout=10).status_code == 429
        assert metric(url, "llm_shed_requests_total", reason="client_rate") == 2
    with running(tmp_path, fake.base_url, {"CAPTURE_FRACTION": "0"}, name="off") as (url, service):
        assert service.capture is None
        off = requests.post(f"{url}/v1/feedback", json=body, timeout=10)
        assert off.status_code == 404 and "capture is off" in off.json()["detail"]


def test_a_flow_named_feedback_is_refused_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "clash_app.py").write_text(
        "from {{ cookiecutter.package }}.app.contract import App, Flow\n\n"
        "async def run(ctx, request):\n    return {}\n\n"
        "APP = App(name='clash', prompts=('echo',), flows={'feedback': Flow(run)})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match=r"flow 'feedback' of 'clash_app:APP': the service answers POST /v1/feedback"):
        load_app("clash_app:APP")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CAPTURE_FRACTION": "most"}, "CAPTURE_FRACTION: expected a number from 0 to 1, got 'most'"),
        ({"CAPTURE_FRACTION": "1.5"}, "CAPTURE_FRACTION: expected a number from 0 to 1, got '1.5'"),
        ({"CAPTURE_DIR": " "}, "CAPTURE_DIR: expected a directory for the capture files"),
        ({"CAPTURE_DIR": "{file}/captures"}, "cannot create it (Not a directory)"),
    ],
)
def test_bad_capture_settings_are_one_clear_error(tmp_path, env, message):
    (tmp_path / "file").write_text("")
    env = {"CAPTURE_FRACTION": "1", **{k: v.format(file=tmp_path / "file") for k, v in env.items()}}
    source = toy.write_version(ROOT, tmp_path / "v", "http://127.0.0.1:9/v1")
    with pytest.raises(UserError, match=re.escape(message)), open_service("champion", str(source), env):
        pass


def test_a_mirrored_captured_answer_gets_its_shadow_line(fake, tmp_path):
    with running(tmp_path, fake.base_url, name="canary", greeting="Hi") as (canary_url, canary):
        env = {"SHADOW_FRACTION": "1", "SHADOW_URL": canary_url}
        with running(tmp_path / "stable", fake.base_url, env) as (url, _):
            answered = requests.post(f"{url}/v1/reply", json={"text": "a good lamp"}, timeout=10)
            wait_for(lambda: counted(url, "written", "shadow") == 1, what="the shadow line")
    (answer,) = records.load([tmp_path / "stable" / "captures"]).answers
    assert answer.request_id == answered.headers["x-request-id"]
    assert [(s["outcome"], s["shadow_version"]) for s in answer.shadow] == [("agree", canary.version.id)]
    # The canary captured the mirror as its own answer, marked with the version that mirrored it.
    (mirror,) = records.load([tmp_path / "captures"]).answers
    assert mirror.request_id == answer.request_id and mirror.data["mirror_of"] == answer.data["version"]["id"]


def test_a_full_queue_drops_and_counts_and_never_waits(tmp_path):
    gate, writing = threading.Event(), threading.Event()

    def hung_disk(fd: int, data: bytes) -> int:
        writing.set()
        gate.wait(30)
        return os.write(fd, data)

    capture, metrics = sink(tmp_path, write=hung_disk, max_queue=2)
    try:
        assert capture.answer({"request_id": "r0", "target": "echo", "status": 200, "request": {}})
        assert writing.wait(10)  # the writer holds r0 and waits on the disk
        results = []
        putter = threading.Thread(
            target=lambda: results.extend(capture.feedback(f"r{i}", "up") for i in range(1, 6)), daemon=True
        )
        putter.start()
        putter.join(10)
        assert not putter.is_alive(), "a record waited for the disk"
        assert results == [True, True, False, False, False]
        assert value(metrics, "feedback", "dropped") == 3
    finally:
        gate.set()
        capture.close()
    assert value(metrics, "answer", "written") == 1 and value(metrics, "feedback", "written") == 2
    captured = records.load([tmp_path])
    assert [a.request_id for a in captured.answers] == ["r0"]
    assert sorted(f["request_id"] for f in captured.orphan_feedback) == ["r1", "r2"]


def test_a_hung_disk_never_holds_up_an_answer_and_full_means_503_for_feedback(fake, tmp_path):
    gate, writing = threading.Event(), threading.Event()

    def hung_disk(fd: int, data: bytes) -> int:
        writing.set()
        gate.wait(30)
        return os.write(fd, data)

    with running(tmp_path, fake.base_url, capture={"max_queue": 1}) as (url, service):
        service.capture.writer._write_fd = hung_disk
        try:
            for _ in range(4):  # the first is held by the writer, the second waits, the others drop
                assert requests.post(f"{url}/v1/reply", json={"text": "good"}, timeout=10).status_code == 200
                writing.wait(10)
            assert counted(url, "dropped", "answer") == 2
            full = requests.post(f"{url}/v1/feedback", json={"request_id": "abc", "rating": "up"}, timeout=10)
            assert full.status_code == 503 and full.headers["retry-after"] == "1"
            assert "capture.max_queue" in full.json()["detail"]
        finally:
            gate.set()
    assert len(records.load([tmp_path / "captures"]).answers) == 2


def test_a_failing_disk_never_fails_an_answer(fake, tmp_path):
    captures = tmp_path / "captures"
    captures.mkdir()
    today = datetime.datetime.now(datetime.UTC)
    for day in (today, today + datetime.timedelta(days=1)):  # a file config the day's folder goes
        (captures / day.strftime("%Y-%m-%d")).write_text("")
    with running(tmp_path, fake.base_url) as (url, _):
        assert requests.post(f"{url}/v1/reply", json={"text": "good"}, timeout=10).status_code == 200
        body = {"request_id": "abc", "rating": "up"}
        assert requests.post(f"{url}/v1/feedback", json=body, timeout=10).status_code == 202
        wait_for(lambda: counted(url, "failed") == 2, what="the failed writes counted")
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200


def test_files_rotate_by_age_and_size_and_only_closed_ones_are_read(tmp_path):
    now = [1_800_000_000.0]
    capture, metrics = sink(tmp_path, clock=lambda: now[0], rotate_s=60, rotate_bytes=10_000)
    capture.writer.idle_s = 0.02  # the clock is ours: let the writer look at it often
    try:
        capture.feedback("a", "up")
        wait_for(lambda: value(metrics, "feedback", "written") == 1, what="the first line")
        (first,) = tmp_path.rglob("*.jsonl.open")
        assert records.capture_files([tmp_path]) == []
        now[0] += 61  # the file is due: closed even with no traffic
        wait_for(lambda: not first.exists(), what="the rotation")
        assert [p.name for p in records.capture_files([tmp_path])] == [first.name.removesuffix(".open")]
        capture.feedback("b", "down", comment="x" * 20_000)  # past rotate_bytes: closed after this line
        wait_for(lambda: len(records.capture_files([tmp_path])) == 2, what="the rotation by size")
        capture.feedback("c", "up")
        wait_for(lambda: value(metrics, "feedback", "written") == 3, what="the third line")
    finally:
        capture.close()
    assert not list(tmp_path.rglob("*.open"))
    captured = records.load([tmp_path])
    assert captured.files == 3 and [f["request_id"] for f in captured.orphan_feedback] == ["a", "b", "c"]


def test_a_file_left_open_by_a_killed_process_is_closed_at_start(tmp_path):
    day = tmp_path / "2027-01-01"
    day.mkdir()
    dead = day / "capture-testhost-999999999-20270101T000000Z-0.jsonl.open"  # beyond any pid_max
    dead.write_text(records.dumps({"schema": 1, "kind": "feedback", "request_id": "x", "rating": "up"}) + '{"torn')
    other_host = day / "capture-otherhost-999999999-20270101T000000Z-0.jsonl.open"
    other_host.write_text("")
    capture, _ = sink(tmp_path)
    capture.close()
    assert not dead.exists() and other_host.exists()  # another host's file is that host's business
    captured = records.load([tmp_path])
    assert captured.skipped == 1 and [f["request_id"] for f in captured.orphan_feedback] == ["x"]
