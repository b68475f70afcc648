"""Logs, metrics and traces of the service — none of them carries user content by default.

- Logs are one JSON object per line: ids, versions, lengths, token counts, latencies. Request and
  answer text appear only when `LOG_CONTENT=true`, and then redacted: emails (any script), phone
  numbers, card numbers and API-key-like strings become `<kind:hash>` (HMAC-SHA256 keyed by
  `LOG_HASH_KEY`: a Secret in k8s/; without it a hash of a known address can be recomputed), so an
  incident can still be correlated across lines without the value itself. Redaction takes time
  linear in the text, whatever the text (benchmarks/bench_redaction.py).
- Metrics are Prometheus series in a registry of their own (one per server object, so tests can run
  several): `llm_requests_total{status, route}`, `llm_request_latency_seconds{route}`, `llm_tokens_total{kind}`,
  what they cost (`llm_cost_usd_total`), whether answers match their prompt's output schema
  (`llm_schema_checks_total{prompt, result}`), per-call model series, the shadow comparisons, requests in flight and refused (`llm_shed_requests_total`),
  production capture's records (`llm_capture_records_total{kind, outcome}`: written, dropped, failed),
  users' ratings (`llm_feedback_total{rating}`)
  and whether the model endpoint answers (`llm_model_endpoint_up`), all labelled with the model and
  prompt version.
- Traces are OpenTelemetry spans with `gen_ai.*` attributes; a request's span joins the caller's trace
  when it sends a W3C `traceparent`, so a frontend's trace holds the model calls. Off unless configured
  (`OTEL_TRACES_EXPORTER=console|otlp`, or `OTEL_EXPORTER_OTLP_ENDPOINT` set); the SDK is imported
  only then. Message content goes on spans only with `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`,
  redacted like logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

TRUE = {"1", "true", "yes", "on"}

# ----------------------------------------------------------------------------------------- redaction

# Linear time on any text (a log line must never cost more than the request): every unbounded run
# is possessive (`++`, `*+`: never given back, so never re-tried), and starts only where a run of its
# characters starts (the lookbehind refuses a position inside one), so no character is scanned twice
# by a pattern. Whether a run is a key, an email or a phone number is decided on the run, in Python.
# Order matters: keys first (they may contain digit runs), cards before phones (both are digit runs).
_BEARER = re.compile(r"\bBearer\s++[A-Za-z0-9._~+/=-]++")
_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]++")
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]++@[\w-]++(?:\.[\w-]++)++")  # \w: jöhn@exämple.de too
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")  # bounded: at most 37 characters a try
_PHONE = re.compile(r"(?<![\w-])\+?\(?\d[\d ().-]*+")
PATTERNS = (_BEARER, _TOKEN, _EMAIL, _CARD, _PHONE)

_KEY_PREFIX = re.compile(r"(?<![A-Za-z0-9_])(?:(?:sk|pk|rk)-[A-Za-z0-9_-]{16}|gh[pousr]_[A-Za-z0-9]{20})")
_AWS_KEY = re.compile(r"AKIA[0-9A-Z]{16}")
_TLD = re.compile(r"[^\W\d_]{2,}")
_NOT_DIGIT = re.compile(r"\D")


def _is_key(token: str) -> bool:
    """A provider key (sk-, pk-, rk-, gh?_, AKIA), or any long token that mixes letters and digits."""
    if _KEY_PREFIX.search(token) or _AWS_KEY.fullmatch(token):
        return True
    return len(token) >= 32 and re.search(r"[0-9]", token) is not None and re.search(r"[A-Za-z]", token) is not None


def _phone_end(run: str, after: str) -> int:
    """Where the phone number in `run` ends: after its last digit that is not glued to a word or a
    dash (`after` is the character following the run); 0 when there is none."""
    for i in range(len(run) - 1, -1, -1):
        following = run[i + 1] if i + 1 < len(run) else after
        if run[i].isdigit() and not (following.isalnum() or following in "_-"):
            return i + 1
    return 0


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


class Redactor:
    """Replaces sensitive substrings by `<kind:hash10>`; the hash of one value is stable."""

    def __init__(self, key: str | None = None) -> None:
        self._key = (key or "").encode()

    def token(self, kind: str, value: str) -> str:
        normal = re.sub(r"[\s().-]", "", value).lower() if kind in ("phone", "card") else value.lower()
        digest = hmac.new(self._key, normal.encode(), hashlib.sha256).hexdigest()[:10]
        return f"<{kind}:{digest}>"

    def __call__(self, text: str) -> str:
        def bearer(m: re.Match[str]) -> str:
            return self.token("secret", m.group()) if len(m.group().split()[-1]) >= 8 else m.group()

        def key(m: re.Match[str]) -> str:
            return self.token("secret", m.group()) if _is_key(m.group()) else m.group()

        def email(m: re.Match[str]) -> str:
            ok = _TLD.fullmatch(m.group().rpartition(".")[2])
            return self.token("email", m.group()) if ok else m.group()

        def card(m: re.Match[str]) -> str:
            digits = _NOT_DIGIT.sub("", m.group())
            return self.token("card", digits) if _luhn(digits) else m.group()

        def phone(m: re.Match[str]) -> str:
            run = m.group()
            end = _phone_end(run, m.string[m.end() : m.end() + 1])
            if len(_NOT_DIGIT.sub("", run[:end])) < 9:
                return run
            return self.token("phone", run[:end]) + run[end:]

        text = _BEARER.sub(bearer, text)
        text = _TOKEN.sub(key, text)
        text = _EMAIL.sub(email, text)
        text = _CARD.sub(card, text)
        return _PHONE.sub(phone, text)


# ---------------------------------------------------------------------------------------------- logs


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Structured fields come from `extra={"fields": {...}}`.

    An exception is logged as its type and stack frames, never its message: messages of model errors
    can quote the request (a 400 echoing the prompt) and must not bypass the content switch.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            entry["error_type"] = type(exc).__name__
            entry["stack"] = "".join(traceback.format_tb(exc.__traceback__))[-4000:]
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", stream: Any = None) -> logging.Handler:
    """JSON lines on stderr for the root logger (uvicorn's loggers included); returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # Per-request access lines would duplicate ours (and carry query strings): off.
    logging.getLogger("uvicorn.access").disabled = True
    return handler


def flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in TRUE


def share(env: Mapping[str, str], name: str, default: float) -> float:
    """A fraction from 0 to 1 in env var `name` (`default` when unset); a UserError in one line otherwise."""
    text = env.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:  # NaN too
        from ..errors import UserError, clip

        raise UserError(f"{name}: expected a number from 0 to 1, got {clip(text, 40)!r}")
    return value


# ------------------------------------------------------------------------------------------- metrics

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)


