"""`<project> serve`: the HTTP service around any app (FastAPI on uvicorn).

    POST /v1/<flow>          each flow of the app: its request body -> its reply
    POST /v1/run/<prompt>    {"variables": {...}} -> the prompt's parsed output (`serve.prompt_routes`)
    GET  /healthz            liveness: the process answers
    GET  /readyz             readiness: prompts loaded and the model endpoint reachable (503 otherwise)
    GET  /metrics            Prometheus

A request that does not match the flow's request schema (or the prompt's variables) is a 422 before
any model call. Every response carries the served version in headers (`X-App-Version`, `X-Model`,
`X-Prompt-Version`, `X-Model-Alias`); answers also carry `X-Request-Id` and `Server-Timing`
(`model;dur=` is the time spent waiting on the model, so callers can see what the service adds).

Configuration (the Kubernetes contract, see k8s/): `APP_MODEL_ALIAS` (champion | candidate),
`APP_VERSION_SOURCE` (a version directory, default `.`; `registry` = MLflow, see registry/versions.py),
`SHADOW_FRACTION` (0-1) with `SHADOW_ALIAS` / `SHADOW_SOURCE` (default: the other alias, same source),
`LOG_CONTENT`, `LOG_HASH_KEY`, `OTEL_*`, and the model key in the env var that params.yaml names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .. import PROJECT
from ..app.client import ChatClient, ModelError
from ..app.contract import Answer, Reply, canonical, run_flow
from ..app.runtime import Caller, client_chat, connect, sampling
from ..errors import UserError
from ..registry.versions import ALIASES, AppVersion, load
from ..settings import EvalSettings, ServeSettings
from .observability import Metrics, Redactor, Tracing, configure_logging, elapsed_ms, flag, gen_ai_attributes

PROMPT_ROUTE = "/v1/run/"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
log = logging.getLogger(f"{__package__}.server")


@dataclass(frozen=True)
class Target:
    """What one POST route answers: a flow of the app, or one prompt on its own."""

    kind: str  # "flow" | "prompt"
    name: str

    @property
    def path(self) -> str:
        return f"/v1/{self.name}" if self.kind == "flow" else f"{PROMPT_ROUTE}{self.name}"


def targets(version: AppVersion, serve: ServeSettings) -> dict[str, Target]:
    """path -> target of every POST route the version serves."""
    found = [Target("flow", name) for name in version.app.flows]
    if serve.prompt_routes:
        found += [Target("prompt", name) for name in version.prompts]
    return {t.path: t for t in found}


def client_settings(serve: ServeSettings) -> EvalSettings:
    """connect() takes its retry and pool knobs from EvalSettings; a server's are shorter."""
    return EvalSettings(concurrency=serve.pool_size, max_attempts=serve.max_attempts, max_retry_s=serve.max_retry_s)


class Runner:
    """Calls one version's prompts (the one render/call/parse path) with a span and metrics per call."""

    def __init__(self, version: AppVersion, client: ChatClient, metrics: Metrics, tracing: Tracing) -> None:
        self.version = version
        self.call = Caller(version.prompts, client_chat(client, version.model))
        self.metrics = metrics
        self.tracing = tracing
        base = client.url.removesuffix("/chat/completions")
        self.models_url = base + "/models"
        parts = urlsplit(base)
        system = "llama.cpp" if version.model.embedded else "openai"
        self._attributes = gen_ai_attributes(
            system, version.model.name, sampling(version.model), parts.hostname or "", parts.port
        )
        # Shadow calls are labelled with the shadow's own model and prompt version.
        self._labels = {"model": version.model.name, "prompt_version": version.prompt_version}

    def __call__(self, prompt_id: str, variables: Mapping[str, Any]) -> Answer:
        prompt = self.version.prompts[prompt_id]
        attributes = {**self._attributes, "app.prompt.id": prompt_id, "app.prompt.version": prompt.version}
        with self.tracing.span(f"chat {self.version.model.name}", attributes) as span:
            started = time.perf_counter()
            try:
                result = self.call(prompt_id, variables)
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
        return result

    def answer(self, target: Target, request: Mapping[str, Any]) -> Reply:
        """The reply to a checked request. Raises the model's error."""
        if target.kind == "flow":
            return run_flow(self.version.app.flows[target.name], self, self.version.data, request)
        answer = self(target.name, request["variables"])
        body = {"prompt": answer.prompt, "prompt_version": answer.prompt_version, "output": answer.output}
        return Reply(body, (answer,))

    def decision(self, target: Target, reply: Reply) -> str:
        """What two versions must agree on for this target (canonical JSON)."""
        if target.kind == "flow":
            return self.version.app.flows[target.name].decision(reply.body)
        return canonical(reply.body["output"])


