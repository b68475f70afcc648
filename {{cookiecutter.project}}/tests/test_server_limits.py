"""The service's limits, each against the real server on 127.0.0.1: a request deadline, a body cap,
back-pressure past `serve.max_inflight`, API keys and per-caller limits. Every refusal is a 4xx (or
the deadline's 504) with a JSON body that says which setting refused it, and comes before any model
call that would not fit."""

import contextlib
import socket
import threading
from pathlib import Path

import pytest
import requests
from live_server import in_thread, metric, wait_for

from {{ cookiecutter.package }}.errors import UserError
from {{ cookiecutter.package }}.serving.admission import ClientLimits
from {{ cookiecutter.package }}.serving.server import create_app, open_service
from {{ cookiecutter.package }}.testing import toy
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def running(tmp_path: Path, base_url: str, env: dict | None = None, **serve):
    source = toy.write_version(ROOT, tmp_path / "v", base_url, serve=serve)
    with open_service("champion", str(source), env or {}) as service, in_thread(create_app(service)) as url:
        yield url


@contextlib.contextmanager
def hung(url: str, count: int, model: FakeModel, gate: threading.Event, headers: dict | None = None):
    """`count` requests waiting at a gated model; yields their status codes (filled once released)."""
    statuses: list[int] = []

    def ask(i: int) -> None:
        body = {"variables": {"text": f"wait {i}"}}
        statuses.append(requests.post(f"{url}/v1/run/echo", json=body, headers=headers, timeout=30).status_code)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: model.calls() >= count, what=f"{count} calls at the model")
        yield statuses
    finally:
        gate.set()
        for thread in threads:
            thread.join(timeout=30)


def test_a_request_past_its_deadline_is_a_504_with_a_clear_body(tmp_path):
    # Each call is well within its read timeout; the two calls of the flow together are not.
    with (
        FakeModel(toy.answers, latency_s=0.4) as model,
        running(tmp_path, model.base_url, request_timeout_s=0.5) as url,
    ):
        response = requests.post(f"{url}/v1/reply", json={"text": "a good lamp"}, timeout=30)
        assert response.status_code == 504, response.text
        body = response.json()
        assert body["error"] == "deadline_exceeded" and body["request_id"] == response.headers["x-request-id"]
        assert body["detail"] == "no answer within 0.5 s (serve.request_timeout_s)"
        assert metric(url, "llm_requests_total", status="504") == 1
        assert metric(url, "llm_inflight_requests") == 0  # the abandoned request let go of its slot


def test_a_body_over_the_cap_is_a_413_also_when_chunked(tmp_path):
    with FakeModel(toy.answers) as model, running(tmp_path, model.base_url, max_body_bytes=1000) as url:
        big = {"text": "x" * 2000}
        declared = requests.post(f"{url}/v1/reply", json=big, timeout=10)
        assert declared.status_code == 413
        assert declared.json()["detail"] == "the request body is larger than 1000 bytes (serve.max_body_bytes)"
        # Chunked: no length to check up front. The client sends 1.5 kB of a body it never finishes;
        # the answer comes anyway, so the server stopped reading at the cap instead of waiting for it all.
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/reply HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(3):
                sock.sendall(b"1f4\r\n" + b"x" * 500 + b"\r\n")
            head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 413 "), head[:100]
        assert requests.post(f"{url}/v1/reply", json={"text": "good"}, timeout=10).status_code == 200
        assert model.calls() == 2  # the one request that fitted
        assert metric(url, "llm_requests_total", status="413") == 2


def test_back_pressure_past_max_inflight_is_a_429_with_retry_after_and_counted(tmp_path):
    gate = threading.Event()
    with FakeModel(toy.answers, gate=gate) as model, running(tmp_path, model.base_url, max_inflight=3) as url:
        with hung(url, 3, model, gate) as statuses:
            refused = requests.post(f"{url}/v1/run/echo", json={"variables": {"text": "one more"}}, timeout=10)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json()["reason"] == "capacity" and "serve.max_inflight" in refused.json()["detail"]
            assert model.calls() == 3  # refused before any model call
            assert metric(url, "llm_shed_requests_total", reason="capacity") == 1
            assert metric(url, "llm_requests_total", status="429") == 1
            assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        assert statuses == [200, 200, 200]
        assert requests.post(f"{url}/v1/run/echo", json={"variables": {"text": "now"}}, timeout=10).status_code == 200


