"""Logs and spans carry ids, versions, sizes and timings, never the user's secrets."""

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from live_server import in_thread

from {{ cookiecutter.package }}.errors import UserError
from {{ cookiecutter.package }}.serving import observability
from {{ cookiecutter.package }}.serving.observability import JsonFormatter, Redactor, Tracing, configure_logging
from {{ cookiecutter.package }}.serving.server import create_app, open_service
from {{ cookiecutter.package }}.testing import toy
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-SENTINEL0123456789abcdefXYZ"
EMAIL = "sentinel.user@example.org"
CARD = "4111 1111 1111 1111"
PHONE = "+44 20 7946 0958"
MODEL_KEY = "model-key-SENTINEL-5f2b9c41d7"
SENTINELS = (SECRET, EMAIL, CARD, CARD.replace(" ", ""), PHONE, MODEL_KEY, "SENTINEL")
MESSAGE = f"A good lamp, order BH-20001. Card {CARD}, email {EMAIL}, phone {PHONE}, my key is {SECRET}"


def test_redactor_hashes_each_kind_and_keeps_the_rest():
    redact = Redactor()
    text = f"mail {EMAIL}, card {CARD}, call {PHONE}, key {SECRET}, order BH-10422 of 2024-05-01 for 59.90"
    out = redact(text)
    for value in (EMAIL, CARD, PHONE, SECRET):
        assert value not in out
    for kind in ("email", "card", "phone", "secret"):
        assert f"<{kind}:" in out, out
    assert "order BH-10422 of 2024-05-01 for 59.90" in out  # ids, dates and prices are not PII
    # Hashed, not dropped: the same value gives the same token, so incidents can be correlated...
    assert redact(f"again {EMAIL.upper()}").split()[-1] == redact(EMAIL)
    assert redact(CARD.replace(" ", "-")) == redact(CARD)
    # ...and a key (LOG_HASH_KEY) makes the tokens unguessable from a list of known values.
    assert Redactor("k1")(EMAIL) != Redactor("k2")(EMAIL) != redact(EMAIL)
    assert redact("Authorization: Bearer abcdefghij0123456789").endswith(">")
    assert redact("AKIAABCDEFGHIJKLMNOP").startswith("<secret:")


def test_emails_in_any_script_are_redacted_and_sentences_keep_their_full_stop():
    redact = Redactor()
    for address in ("jöhn@exämple.de", "anaïs.müller+tag@bücher.example", "用户@例子.中国", "o'brien@ex.ie"):
        out = redact(f"write to {address}. thanks")
        assert address.split("@")[1] not in out and "<email:" in out, out
        assert out.endswith(". thanks")  # the sentence's full stop is not part of the address
    assert redact("version 1.2.3@4.5") == "version 1.2.3@4.5"  # no letters in the last label: not an address


def test_adversarial_texts_are_redacted_right():
    """Texts that sent the old patterns into quadratic backtracking: the result is still right."""
    redact = Redactor()
    for text in ("1-" * 2000, "(1-" * 1333, "a@" * 2000, "a." * 2000, "a@b." * 1000, "x" * 4000 + "@"):
        assert redact(text) == text  # none of these holds a value to hide
    assert redact("a1" * 2000).startswith("<secret:")  # one long token of letters and digits
    assert redact("1 " * 2000).startswith("<phone:")  # a run of digits reads as a number: hidden
    assert redact("+44 20 7946 0958abc") == "+44 20 7946 0958abc"  # glued to a word: an id, not a phone


