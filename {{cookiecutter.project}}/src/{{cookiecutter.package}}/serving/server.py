"""`<project> serve`: the HTTP service around any app (ASGI on uvicorn, one event loop).

    POST /v1/<flow>          each flow of the app: its request body -> its reply
    POST /v1/run/<prompt>    {"variables": {...}} -> the prompt's parsed output (`serve.prompt_routes`)
    POST /v1/feedback        {"request_id", "rating": "up" | "down", "correction"?, "comment"?} -> 202
    GET  /healthz            liveness: the event loop answers (never asks the model)
    GET  /readyz             readiness: the version is loaded and the model takes our key (see below)
    GET  /metrics            Prometheus

Model calls are asynchronous (app/async_client.py, flows are `async def`): a request waiting on the
model holds a coroutine, not a thread, so one process keeps `serve.max_inflight` requests in flight
and the probes and /metrics answer in milliseconds whatever the model does.

Every answer route, in order, before any model call:
  401  `serve.api_keys_env` is set and the request has no valid `Authorization: Bearer <key>`
  429  the caller is over `serve.client_max_inflight` / `serve.client_rate_per_s`, or the process is
       answering `serve.max_inflight` requests already (with `Retry-After`; `llm_shed_requests_total`)
  413  the body passes `serve.max_body_bytes` (read in chunks, so also a chunked body; never held whole)
  422  the body is not JSON, holds NaN, a lone surrogate, deep nesting, or does not match the flow's
       request schema (or the prompt's variables), or a text is longer than `serve.max_input_chars`
then the answer, or
  502  the model endpoint failed (an HTTP error, an unreadable answer)
  503  the model endpoint cannot be reached (`Retry-After`)
  504  a model call timed out, or the request passed its deadline, `serve.request_timeout_s`, which
       covers everything from the first byte of the body to the reply.

Capture and feedback (production/capture.py): with CAPTURE_FRACTION (or `capture.fraction`) above 0,
that share of answers, and of model failures (502/503/504) of well-formed requests, is recorded as
records.py's `answer` lines, redacted, with the versions and provider that answered; never a 4xx,
and never a request cut by its deadline (its body is gone with it). A mirror of a captured answer
adds a `shadow` line when its comparison ends. The record is queued after the answer is made and
written by a thread: a slow or full disk never holds an answer up (it drops records, counted).
POST /v1/feedback passes the same admission as answers (401, 429, 413, 422 above, the body checked
against FEEDBACK_REQUEST and `serve.max_input_chars`), then answers 202 `{"request_id": <rated>}`
once the rating is queued, or 503 (`Retry-After`) when the capture queue is full. Any well-formed
request id is taken: the rated answer need not have been sampled. With capture off the route answers
404 with a sentence saying so, as a route this configuration does not serve (like /v1/run/<prompt>
without `serve.prompt_routes`): a client that probes for an optional endpoint stops there, and no
rating is taken that nothing would keep. It is the framework's route, not a flow: app/loader.py
refuses an app with a flow named `feedback`.

Readiness and a model outage: /readyz does NOT fail when the model endpoint is down or slow. Every
pod shares that endpoint, so failing readiness would take every pod out of the Service at once and
turn a degraded provider into a total outage (no answers, and no clear error either). Pods stay in
rotation and answer 502/503/504 with a JSON body saying what failed; /readyz reports the endpoint's
state in its body and `llm_model_endpoint_up` carries it to alerts. Readiness fails only for what
is this pod's own fault: the endpoint refuses our key (401/403), so a rollout with a wrong key stops
at its first pod. The endpoint is probed in the background (`GET /models`, at most every 2 s).

Every response carries the served version in headers (`X-App-Version`, `X-Model`,
`X-Prompt-Version`, `X-Model-Alias`); answers also carry `X-Request-Id` and `Server-Timing`
(`model;dur=` is the time spent waiting on the model, so callers can see what the service adds).

Configuration (the Kubernetes contract, see k8s/): `APP_MODEL_ALIAS` (champion | candidate),
`APP_VERSION_SOURCE` (a version directory, default `.`; `registry` = MLflow, see registry/versions.py),
`SHADOW_FRACTION` (0-1) of answers mirrored to `SHADOW_URL` (the canary's Service: serving/shadow.py),
`CAPTURE_FRACTION` (0-1) and `CAPTURE_DIR` (over params.yaml `capture.*`),
`LOG_CONTENT`, `LOG_HASH_KEY`, `OTEL_*`, the model key in the env var that params.yaml names, and
the service's API keys in the one `serve.api_keys_env` names.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .. import PROJECT
from ..app.client import ModelError, RetryPolicy
from ..app.contract import Answer, Reply, arun_flow, canonical
from ..app.prompts import PromptError
from ..app.runtime import AsyncCaller, Endpoint, async_client_chat, endpoint, sampling
from ..errors import UserError, clip
from ..production.capture import Capture, providers
from ..production.records import RATINGS
from ..registry.versions import ALIASES, AppVersion, load
from ..settings import ModelSettings, ServeSettings
from . import asgi, validation
from .admission import ApiKeys, Capacity, ClientLimits, Refusal
from .observability import Metrics, Redactor, Tracing, configure_logging, elapsed_ms, flag, gen_ai_attributes, share
from .shadow import MIRROR_HEADER, Shadow, shadow_url

if TYPE_CHECKING:
    from ..app.async_client import AsyncChatClient

PROMPT_ROUTE = "/v1/run/"
FEEDBACK_ROUTE = "/v1/feedback"  # a framework route: app/loader.py refuses a flow named `feedback`
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
log = logging.getLogger(f"{__package__}.server")

# POST /v1/feedback's body: a rating of one answer, by the request id the answer carried.
FEEDBACK_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["request_id", "rating"],
    "properties": {
        "request_id": {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,64}\Z"},  # as X-Request-Id takes them
        "rating": {"enum": list(RATINGS)},
        "correction": {"type": ["object", "string"]},  # what the answer should have been
        "comment": {"type": "string"},
    },
}
FEEDBACK_OFF = "feedback is not collected: capture is off here (capture.fraction / CAPTURE_FRACTION is 0)"

# What a model failure is to the caller: status and the sentence of the JSON body.
MODEL_FAILURES = {
    "timeout": (504, "the model did not answer in time"),
    "transport": (503, "the model endpoint cannot be reached"),
    "http": (502, "the model endpoint answered with an error"),
    "parse": (502, "the model's answer could not be read"),
}


@dataclass(frozen=True)
class Target:
    """What one POST route answers: a flow of the app, or one prompt on its own."""

    kind: str  # "flow" | "prompt"
    name: str

    @property
    def path(self) -> str:
        return f"/v1/{self.name}" if self.kind == "flow" else f"{PROMPT_ROUTE}{self.name}"

    @property
    def label(self) -> str:
        """What golden examples and capture records call it: `flow:<name>` or the prompt id."""
        return f"flow:{self.name}" if self.kind == "flow" else self.name


class Refused(Exception):
    """A request turned away before its work: the status and JSON body to answer with."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload


@dataclass(frozen=True)
class Handled:
    """A request answered: status, JSON body, extra headers, and the request body when it parsed."""

    status: int
    payload: dict[str, Any]
    headers: dict[str, str]
    body: Any = None


def targets(version: AppVersion, serve: ServeSettings) -> dict[str, Target]:
    """path -> target of every POST route the version serves."""
    found = [Target("flow", name) for name in version.app.flows]
    if serve.prompt_routes:
        found += [Target("prompt", name) for name in version.prompts]
    return {t.path: t for t in found}


def async_client(where: Endpoint, model: ModelSettings, serve: ServeSettings, connections: int) -> AsyncChatClient:
    """The service's model client: the eval's retry policy with the service's shorter bounds."""
    from ..app.async_client import AsyncChatClient

    return AsyncChatClient(
        where.base_url, where.model, where.api_key, timeout=(model.connect_timeout_s, model.read_timeout_s),
        retry=RetryPolicy(max_attempts=serve.max_attempts, max_retry_s=serve.max_retry_s),
        max_connections=connections, json_schema_style=where.json_schema_style,
    )  # fmt: skip


def _validator(schema: Mapping[str, Any]) -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(schema)


class Runner:
    """Calls one version's prompts (the one render/call/parse path) with a span and metrics per call."""

    def __init__(self, version: AppVersion, client: AsyncChatClient, metrics: Metrics, tracing: Tracing) -> None:
        self.version = version
        self.client = client
        self.call = AsyncCaller(version.prompts, async_client_chat(client, version.model))
        self.metrics = metrics
        self.tracing = tracing
        parts = urlsplit(client.url)
        system = "llama.cpp" if version.model.embedded else "openai"
        self._attributes = gen_ai_attributes(
            system, version.model.name, sampling(version.model), parts.hostname or "", parts.port
        )
        self._labels = {"model": version.model.name, "prompt_version": version.prompt_version}
        self._usd_per_token = (
            version.model.input_usd_per_1m_tokens / 1e6,
            version.model.output_usd_per_1m_tokens / 1e6,
        )
        self._cost = metrics.cost.labels(**self._labels)  # exists at 0 from the start: rate() sees the first answer
        self._schemas = {pid: _validator(p.output_schema) for pid, p in version.prompts.items() if p.output_schema}

    async def __call__(self, prompt_id: str, variables: Mapping[str, Any]) -> Answer:
        prompt = self.version.prompts[prompt_id]
        attributes = {**self._attributes, "app.prompt.id": prompt_id, "app.prompt.version": prompt.version}
        with self.tracing.span(f"chat {self.version.model.name}", attributes) as span:
            started = time.perf_counter()
            try:
                result = await self.call(prompt_id, variables)
            except ModelError as exc:
                span.record_error(exc.kind)
                self.metrics.model_calls.labels(prompt=prompt_id, outcome=exc.kind, **self._labels).inc()
                raise
            span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": result.completion.tokens_in,
                    "gen_ai.usage.output_tokens": result.completion.tokens_out,
                    "app.model.attempts": result.completion.attempts,
                }
            )
        self.metrics.model_calls.labels(prompt=prompt_id, outcome="ok", **self._labels).inc()
        self.metrics.model_latency.labels(prompt=prompt_id, **self._labels).observe(time.perf_counter() - started)
        self.metrics.tokens.labels(kind="prompt", **self._labels).inc(result.completion.tokens_in)
        self.metrics.tokens.labels(kind="completion", **self._labels).inc(result.completion.tokens_out)
        per_in, per_out = self._usd_per_token
        self._cost.inc(result.completion.tokens_in * per_in + result.completion.tokens_out * per_out)
        schema = self._schemas.get(prompt_id)
        if schema is not None:
            valid = result.data is not None and schema.is_valid(result.data)
            self.metrics.schema_checks.labels(
                prompt=prompt_id, result="valid" if valid else "invalid", **self._labels
            ).inc()
        return result

    async def answer(self, target: Target, request: Mapping[str, Any]) -> Reply:
        """The reply to a checked request. Raises the model's error."""
        if target.kind == "flow":
            return await arun_flow(self.version.app.flows[target.name], self, self.version.data, request)
        answer = await self(target.name, request["variables"])
        body = {"prompt": answer.prompt, "prompt_version": answer.prompt_version, "output": answer.output}
        return Reply(body, (answer,))

    def decision(self, target: Target, reply: Reply) -> str:
        """What two versions must agree on for this target (canonical JSON)."""
        if target.kind == "flow":
            return self.version.app.flows[target.name].decision(reply.body)
        return canonical(reply.body["output"])