def test_api_keys_guard_the_answer_routes_and_not_the_probes(tmp_path):
    env = {"TEST_API_KEYS": "key-one, key-two"}
    with FakeModel(toy.answers) as model, running(tmp_path, model.base_url, env, api_keys_env="TEST_API_KEYS") as url:
        body = {"text": "a good lamp"}
        for headers in ({}, {"Authorization": "Bearer key-three"}, {"Authorization": "key-two"},
                        {"Authorization": "Basic key-two"}, {"Authorization": "Bearer key-tw"}):  # fmt: skip
            response = requests.post(f"{url}/v1/reply", json=body, headers=headers, timeout=5)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"] == "Bearer" and response.json()["error"] == "unauthorized"
        assert model.calls() == 0
        ok = requests.post(f"{url}/v1/reply", json=body, headers={"Authorization": "Bearer key-two"}, timeout=5)
        assert ok.status_code == 200 and model.calls() == 2
        for probe in ("/healthz", "/readyz", "/metrics"):  # the kubelet and Prometheus hold no key
            assert requests.get(f"{url}{probe}", timeout=5).status_code == 200
        assert metric(url, "llm_requests_total", status="401") == 5


def test_api_keys_named_but_missing_is_one_clear_error(tmp_path):
    source = toy.write_version(ROOT, tmp_path / "v", "http://127.0.0.1:9/v1", serve={"api_keys_env": "TEST_API_KEYS"})
    says = r"serve\.api_keys_env: environment variable TEST_API_KEYS holds no key"
    with pytest.raises(UserError, match=says), open_service("champion", str(source), {"TEST_API_KEYS": " , "}):
        pass


def test_per_caller_limits_refuse_one_caller_and_not_another(tmp_path):
    gate = threading.Event()
    env = {"TEST_API_KEYS": "alice-key,bob-key"}
    limits = {"api_keys_env": "TEST_API_KEYS", "client_max_inflight": 1}
    alice, bob = {"Authorization": "Bearer alice-key"}, {"Authorization": "Bearer bob-key"}
    with FakeModel(toy.answers, gate=gate) as model, running(tmp_path, model.base_url, env, **limits) as url:
        with hung(url, 1, model, gate, headers=alice) as statuses:
            second = requests.post(
                f"{url}/v1/run/echo", json={"variables": {"text": "me again"}}, headers=alice, timeout=10
            )
            assert second.status_code == 429 and second.json()["reason"] == "client_concurrency"
            assert second.headers["retry-after"] == "1"
            assert model.calls() == 1
            bobs = threading.Thread(target=requests.post, args=(f"{url}/v1/run/echo",),
                                    kwargs={"json": {"variables": {"text": "bob"}}, "headers": bob, "timeout": 30})  # fmt: skip
            bobs.start()
            wait_for(lambda: model.calls("bob") == 1, what="bob's call at the model")  # bob is not refused
        bobs.join(timeout=30)
        assert statuses == [200]
        assert metric(url, "llm_shed_requests_total", reason="client_concurrency") == 1


def test_per_caller_rate_is_a_token_bucket_of_one_second():
    now = [0.0]
    limits = ClientLimits(max_inflight=0, rate_per_s=2.0, clock=lambda: now[0])
    assert limits.enter("a") is None and limits.enter("a") is None  # a burst of one second's worth
    refused = limits.enter("a")
    assert refused is not None and refused.reason == "client_rate" and refused.retry_after_s == 1
    assert limits.enter("b") is None  # another caller has its own bucket
    now[0] = 0.5  # half a second refills one request
    assert limits.enter("a") is None and limits.enter("a") is not None
    for caller in ("a", "a", "a", "b"):
        limits.leave(caller)
    assert not ClientLimits(0, 0.0).enabled


def test_the_rate_limit_on_the_real_server(tmp_path):
    with FakeModel(toy.answers) as model, running(tmp_path, model.base_url, client_rate_per_s=0.01) as url:
        body = {"variables": {"text": "hi"}}
        assert requests.post(f"{url}/v1/run/echo", json=body, timeout=5).status_code == 200
        refused = requests.post(f"{url}/v1/run/echo", json=body, timeout=5)  # the next token is 100 s away
        assert refused.status_code == 429 and refused.json()["reason"] == "client_rate"
        assert refused.headers["retry-after"] == "100"
        assert model.calls() == 1