def test_redaction_patterns_cannot_backtrack_over_a_run():
    """Linear time by construction, checked on the patterns themselves (timings belong in
    benchmarks/bench_redaction.py, not in tests): no unbounded repeat may give characters back, and
    every pattern starts with a lookbehind or a literal, so a failed try is not tried again from
    inside the same run. Each character is then scanned a bounded number of times per pattern."""
    from re import _parser

    def backtracking(items):
        for op, arg in items:
            name = str(op)
            if name in ("MAX_REPEAT", "MIN_REPEAT"):
                if arg[1] == _parser.MAXREPEAT:
                    yield name
                yield from backtracking(arg[2])
            elif name == "POSSESSIVE_REPEAT":
                yield from backtracking(arg[2])
            elif name == "SUBPATTERN":
                yield from backtracking(arg[-1])
            elif name == "BRANCH":
                for branch in arg[1]:
                    yield from backtracking(branch)
            elif name in ("ASSERT", "ASSERT_NOT"):
                yield from backtracking(arg[1])

    assert len(observability.PATTERNS) == 5
    for pattern in observability.PATTERNS:
        parsed = list(_parser.parse(pattern.pattern))
        assert not list(backtracking(parsed)), pattern.pattern
        op, arg = parsed[0]
        assert (str(op) == "ASSERT_NOT" and arg[0] == -1) or str(op) in ("AT", "LITERAL"), pattern.pattern


def test_json_formatter_drops_exception_messages():
    logger = logging.getLogger("test.formatter")
    record = None
    try:
        raise ValueError(f"model said: {EMAIL}")
    except ValueError:
        record = logger.makeRecord("test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info(),
                                   extra={"fields": {"request_id": "r1"}})  # fmt: skip
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["event"] == "failed" and entry["request_id"] == "r1" and entry["error_type"] == "ValueError"
    assert EMAIL not in line and "test_observability.py" in entry["stack"]


@pytest.fixture
def captured_logs():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    configure_logging("INFO", stream=buffer)
    yield buffer
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("uvicorn.access").disabled = False


@pytest.mark.parametrize("log_content", [False, True], ids=["default", "LOG_CONTENT"])
def test_no_secret_email_or_card_reaches_logs_or_spans(tmp_path, monkeypatch, captured_logs, log_content):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    # A model that needs a key and echoes the request in answers and in errors (every 4th call fails).
    model = FakeModel(toy.answers, api_key=MODEL_KEY, error_every=4)
    model.start()
    monkeypatch.setenv("TEST_MODEL_KEY", MODEL_KEY)
    source = toy.write_version(ROOT, tmp_path / "v", model.base_url, model={"api_key_env": "TEST_MODEL_KEY"})
    exporter = InMemorySpanExporter()
    tracing = Tracing.with_exporter(exporter, "test", capture_content=log_content)
    env = {"LOG_CONTENT": "true" if log_content else "false"}
    try:
        with (
            open_service("champion", str(source), env, tracing=tracing) as service,
            in_thread(create_app(service)) as url,
        ):
            ok = requests.post(f"{url}/v1/reply", json={"text": MESSAGE}, timeout=10)
            failed = requests.post(f"{url}/v1/reply", json={"text": MESSAGE}, timeout=10)
            assert ok.status_code == 200 and EMAIL in ok.text  # the user gets their own answer back
            assert failed.status_code == 502
    finally:
        model.stop()
    logs = captured_logs.getvalue()
    spans = exporter.get_finished_spans()
    dumped = "\n".join(span.to_json() for span in spans)
    for sentinel in SENTINELS:
        assert sentinel not in logs, sentinel
        assert sentinel not in dumped, sentinel

    entries = [json.loads(line) for line in logs.splitlines()]
    answers = [e for e in entries if e["event"] == "request"]
    assert [a["status"] for a in answers] == [200, 502]
    first, second = answers
    assert first["label"] == "good" and first["tokens_in"] > 0 and first["latency_ms"] > 0  # the flow's log fields
    assert first["route"] == "/v1/reply" and first["calls"] == 2 and first["version"] == service.version.id
    assert first["request_chars"] > len(MESSAGE)
    assert second["error_kind"] == "http"
    chats = [s for s in spans if s.name == "chat fake-model"]
    assert len(chats) == 4
    assert chats[0].attributes["gen_ai.request.model"] == "fake-model"
    assert chats[0].attributes["gen_ai.operation.name"] == "chat"
    assert chats[0].attributes["gen_ai.system"] == "openai"
    assert chats[0].attributes["gen_ai.usage.input_tokens"] > 0
    assert chats[0].attributes["gen_ai.usage.output_tokens"] > 0
    assert chats[-1].attributes["error.type"] == "http"
    (server,) = [s for s in spans if s.name == "POST /v1/reply" and s.attributes["http.response.status_code"] == 200]
    assert all(c.parent.trace_id == server.context.trace_id for c in chats[:2])
    if log_content:
        assert "<email:" in first["request"] and "<card:" in first["request"] and "<secret:" in first["request"]
        assert "BH-20001" in first["request"]  # what is not sensitive stays readable
        assert "<email:" in first["reply"]
        assert "<email:" in server.attributes["app.request.content"]
    else:
        assert all("request" not in a and "reply" not in a for a in answers)
        assert not any(k.startswith("app.re") and k.endswith("content") for k in server.attributes)


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
MALFORMED = {
    "garbage": "not-a-traceparent",
    "upper case": f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
    "zero trace id": f"00-{'0' * 32}-{PARENT_ID}-01",
    "version ff": f"ff-{TRACE_ID}-{PARENT_ID}-01",
    "too long": f"00-{TRACE_ID}-{PARENT_ID}-01-" + "x" * 600,
}