class Service:
    """What one server process holds: the served version, its runner, telemetry, admission and the shadow."""

    ready_ttl_s = 2.0  # probes come every few seconds; the model endpoint is asked at most this often

    def __init__(
        self,
        runner: Runner,
        serve: ServeSettings,
        redactor: Redactor,
        log_content: bool = False,
        shadow: Shadow | None = None,
        keys: ApiKeys | None = None,
        capture: Capture | None = None,
    ) -> None:
        self.runner = runner
        self.serve = serve
        self.redactor = redactor
        self.log_content = log_content
        self.shadow = shadow
        self.keys = keys
        self.capture = capture
        self.capacity = Capacity(serve.max_inflight)
        self.clients = ClientLimits(serve.client_max_inflight, serve.client_rate_per_s)
        self.targets = targets(self.version, serve)
        self._feedback_schema = validation.validator(FEEDBACK_REQUEST)
        flows = self.version.app.flows
        self._checks = {
            path: (validation.validator(flows[t.name].request), ())
            if t.kind == "flow"
            else (None, self.version.prompts[t.name].variables)
            for path, t in self.targets.items()
        }
        # Readiness: (ready, what /readyz says); refreshed in the background, read without waiting.
        self._ready: tuple[bool, dict[str, str]] = (True, {"status": "ready", "model_endpoint": "not probed yet"})
        self._probed_at = -1e9
        self._probe: asyncio.Task[None] | None = None

    @property
    def version(self) -> AppVersion:
        return self.runner.version

    def version_headers(self) -> asgi.Headers:
        v = self.version
        return [
            (b"x-app-version", v.id.encode()),
            (b"x-model", v.model.name.encode()),
            (b"x-prompt-version", v.prompt_version.encode()),
            (b"x-model-alias", v.alias.encode()),
        ]

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Before the first request: know whether the endpoint takes our key (readiness from the start)."""
        await self.refresh()

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        if self.shadow is not None:
            await self.shadow.close()
        if self.capture is not None:  # what is queued goes to disk and the file is closed (-> .jsonl)
            await asyncio.to_thread(self.capture.close)
        await self.runner.client.aclose()

    # ------------------------------------------------------------------------------------ readiness

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """The last known state, at once; a background probe refreshes it when older than ready_ttl_s."""
        stale = time.monotonic() - self._probed_at >= self.ready_ttl_s
        if stale and (self._probe is None or self._probe.done()):
            self._probe = asyncio.get_running_loop().create_task(self.refresh())
        return self._ready

    async def refresh(self) -> None:
        """Probe the model endpoint once and record what it means for readiness (see the module doc)."""
        self._probed_at = time.monotonic()
        up, ready, reason = False, True, ""
        if not self.version.prompts:
            ready, state = False, "no prompts loaded"
            reason = state
        else:
            try:
                status = await self.runner.client.ping()
            except ModelError as exc:
                state = f"unreachable ({exc.kind})"
            else:
                up = status < 500 and status not in (401, 403)  # 404: no /models, still up
                state = "ok" if up else f"answered HTTP {status}"
                if status in (401, 403):
                    ready, reason = False, f"the model endpoint refuses our key (HTTP {status})"
        self.runner.metrics.label(self.runner.metrics.model_up).set(1 if up else 0)
        body = {"status": "ready" if ready else "not ready", "model_endpoint": state}
        if reason:
            body["reason"] = reason
        self._ready = (ready, body)

    # -------------------------------------------------------------------------------------- answers

    async def handle(self, target: Target, request: asgi.Request) -> Handled:
        """The response to one request; logs one line, never raises."""
        started = time.perf_counter()
        request_id = request_id_from(request.headers.get("x-request-id"))
        fields: dict[str, Any] = {"request_id": request_id, "route": target.path}
        headers = {"X-Request-Id": request_id}
        mirrored_from = request.headers.get(MIRROR_HEADER)
        if mirrored_from is not None:
            fields["mirror_of"] = clip(mirrored_from, 64)
        status, payload, body, reply = await self._admitted(
            request, fields, headers, lambda: self._answer(target, request, fields)
        )
        if status >= 500:
            payload["request_id"] = request_id
        # Captured: answers, and model failures of a well-formed request (never a caller's mistake).
        captured = (
            self.capture is not None
            and (reply is not None or (status >= 500 and isinstance(body, dict) and "error_kind" in fields))
            and self.capture.sampled()
        )
        if reply is not None and self.shadow is not None and mirrored_from is None:  # a mirror is never mirrored on
            done = functools.partial(self.capture.shadow, request_id) if captured and self.capture else None
            fields["shadowed"] = self.shadow.offer(
                request_id, target.path, body, self.runner.decision(target, reply),
                lambda theirs: self.runner.decision(target, Reply(theirs)), request.headers.get("authorization"), done,
            )  # fmt: skip
        self._finish(target, request_id, started, status, body, reply, fields, headers)
        if captured:
            self._capture(target, status, body, reply, fields)
        return Handled(status, payload, headers, body)

    def _capture(self, target: Target, status: int, body: Any, reply: Reply | None, fields: Mapping[str, Any]) -> None:
        """Queue the answer's capture record (records.py's `answer` line); never fails the answer."""
        assert self.capture is not None
        try:
            flow = self.version.app.flows.get(target.name) if target.kind == "flow" else None
            category, fallback, safe = None, False, {}
            if reply is not None and flow is not None:
                if flow.category is not None:
                    found = flow.category(reply.body)
                    category = None if found is None else clip(str(found), 100)
                    fallback = category is not None and category == flow.fallback
                if flow.log_fields is not None:
                    safe = dict(flow.log_fields(reply.body))
            v = self.version
            self.capture.answer(
                {
                    "request_id": fields["request_id"], "target": target.label, "route": target.path,
                    "status": status, "request": body, "reply": reply.body if reply is not None else None,
                    "category": category, "fallback": fallback, "fields": safe,
                    "version": {"id": v.id, "alias": v.alias, "prompt_version": v.prompt_version,
                                "prompts": v.prompt_versions, "model": v.model.name},
                    "provider": providers(c.completion for c in reply.calls) if reply is not None else None,
                    "latency_ms": fields.get("latency_ms"), "model_ms": fields.get("model_ms"),
                    "tokens_in": reply.tokens_in if reply is not None else 0,
                    "tokens_out": reply.tokens_out if reply is not None else 0,
                    "error": fields.get("error_kind"), "mirror_of": fields.get("mirror_of"),
                }
            )  # fmt: skip
        except Exception:  # the app's category / log_fields, or a bug here: the answer is already made
            log.exception("capture_failed", extra={"fields": {"request_id": fields["request_id"]}})
            self.runner.metrics.capture.labels(kind="answer", outcome="failed").inc()

    async def _admitted(
        self,
        request: asgi.Request,
        fields: dict[str, Any],
        headers: dict[str, str],
        work: Callable[[], Awaitable[tuple[int, dict[str, Any], Any, Reply | None]]],
    ) -> tuple[int, dict[str, Any], Any, Reply | None]:
        """Key, caller limits and capacity first (no body read, no model call), then `work` (the
        answer, or taking a feedback) within the request's deadline."""
        caller = request.client
        if self.keys is not None:
            key = self.keys.caller(request.headers.get("authorization"))
            if key is None:
                headers["WWW-Authenticate"] = "Bearer"
                detail = "this route needs `Authorization: Bearer <key>` with a valid key"
                return 401, {"error": "unauthorized", "detail": detail}, None, None
            caller = fields["caller"] = key
        refusal = self.clients.enter(caller)
        if refusal is not None:
            return (*self._refused(refusal, headers), None, None)
        try:
            refusal = self.capacity.enter()
            if refusal is not None:
                return (*self._refused(refusal, headers), None, None)
            inflight = self.runner.metrics.label(self.runner.metrics.inflight)
            inflight.inc()
            try:
                async with asyncio.timeout(self.serve.request_timeout_s):
                    return await work()
            except TimeoutError:
                detail = f"no answer within {self.serve.request_timeout_s:g} s (serve.request_timeout_s)"
                fields["error_kind"] = "deadline"
                return 504, {"error": "deadline_exceeded", "detail": detail}, None, None
            finally:
                inflight.dec()
                self.capacity.leave()
        finally:
            self.clients.leave(caller)

    def _refused(self, refusal: Refusal, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.runner.metrics.label(self.runner.metrics.shed, reason=refusal.reason).inc()
        if refusal.retry_after_s is not None:
            headers["Retry-After"] = str(refusal.retry_after_s)
        return refusal.status, {"error": "too_many_requests", "reason": refusal.reason, "detail": refusal.detail}

    async def _parsed(self, request: asgi.Request) -> tuple[bytes, Any]:
        """The body's bytes and JSON value, within `serve.max_body_bytes`; Refused otherwise."""
        limit = self.serve.max_body_bytes
        try:
            raw = await request.body(limit)
        except asgi.BodyTooLarge:
            detail = f"the request body is larger than {limit} bytes (serve.max_body_bytes)"
            raise Refused(413, {"error": "too_large", "detail": detail}) from None
        except asgi.ClientGone:
            raise Refused(499, {"error": "client_closed_request"}) from None
        try:
            return raw, validation.parse(raw)
        except validation.Invalid as exc:
            raise Refused(422, {"error": "invalid_request", "detail": str(exc)}) from None

    async def _answer(
        self, target: Target, request: asgi.Request, fields: dict[str, Any]
    ) -> tuple[int, dict[str, Any], Any, Reply | None]:
        try:
            raw, body = await self._parsed(request)
        except Refused as refused:
            return refused.status, refused.payload, None, None
        schema, variables = self._checks[target.path]
        problem = validation.problem(body, schema, variables, self.serve.max_input_chars)
        if problem:
            return 422, {"error": "invalid_request", "detail": problem}, body, None
        fields["request_chars"] = len(raw)
        try:
            reply = await self.runner.answer(target, body)
        except ModelError as exc:
            status, detail = MODEL_FAILURES.get(exc.kind, (502, "the model call failed"))
            fields.update(error_kind=exc.kind, attempts=exc.attempts)
            return status, {"error": "model_unavailable", "kind": exc.kind, "detail": detail}, body, None
        except PromptError as exc:  # the request's values do not make a prompt (e.g. only blanks)
            return 422, {"error": "invalid_request", "detail": clip(str(exc), 300)}, body, None
        except Exception:
            log.exception("request_failed", extra={"fields": {"request_id": fields["request_id"]}})
            return 500, {"error": "internal"}, body, None
        payload = {**reply.body, "request_id": fields["request_id"], "version": self._version_body()}
        return 200, payload, body, reply

    # ------------------------------------------------------------------------------------- feedback

    async def feedback(self, request: asgi.Request) -> Handled:
        """POST /v1/feedback: a user's rating of an answer, admitted as answers are, queued to the
        capture (202). Any request id of the right form is taken: the rated answer may not have been
        sampled (records.py keeps such ratings as orphan feedback). Logs one line, never raises."""
        started = time.perf_counter()
        request_id = request_id_from(request.headers.get("x-request-id"))
        fields: dict[str, Any] = {"request_id": request_id, "route": FEEDBACK_ROUTE}
        headers = {"X-Request-Id": request_id}
        if self.capture is None:
            status, payload = 404, {"error": "not_found", "detail": FEEDBACK_OFF}
        else:
            status, payload, _, _ = await self._admitted(request, fields, headers, lambda: self._rated(request, fields))
        if status == 503:
            headers["Retry-After"] = "1"
        v = self.version
        fields.update(status=status, latency_ms=elapsed_ms(started), alias=v.alias, version=v.id)
        log.info("feedback", extra={"fields": fields})
        return Handled(status, payload, headers)

    async def _rated(self, request: asgi.Request, fields: dict[str, Any]) -> tuple[int, dict[str, Any], Any, None]:
        assert self.capture is not None
        try:
            _, body = await self._parsed(request)
        except Refused as refused:
            return refused.status, refused.payload, None, None
        problem = validation.problem(body, self._feedback_schema, (), self.serve.max_input_chars)
        if problem:
            return 422, {"error": "invalid_request", "detail": problem}, None, None
        fields.update(rated=body["request_id"], rating=body["rating"])
        if not self.capture.feedback(body["request_id"], body["rating"], body.get("correction"), body.get("comment")):
            detail = "the capture queue is full (capture.max_queue): nothing was stored, retry later"
            return 503, {"error": "unavailable", "detail": detail}, None, None
        self.runner.metrics.feedback.labels(rating=body["rating"]).inc()
        return 202, {"request_id": body["request_id"]}, None, None

    def _finish(
        self,
        target: Target,
        request_id: str,
        started: float,
        status: int,
        body: Any,
        reply: Reply | None,
        fields: dict[str, Any],
        headers: dict[str, str],
    ) -> None:
        """Server-Timing and the request's log line."""
        latency = elapsed_ms(started)
        headers["Server-Timing"] = f"app;dur={latency}"
        if status == 503:
            headers["Retry-After"] = "1"
        if reply is not None:
            headers["Server-Timing"] = f"model;dur={reply.model_ms:.3f}, app;dur={latency}"
            fields.update(
                reply_chars=len(json.dumps(reply.body, ensure_ascii=False)),
                calls=len(reply.calls),
                tokens_in=reply.tokens_in,
                tokens_out=reply.tokens_out,
                model_ms=round(reply.model_ms, 3),
            )
            flow = self.version.app.flows.get(target.name) if target.kind == "flow" else None
            if flow is not None and flow.log_fields is not None:
                fields.update(flow.log_fields(reply.body))
        if self.log_content and isinstance(body, dict):
            fields["request"] = self.redactor(json.dumps(body, ensure_ascii=False))
            if reply is not None:
                fields["reply"] = self.redactor(json.dumps(reply.body, ensure_ascii=False))
        v = self.version
        fields.update(
            status=status, latency_ms=latency, alias=v.alias, version=v.id, model=v.model.name,
            prompt_version=v.prompt_version, trace_id=self.runner.tracing.trace_id(),
        )  # fmt: skip
        log.info("request", extra={"fields": fields})

    def _version_body(self) -> dict[str, str]:
        v = self.version
        return {"alias": v.alias, "id": v.id, "model": v.model.name, "prompt_version": v.prompt_version}


def request_id_from(header: str | None) -> str:
    return header if header and _REQUEST_ID.match(header) else uuid.uuid4().hex


class Routes:
    """The ASGI application of a Service: probes, metrics, the answer routes, the lifespan."""

    JSON = b"application/json"

    def __init__(self, service: Service) -> None:
        self.service = service
        self.headers = service.version_headers()
        metrics = service.runner.metrics
        self._requests = metrics.requests
        paths = [*service.targets, FEEDBACK_ROUTE]
        self._latency = {path: metrics.label(metrics.latency, route=path) for path in paths}

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = asgi.Request.from_scope(scope, receive)
        target = self.service.targets.get(request.path)
        if target is not None:
            if request.method != "POST":
                await self._json(send, 405, {"error": "method_not_allowed"}, {"Allow": "POST"})
                return
            await self._answer(target.path, functools.partial(self.service.handle, target, request), request, send)
        elif request.path == FEEDBACK_ROUTE:
            if request.method != "POST":
                await self._json(send, 405, {"error": "method_not_allowed"}, {"Allow": "POST"})
                return
            await self._answer(FEEDBACK_ROUTE, functools.partial(self.service.feedback, request), request, send)
        elif request.path in ("/healthz", "/readyz", "/metrics"):
            if request.method not in ("GET", "HEAD"):
                await self._json(send, 405, {"error": "method_not_allowed"}, {"Allow": "GET"})
            elif request.path == "/healthz":
                await self._json(send, 200, {"status": "ok"})
            elif request.path == "/readyz":
                ok, body = self.service.readiness()
                await self._json(send, 200 if ok else 503, body)
            else:
                payload, content_type = self.service.runner.metrics.render()
                await asgi.respond(send, 200, payload, self.headers, content_type.encode())
        else:
            await self._json(send, 404, {"error": "not_found"})

    async def _answer(
        self, path: str, handle: Callable[[], Awaitable[Handled]], request: asgi.Request, send: asgi.Send
    ) -> None:
        service = self.service
        tracing = service.runner.tracing
        started = time.perf_counter()
        status = 500
        attributes = {
            "http.request.method": "POST",
            "http.route": path,
            "app.version": service.version.id,
            "app.alias": service.version.alias,
        }
        try:
            with tracing.span(f"POST {path}", attributes, server=True, headers=request.headers) as span:
                handled = await handle()
                status, payload = handled.status, handled.payload
                span.set_attribute("app.request.id", handled.headers["X-Request-Id"])
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.record_error(str(payload.get("kind", payload["error"])))
                if tracing.capture_content and isinstance(handled.body, dict):
                    content = service.redactor(json.dumps(handled.body, ensure_ascii=False))
                    span.set_attribute("app.request.content", content)
                    if status == 200:
                        reply = {k: v for k, v in payload.items() if k not in ("request_id", "version")}
                        content = service.redactor(json.dumps(reply, ensure_ascii=False))
                        span.set_attribute("app.response.content", content)
            await self._json(send, status, payload, handled.headers)
        finally:
            service.runner.metrics.label(self._requests, status=str(status), route=path).inc()
            self._latency[path].observe(time.perf_counter() - started)

    async def _json(self, send: asgi.Send, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await asgi.respond(send, status, asgi.json_bytes(payload), [*extra, *self.headers], self.JSON)

    async def _lifespan(self, receive: asgi.Receive, send: asgi.Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.service.start()
                except Exception as exc:
                    log.exception("startup_failed")
                    await send({"type": "lifespan.startup.failed", "message": type(exc).__name__})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.service.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(service: Service) -> Routes:
    """The ASGI application for `service`."""
    return Routes(service)


@contextlib.contextmanager
def open_service(
    alias: str,
    source: str,
    env: Mapping[str, str],
    tracing: Tracing | None = None,
    rand: Callable[[], float] = random.random,
) -> Iterator[Service]:
    """Load the version(s), connect to the model(s) (starting the embedded one if configured)."""
    fraction = share(env, "SHADOW_FRACTION", 0.0)
    version = load(alias, source)
    serve = version.settings.serve
    keys = ApiKeys.from_env(serve.api_keys_env, env)
    tracing = tracing or Tracing.from_env(env, PROJECT)
    metrics = Metrics(version.model.name, version.prompt_version)
    metrics.label(metrics.info, alias=alias, version=version.id).set(1)
    with contextlib.ExitStack() as stack:
        stack.callback(tracing.shutdown)
        where = stack.enter_context(endpoint(version.model))
        runner = Runner(version, async_client(where, version.model, serve, serve.max_inflight), metrics, tracing)
        shadow = None
        if fraction > 0:
            url = env.get("SHADOW_URL", "")
            if not url:
                raise UserError("SHADOW_FRACTION is above 0 but SHADOW_URL (the canary's Service) is not set")
            shadow = Shadow(shadow_url(url), fraction, serve.shadow_max_inflight, version.id, metrics,
                            serve.request_timeout_s, rand)  # fmt: skip
        redactor = Redactor(env.get("LOG_HASH_KEY"))
        capture = Capture.from_settings(version.settings.capture, env, redactor, metrics, rand=rand)
        if capture is not None:
            stack.callback(capture.close)  # a no-op after the service's stop; else what is queued is kept
        yield Service(runner, serve, redactor, flag(env, "LOG_CONTENT"), shadow, keys, capture)


def main(argv: list[str] | None = None, prog: str = "serve") -> int:
    """Serve the app version under APP_MODEL_ALIAS over HTTP until SIGTERM / Ctrl-C."""
    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (the container passes 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--alias", default=os.environ.get("APP_MODEL_ALIAS", "champion"), choices=ALIASES)
    parser.add_argument("--source", default=os.environ.get("APP_VERSION_SOURCE", "."),
                        help="version directory (params.yaml, prompts/, the app's files) or `registry`")  # fmt: skip
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        raise UserError("the server needs the `serve` extra: pip install -e '.[serve]'") from None
    configure_logging(args.log_level)
    try:
        with open_service(args.alias, args.source, os.environ) as service:
            if service.log_content and not os.environ.get("LOG_HASH_KEY"):
                log.warning("log_content_unkeyed", extra={"fields": {"hint": "set LOG_HASH_KEY (a Secret in k8s/)"}})
            log.info(
                "serving",
                extra={
                    "fields": {
                        "alias": service.version.alias,
                        "version": service.version.id,
                        "source": service.version.source,
                        "model": service.version.model.name,
                        "prompt_versions": service.version.prompt_versions,
                        "routes": sorted(service.targets),
                        "shadow_fraction": service.shadow.fraction if service.shadow else 0.0,
                        "shadow_url": service.shadow.url if service.shadow else None,
                        "capture_fraction": service.capture.config.fraction if service.capture else 0.0,
                        "capture_dir": str(service.capture.config.dir) if service.capture else None,
                        "log_content": service.log_content,
                        "tracing": service.runner.tracing.enabled,
                        "api_keys": service.keys is not None,
                        "max_inflight": service.serve.max_inflight,
                    }
                },
            )
            config = uvicorn.Config(
                create_app(service), host=args.host, port=args.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=20, server_header=False, lifespan="on",
            )  # fmt: skip
            uvicorn.Server(config).run()
    except KeyboardInterrupt:  # SIGTERM replayed by uvicorn after a graceful shutdown
        pass
    return 0