class Shadow:
    """Mirrors a fraction of requests to a second version in the background and records agreement.

    The mirror is offered only after the served answer is complete, and the request never waits for
    it: it runs in a small pool of its own, and when that pool is busy it is dropped (counted), not
    queued. Shadow calls still share the CPU and the model endpoint: keep SHADOW_FRACTION small.
    """

    def __init__(self, runner: Runner, fraction: float, max_inflight: int, rand: Callable[[], float] = random.random):
        self.runner = runner
        self.fraction = fraction
        self._rand = rand
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._pool = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="shadow")

    def offer(self, request_id: str, target: Target, request: Mapping[str, Any], decision: str) -> bool:
        if self.fraction <= 0 or self._rand() >= self.fraction:
            return False
        counter = self.runner.metrics.shadow
        if not self._slots.acquire(blocking=False):
            counter.labels(outcome="dropped", shadow_version=self.runner.version.id).inc()
            return False
        self._pool.submit(self._compare, request_id, target, request, decision)
        return True

    def _compare(self, request_id: str, target: Target, request: Mapping[str, Any], decision: str) -> None:
        started = time.perf_counter()
        try:
            fields: dict[str, Any] = {}
            try:
                reply = self.runner.answer(target, request)
                outcome = "agree" if self.runner.decision(target, reply) == decision else "disagree"
            except ModelError as exc:
                outcome, fields = "error", {"error_kind": exc.kind}
            self.runner.metrics.shadow.labels(outcome=outcome, shadow_version=self.runner.version.id).inc()
            log.info(
                "shadow",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "route": target.path,
                        "shadow_version": self.runner.version.id,
                        "shadow_alias": self.runner.version.alias,
                        "outcome": outcome,
                        "latency_ms": elapsed_ms(started),
                        **fields,
                    }
                },
            )
        except Exception:  # a shadow bug must never surface anywhere near a user
            log.exception("shadow_failed", extra={"fields": {"request_id": request_id}})
        finally:
            self._slots.release()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Service:
    """What one server process holds: the served version, its runner, telemetry and the shadow."""

    runner: Runner
    serve: ServeSettings
    redactor: Redactor
    log_content: bool = False
    shadow: Shadow | None = None
    ready_ttl_s: float = 2.0  # probes come every few seconds; the model endpoint is asked at most this often
    _ready_cache: tuple[float, bool, str] = (-1e9, False, "")

    @property
    def version(self) -> AppVersion:
        return self.runner.version

    @property
    def targets(self) -> dict[str, Target]:
        return targets(self.version, self.serve)

    def version_headers(self) -> list[tuple[bytes, bytes]]:
        v = self.version
        return [
            (b"x-app-version", v.id.encode()),
            (b"x-model", v.model.name.encode()),
            (b"x-prompt-version", v.prompt_version.encode()),
            (b"x-model-alias", v.alias.encode()),
        ]

    def ready(self) -> tuple[bool, str]:
        """Prompts loaded and the model endpoint answering (cached for `ready_ttl_s`)."""
        checked, ok, reason = self._ready_cache
        if time.monotonic() - checked < self.ready_ttl_s:
            return ok, reason
        ok, reason = self._probe_model()
        self._ready_cache = (time.monotonic(), ok, reason)
        return ok, reason

    def _probe_model(self) -> tuple[bool, str]:
        import requests

        if not self.version.prompts:
            return False, "no prompts loaded"
        headers = {}
        key = self.version.model.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            with requests.Session() as session:
                session.trust_env = False
                status = session.get(self.runner.models_url, headers=headers, timeout=(1.0, 2.0)).status_code
        except requests.RequestException as exc:
            return False, f"model endpoint unreachable ({type(exc).__name__})"
        # 404: an endpoint without /models is still up; 401/403: the key is wrong, so not ready.
        if status >= 500 or status in (401, 403):
            return False, f"model endpoint answered HTTP {status}"
        return True, "ok"

    def check(self, target: Target, body: Any) -> str | None:
        """Why `body` is not a valid request for `target` (a 422), or None."""
        if not isinstance(body, dict):
            return "the request body must be a JSON object"
        if target.kind == "flow":
            problem = _schema_problem(self.version.app.flows[target.name].request, body)
        else:
            problem = _variables_problem(self.version.prompts[target.name].variables, body)
        return problem or _too_long(body, self.serve.max_input_chars)

    def handle(self, target: Target, body: Any, request_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Status, JSON body and extra headers of one request; logs one line, never raises."""
        started = time.perf_counter()
        fields: dict[str, Any] = {
            "request_id": request_id,
            "route": target.path,
            "trace_id": self.runner.tracing.trace_id(),
        }
        reply: Reply | None = None
        payload: dict[str, Any]
        problem = self.check(target, body)
        if problem:
            status, payload = 422, {"error": "invalid_request", "detail": problem}
        else:
            fields["request_chars"] = len(json.dumps(body, ensure_ascii=False))
            try:
                reply = self.runner.answer(target, body)
                payload = {**reply.body, "request_id": request_id, "version": self._version_body()}
                status = 200
            except ModelError as exc:
                # 504 when the model timed out, 502 for any other upstream failure.
                status = 504 if exc.kind == "timeout" else 502
                payload = {"error": "model_unavailable", "kind": exc.kind, "request_id": request_id}
                fields.update(error_kind=exc.kind, attempts=exc.attempts)
            except Exception:
                log.exception("request_failed", extra={"fields": {"request_id": request_id}})
                status, payload = 500, {"error": "internal", "request_id": request_id}
        latency = elapsed_ms(started)
        headers = {"X-Request-Id": request_id, "Server-Timing": f"app;dur={latency}"}
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
            if self.shadow is not None:
                fields["shadowed"] = self.shadow.offer(request_id, target, body, self.runner.decision(target, reply))
        if self.log_content and isinstance(body, dict):
            fields["request"] = self.redactor(json.dumps(body, ensure_ascii=False))
            if reply is not None:
                fields["reply"] = self.redactor(json.dumps(reply.body, ensure_ascii=False))
        v = self.version
        fields.update(
            status=status, latency_ms=latency, alias=v.alias, version=v.id, model=v.model.name,
            prompt_version=v.prompt_version,
        )  # fmt: skip
        log.info("request", extra={"fields": fields})
        return status, payload, headers

    def _version_body(self) -> dict[str, str]:
        v = self.version
        return {"alias": v.alias, "id": v.id, "model": v.model.name, "prompt_version": v.prompt_version}


def _schema_problem(schema: Mapping[str, Any], body: Any) -> str | None:
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(body))
    if error is None:
        return None
    where = ".".join(map(str, error.absolute_path)) or "(body)"
    return f"{where}: {error.message[:200]}"


def _variables_problem(variables: tuple[str, ...], body: Mapping[str, Any]) -> str | None:
    given = body.get("variables")
    if set(body) != {"variables"} or not isinstance(given, dict):
        return 'expected {"variables": {...}} and nothing else'
    if set(given) != set(variables):
        return f"variables: expected exactly {', '.join(variables) or 'none'}"
    if not all(isinstance(v, str) and v.strip() for v in given.values()):
        return "variables: every value must be a non-empty string"
    return None


def _too_long(value: Any, limit: int) -> str | None:
    if isinstance(value, str):
        return f"a text value is longer than {limit} characters" if len(value) > limit else None
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((p for p in (_too_long(v, limit) for v in children) if p), None)


def request_id_from(header: str | None) -> str:
    return header if header and _REQUEST_ID.match(header) else uuid.uuid4().hex


class Edge:
    """ASGI middleware: version headers on every response; request count and latency per route.

    Plain ASGI rather than BaseHTTPMiddleware: it adds microseconds, not a task per request.
    """

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service
        self.headers = service.version_headers()
        self.routes = set(service.targets)
        metrics = service.runner.metrics
        self._requests = metrics.requests
        self._latency = {path: metrics.label(metrics.latency, route=path) for path in self.routes}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            path = scope["path"]
            if path in self.routes:
                self.service.runner.metrics.label(self._requests, status=str(status), route=path).inc()
                self._latency[path].observe(time.perf_counter() - started)


def create_app(service: Service) -> Any:
    """The ASGI application for `service`."""
    from fastapi import Body, FastAPI, Header
    from fastapi.responses import JSONResponse, Response

    # Endpoints carry no return annotations: FastAPI would read them as response models.

    api = FastAPI(title=PROJECT, docs_url=None, redoc_url=None, openapi_url=None)
    tracing = service.runner.tracing

    @api.get("/healthz")
    def healthz():
        return JSONResponse({"status": "ok"})

    @api.get("/readyz")
    def readyz():
        ok, reason = service.ready()
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "reason": reason}, status_code=200 if ok else 503
        )

    @api.get("/metrics")
    def metrics():
        payload, content_type = service.runner.metrics.render()
        return Response(payload, media_type=content_type)

    def route_for(target: Target) -> Callable[..., Any]:
        # A plain `def`: FastAPI runs it in its threadpool, so blocking model calls are fine here.
        # Defaults, not Annotated: these names are imported here, where FastAPI cannot resolve annotations.
        def route(body: Any = Body(default=None), x_request_id: str | None = Header(default=None)):  # noqa: B008
            request_id = request_id_from(x_request_id)
            attributes = {
                "http.request.method": "POST",
                "http.route": target.path,
                "app.request.id": request_id,
                "app.version": service.version.id,
                "app.alias": service.version.alias,
            }
            with tracing.span(f"POST {target.path}", attributes, server=True) as span:
                status, payload, headers = service.handle(target, body, request_id)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.record_error(str(payload.get("kind", payload["error"])))
                if tracing.capture_content and isinstance(body, dict):
                    span.set_attribute("app.request.content", service.redactor(json.dumps(body, ensure_ascii=False)))
                    if status == 200:
                        reply = {k: v for k, v in payload.items() if k not in ("request_id", "version")}
                        span.set_attribute(
                            "app.response.content", service.redactor(json.dumps(reply, ensure_ascii=False))
                        )
            return Response(json.dumps(payload, ensure_ascii=False), status_code=status, headers=headers,
                            media_type="application/json")  # fmt: skip

        return route

    for path, target in service.targets.items():
        api.add_api_route(path, route_for(target), methods=["POST"], name=path)
    return Edge(api, service)


@contextlib.contextmanager
def open_service(
    alias: str,
    source: str,
    env: Mapping[str, str],
    tracing: Tracing | None = None,
    rand: Callable[[], float] = random.random,
) -> Iterator[Service]:
    """Load the version(s), connect to the model(s) (starting the embedded one if configured)."""
    fraction = _fraction(env.get("SHADOW_FRACTION", "0"))
    version = load(alias, source)
    tracing = tracing or Tracing.from_env(env, PROJECT)
    metrics = Metrics(version.model.name, version.prompt_version)
    metrics.label(metrics.info, alias=alias, version=version.id).set(1)
    serve = version.settings.serve
    with contextlib.ExitStack() as stack:
        stack.callback(tracing.shutdown)
        client = stack.enter_context(connect(version.model, client_settings(serve)))
        runner = Runner(version, client, metrics, tracing)
        shadow = None
        if fraction > 0:
            other = env.get("SHADOW_ALIAS") or next(a for a in ALIASES if a != alias)
            shadow_version = load(other, env.get("SHADOW_SOURCE") or source)
            shadow_client = stack.enter_context(connect(shadow_version.model, client_settings(serve)))
            shadow = Shadow(Runner(shadow_version, shadow_client, metrics, tracing), fraction,
                            serve.shadow_max_inflight, rand)  # fmt: skip
            stack.callback(shadow.close)
        yield Service(runner, serve, Redactor(env.get("LOG_HASH_KEY")), flag(env, "LOG_CONTENT"), shadow)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise UserError(f"SHADOW_FRACTION: expected a number from 0 to 1, got {text!r}")
    return value


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
                        "log_content": service.log_content,
                        "tracing": service.runner.tracing.enabled,
                    }
                },
            )
            config = uvicorn.Config(
                create_app(service), host=args.host, port=args.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=20, server_header=False,
            )  # fmt: skip
            uvicorn.Server(config).run()
    except KeyboardInterrupt:  # SIGTERM replayed by uvicorn after a graceful shutdown
        pass
    return 0