def test_an_incoming_traceparent_is_joined_and_a_malformed_one_ignored(tmp_path, captured_logs):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    model = FakeModel(toy.answers)
    model.start()
    source = toy.write_version(ROOT, tmp_path / "v", model.base_url)
    exporter = InMemorySpanExporter()

    def spans_of(url: str, headers: dict[str, str]) -> tuple[list, dict]:
        exporter.clear()
        reply = requests.post(f"{url}/v1/reply", json={"text": "a good lamp"}, headers=headers, timeout=10)
        assert reply.status_code == 200, reply.text  # a bad header is never the caller's 4xx
        entry = [e for e in map(json.loads, captured_logs.getvalue().splitlines()) if e["event"] == "request"][-1]
        return exporter.get_finished_spans(), entry

    try:
        with (
            open_service("champion", str(source), {}, tracing=Tracing.with_exporter(exporter, "test")) as service,
            in_thread(create_app(service)) as url,
        ):
            joined, entry = spans_of(url, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "fe=1"})
            malformed = {name: spans_of(url, {"traceparent": value}) for name, value in MALFORMED.items()}
            unsampled, unsampled_entry = spans_of(url, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"})
    finally:
        model.stop()

    # The request's span is a child of the caller's span, and the model calls are in that trace.
    (server,) = [s for s in joined if s.name == "POST /v1/reply"]
    chats = [s for s in joined if s.name.startswith("chat ")]
    assert chats and {f"{s.context.trace_id:032x}" for s in joined} == {TRACE_ID}
    assert f"{server.parent.span_id:016x}" == PARENT_ID and server.parent.is_remote
    assert all(c.parent.span_id == server.context.span_id for c in chats)
    assert server.context.trace_state.get("fe") == "1"
    assert entry["trace_id"] == TRACE_ID  # the log line names the caller's trace too
    # A malformed header starts a new trace of the service's own.
    for name, (spans, entry) in malformed.items():
        (server,) = [s for s in spans if s.name == "POST /v1/reply"]
        assert server.parent is None, name
        assert entry["trace_id"] == f"{server.context.trace_id:032x}" != TRACE_ID, name
    # A caller that sampled its trace out gets the same from us (one trace is whole or absent).
    assert unsampled == () and unsampled_entry["trace_id"] == TRACE_ID


def test_tracing_is_off_unless_configured():
    assert not Tracing.from_env({}, "t").enabled
    assert not Tracing.from_env({"OTEL_TRACES_EXPORTER": "none"}, "t").enabled
    console = Tracing.from_env({"OTEL_TRACES_EXPORTER": "console"}, "t")
    otlp = Tracing.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, "t")
    assert console.enabled and otlp.enabled and not otlp.capture_content
    console.shutdown(), otlp.shutdown()
    with pytest.raises(UserError, match="OTEL_TRACES_EXPORTER: 'jaeger'"):
        Tracing.from_env({"OTEL_TRACES_EXPORTER": "jaeger"}, "t")
    # Off means the OpenTelemetry SDK is not even imported.
    code = (
        "import sys; from {{ cookiecutter.package }}.serving.observability import Tracing;"
        "t = Tracing.from_env({}, 't'); print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