class Metrics:
    """The service's Prometheus series, in their own registry."""

    def __init__(self, model: str, prompt_version: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"model": model, "prompt_version": prompt_version}
        self._labels = labels
        names = list(labels)
        r = self.registry
        self.requests = Counter(
            "llm_requests", "Answered requests by route and HTTP status", ["status", "route", *names], registry=r
        )
        self.latency = Histogram(
            "llm_request_latency_seconds", "End-to-end request latency by route", ["route", *names],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter("llm_tokens", "Tokens spent (kind: prompt | completion)", ["kind", *names], registry=r)
        # What the analysis and the alerts judge a version on besides errors and latency (serving/analysis.py).
        self.cost = Counter(
            "llm_cost_usd", "USD spent on the model: tokens x params.yaml model.*_usd_per_1m_tokens", names, registry=r
        )
        self.schema_checks = Counter(
            "llm_schema_checks",
            "Answers of prompts with an output schema, checked against it (result: valid | invalid)",
            ["prompt", "result", *names],
            registry=r,
        )
        self.model_calls = Counter(
            "llm_model_calls", "Model calls by prompt and outcome", ["prompt", "outcome", *names], registry=r
        )
        self.model_latency = Histogram(
            "llm_model_latency_seconds", "Model call latency", ["prompt", *names], buckets=LATENCY_BUCKETS, registry=r
        )
        self.shadow = Counter(
            "llm_shadow_requests",
            "Mirrored requests (outcome: agree | disagree | same_version | error | dropped)",
            ["outcome", "shadow_version"],
            registry=r,
        )
        self.capture = Counter(
            "llm_capture_records",
            "Capture records (kind: answer | feedback | shadow; outcome: written | dropped | failed)",
            ["kind", "outcome"],
            registry=r,
        )
        # Users' ratings (POST /v1/feedback): the alert on their thumbs-down share triggers the retrain loop.
        self.feedback = Counter("llm_feedback", "Users' ratings of answers (rating: up | down)", ["rating"], registry=r)
        self.info = Gauge("llm_app_info", "The served version (value 1)", ["alias", "version", *names], registry=r)
        self.inflight = Gauge("llm_inflight_requests", "Requests being answered now", names, registry=r)
        self.shed = Counter(
            "llm_shed_requests",
            "Requests refused with 429 before any model call (reason: capacity | client_concurrency | client_rate)",
            ["reason", *names],
            registry=r,
        )
        self.model_up = Gauge(
            "llm_model_endpoint_up", "1 when the model endpoint answered the last probe, else 0", names, registry=r
        )

    def label(self, metric: Any, **extra: str) -> Any:
        return metric.labels(**extra, **self._labels)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# -------------------------------------------------------------------------------------------- traces


class _NoSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def record_error(self, kind: str) -> None:
        pass


class _Span:
    def __init__(self, span: Any) -> None:
        self._span = span

    def set_attribute(self, key: str, value: Any) -> None:
        self._span.set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self._span.set_attributes(dict(attributes))

    def record_error(self, kind: str) -> None:
        # The type only: an exception message could quote user content.
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("error.type", kind)
        self._span.set_status(Status(StatusCode.ERROR, kind))


class Tracing:
    """Spans when configured, a free no-op otherwise."""

    def __init__(self, provider: Any = None, capture_content: bool = False) -> None:
        self.provider = provider
        self.capture_content = capture_content
        self._tracer = provider.get_tracer(__package__ or "app") if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextlib.contextmanager
    def span(
        self, name: str, attributes: Mapping[str, Any], server: bool = False, headers: Mapping[str, str] | None = None
    ) -> Iterator[Any]:
        """A span in the current trace; a server span given the request's `headers` (lower-case names)
        joins the caller's trace when they carry a valid W3C `traceparent` (and `tracestate`). A
        malformed one is ignored: the span starts a new trace and the request goes on."""
        if self._tracer is None:
            yield _NoSpan()
            return
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        kind = SpanKind.SERVER if server else SpanKind.CLIENT
        # W3C Trace Context only, not the OTEL_PROPAGATORS list: a propagator named there but not
        # installed would fail requests; a caller that sampled its trace out (flags 00) has this span
        # sampled out too (the SDK's default ParentBased sampler), so one trace is kept whole or not at all.
        parent = TraceContextTextMapPropagator().extract(headers) if headers is not None else None
        with self._tracer.start_as_current_span(
            name,
            context=parent,
            kind=kind,
            attributes=dict(attributes),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield _Span(span)

    def trace_id(self) -> str | None:
        if self._tracer is None:
            return None
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        return f"{ctx.trace_id:032x}" if ctx.is_valid else None

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()

    @classmethod
    def with_exporter(cls, exporter: Any, service: str, capture_content: bool = False) -> Tracing:
        """Spans go to `exporter` synchronously (tests: InMemorySpanExporter)."""
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = _provider(service)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return cls(provider, capture_content)

    @classmethod
    def from_env(cls, env: Mapping[str, str], service: str) -> Tracing:
        """console | otlp from OTEL_TRACES_EXPORTER (otlp implied by an OTLP endpoint); else off."""
        choice = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if not choice and (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
            choice = "otlp"
        capture = flag(env, "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
        if choice in ("", "none"):
            return cls(None)
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if choice == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter: Any = ConsoleSpanExporter()
        elif choice == "otlp":
            # Reads OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout) itself.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            from ..errors import UserError

            raise UserError(f"OTEL_TRACES_EXPORTER: {choice!r} is not one of console, otlp, none")
        provider = _provider(service)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider, capture)


def _provider(service: str) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)}))


def gen_ai_attributes(system: str, model: str, sampling: Mapping[str, Any], address: str, port: int | None) -> dict:
    """OpenTelemetry GenAI semantic-convention attributes of one chat call (no content)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": system,
        "gen_ai.provider.name": system,
        "gen_ai.request.model": model,
        "server.address": address,
    }
    if port is not None:
        attributes["server.port"] = port
    for key in ("temperature", "max_tokens", "seed"):
        if sampling.get(key) is not None:
            attributes[f"gen_ai.request.{key}"] = sampling[key]
    return attributes


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
