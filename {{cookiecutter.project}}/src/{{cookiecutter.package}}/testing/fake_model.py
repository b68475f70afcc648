"""The fake OpenAI-compatible model server on 127.0.0.1 that every test and benchmark talks to.

They reach it over real HTTP, through our real client. WHAT it answers is a pure function of the
request, an "answerer" (`Request -> reply text`, or None for a refusal: content null):

    echo                        the last user message without fault markers (the default)
    golden_answers(golden, ...) the golden set's right answers (or chosen wrong ones), for any app,
                                as far as the prompt allows: a label it does not name is not known

HOW it answers is the server's: `latency_s` per call; `fingerprint` (the `system_fingerprint` every
response carries, as llama.cpp and OpenAI send one: a new value is a new backend to `drift`); `error_every` (every Nth call fails with HTTP
400 whose body echoes the message, as some providers do); `api_key` (any other key gets 401);
`gate` (a threading.Event every call waits on: a model that hangs until released); and a marker in
the last user message picks a fault for that call:

    !429        first request for this message: 429 with `Retry-After`, then normal answers
    !500        always HTTP 500
    !500once    first request 500, then normal answers
    !hang       sleep `hang_s` before answering (longer than the client's read timeout)
    !badjson    200 with a truncated JSON body
    !nochoices  200 with valid JSON that has no `choices`
    !deepjson   200 with JSON nested 100,000 levels deep
    !badusage   200 with a right answer whose `usage` counts are nonsense (strings, Infinity, -1)
    !echoauth   401 whose body echoes the request's Authorization header (as some gateways do)

Every request is recorded (`seen`) with its arrival and reply times, so tests count model calls and
measure Retry-After at the server instead of trusting the client. Responses go out in one write on a
socket with TCP_NODELAY: otherwise Nagle's algorithm plus delayed ACKs add ~40 ms per request.

Standard library only: the template's own tests load this file by path from a baked project.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MARKER_RE = re.compile(r"\s*!(429|500once|500|hang|badjson|nochoices|deepjson|badusage|echoauth)\b\s*")
DONT_KNOW = "I will pass your question to a colleague."


@dataclass
class Request:
    """One chat request as the server saw it."""

    messages: list[dict[str, Any]]
    schema: dict[str, Any]  # the requested output schema ({} for free text): it names the prompt's task
    authorization: str | None
    received: float  # time.monotonic() at arrival
    replied: float = 0.0
    status: int = 0
    fields: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        properties = self.schema.get("properties") if isinstance(self.schema, dict) else None
        self.fields = frozenset(properties or {})

    @property
    def content(self) -> str:
        """The last user message (few-shot turns come before it)."""
        users = [m for m in self.messages if m.get("role") == "user"]
        return str(users[-1].get("content", "")) if users else ""

    @property
    def system(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.messages if m.get("role") == "system")

    def labels(self, name: str) -> list[str]:
        """The enum of the requested schema's property `name` ([] when it has none)."""
        prop = (self.schema.get("properties") or {}).get(name) or {}
        return [str(v) for v in prop.get("enum", [])]


Answerer = Callable[[Request], str | None]  # None: a refusal (content null)


# -- answerers -------------------------------------------------------------------------------------


def echo(request: Request) -> str:
    """The user message without fault markers: a golden example passes or fails by construction."""
    return MARKER_RE.sub(" ", request.content).strip()


def dont_know(request: Request) -> str:
    """What a model that does not know answers, in the requested shape: the last label of an enum
    (by convention the catch-all, e.g. `other`), the don't-know sentence for text, null otherwise."""
    if not request.schema:
        return DONT_KNOW
    answer: dict[str, Any] = {}
    for name, prop in (request.schema.get("properties") or {}).items():
        labels = request.labels(name)
        answer[name] = labels[-1] if labels else DONT_KNOW if _is_text(prop) else None
    return json.dumps(answer)


def golden_answers(golden: Path, wrong: dict[str, str] | None = None, *, needs_label: bool = True) -> Answerer:
    """The golden set's answers, for any app. A request is answered from the example whose input
    texts all appear in the request's system messages and last user turn (few-shot turns would
    match other examples), among those that can answer the fields the request's schema asks for;
    the most specific match wins:

    - a prompt example answers its `expected` (with the fields it names), or else a sentence of its
      input holding every `contains` text, with the `includes` items;
    - a flow example answers each requested field from its expected reply (nested fields too), so
      every prompt call of the flow gets the part of the reply it decides.

    `wrong`: example id -> a raw wrong answer, so a baseline is realistic rather than perfect.
    `needs_label` (the default): the answers depend on the prompt, as a model's do - a label of an
    enum is known only while the system message names it, so a prompt that drops a label gets real
    pass -> fail flips, through the CLI too; False answers from the inputs alone. Anything else gets
    `dont_know`."""
    wrong = wrong or {}
    entries = []
    for line in Path(golden).read_text().split("\n"):
        if line.strip():
            example = json.loads(line)
            entries.append((_texts(example["input"]), example, wrong.get(example["id"])))
    entries.sort(key=lambda entry: -sum(map(len, entry[0])))  # stable: ties keep the file's order

    def answer(request: Request) -> str:
        text = request.system + "\n" + request.content
        for keys, example, override in entries:
            if not all(k in text for k in keys):
                continue
            reply = override if override is not None else right_answer(example, request)
            if reply is None:
                continue
            if needs_label and not _labels_named(reply, request):
                return dont_know(request)
            return reply
        return dont_know(request)

    return answer


def right_answer(example: Mapping[str, Any], request: Request) -> str | None:
    """A reply to `request` that passes `example`, or None when the example cannot answer it."""
    if "flow" in example:
        leaves = _flatten(example.get("expected") or {})
        if not request.fields or not request.fields <= set(leaves):
            return None
        return json.dumps({name: leaves[name] for name in sorted(request.fields)})
    expected = example.get("expected")
    if isinstance(expected, str):
        return expected
    answer: dict[str, Any] = dict(expected or {})
    answer.update(example.get("includes") or {})
    if request.fields and not set(answer) <= request.fields:
        return None
    if expected is None:
        quoted = quote(_texts(example["input"]), example.get("contains", []))
        if not request.schema:
            return quoted
        text_field = next((n for n, p in request.schema.get("properties", {}).items() if _is_text(p)), None)
        if text_field is not None and text_field not in answer:
            answer[text_field] = quoted
    return json.dumps(answer)


def quote(texts: list[str], facts: list[str], limit: int = 160) -> str:
    """The first sentence of `texts` holding every fact, within a short answer's length limit."""
    sentences = [part.strip() for t in texts for part in re.split(r"(?<=[.;!?])\s+", t) if part.strip()]
    best = next((x for x in sentences if all(f.casefold() in x.casefold() for f in facts)), None)
    return (best or " ".join(facts) or (sentences[0] if sentences else DONT_KNOW))[:limit]


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def _flatten(value: Any, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every field of a nested object by its own name (the innermost wins)."""
    out = {} if out is None else out
    for key, item in value.items() if isinstance(value, dict) else ():
        if isinstance(item, dict):
            _flatten(item, out)
        else:
            out[key] = item
    return out


def _is_text(prop: Any) -> bool:
    return isinstance(prop, dict) and (prop.get("type") == "string" or "pattern" in prop)


def _labels_named(reply: str, request: Request) -> bool:
    with contextlib.suppress(ValueError, AttributeError):
        data = json.loads(reply)
        for name, value in data.items():
            if request.labels(name) and not re.search(rf"\b{re.escape(str(value))}\b", request.system):
                return False
    return True


# -- the server ------------------------------------------------------------------------------------


class FakeModel:
    """`with FakeModel(golden_answers(path), latency_s=0.05) as model: ... model.base_url, model.calls()`,
    or `model.start()` ... `model.stop()` (stop may come early: an endpoint that goes away)."""

    def __init__(
        self,
        answer: Answerer = echo,
        *,
        latency_s: float = 0.0,
        error_every: int = 0,
        api_key: str | None = None,
        gate: threading.Event | None = None,
        retry_after: str = "1",
        hang_s: float = 5.0,
        port: int = 0,
        fingerprint: str = "fake-1",
        slots: int = 0,
    ) -> None:
        self.answer = answer
        # At most `slots` calls answered at once (0: no limit), as an inference server's batch: the
        # others wait for one, so a replica's throughput is slots / latency (bench_shards.py).
        self._slots = threading.BoundedSemaphore(slots) if slots else contextlib.nullcontext()
        self.fingerprint = fingerprint
        self.latency_s = latency_s
        self.error_every = error_every
        self.api_key = api_key
        self.gate = gate
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.port = port
        self.seen: list[Request] = []
        self._per_message: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: _Server | None = None

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("the fake model has not been started")
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> str:
        self._server = _Server(("127.0.0.1", self.port), _handler_for(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-model", daemon=True).start()
        return self.base_url

    def stop(self) -> None:
        """The endpoint goes away: no new connections, and the kept-alive ones are cut too."""
        server, self._server = self._server, None
        if server is not None:
            self._closing.set()  # wakes `!hang` handlers
            server.shutdown()
            server.server_close()
            server.cut_connections()

    def __enter__(self) -> FakeModel:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def calls(self, marker: str | None = None) -> int:
        """Requests received so far (only those whose message contains `marker`, if given)."""
        with self._lock:
            return sum(1 for s in self.seen if marker is None or marker in s.content)

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()
            self._per_message.clear()

    def authorized(self, authorization: str | None) -> bool:
        return not self.api_key or authorization == f"Bearer {self.api_key}"

    def reply(self, body: dict[str, Any], request: Request) -> tuple[int, dict[str, str], bytes]:
        """Status, extra headers and body for one request (the fault logic)."""
        content = request.content
        with self._lock:
            self.seen.append(request)
            nth_call = len(self.seen)
            self._per_message[content] += 1
            nth = self._per_message[content]
        if not self.authorized(request.authorization):
            return 401, {}, b'{"error": {"message": "bad key"}}'
        if self.gate is not None:
            self.gate.wait(timeout=30)
        fault = MARKER_RE.search(content)
        kind = fault.group(1) if fault else None
        if kind == "429" and nth == 1:
            return 429, {"Retry-After": self.retry_after}, b'{"error": {"message": "rate limited"}}'
        if kind == "500" or (kind == "500once" and nth == 1):
            return 500, {}, b'{"error": {"message": "internal error"}}'
        if kind == "echoauth":
            return 401, {}, f'{{"error": "invalid key: {request.authorization}"}}'.encode()
        if self.error_every and nth_call % self.error_every == 0:
            return 400, {}, json.dumps({"error": {"message": f"cannot process: {content}"}}).encode()
        if kind == "hang":
            self._closing.wait(self.hang_s)
        elif self.latency_s:
            with self._slots:
                time.sleep(self.latency_s)
        if kind == "badjson":
            return 200, {}, b'{"choices": [{"message": {"content": "trunc'
        if kind == "nochoices":
            return 200, {}, b'{"object": "chat.completion"}'
        if kind == "deepjson":
            return 200, {}, b"[" * 100_000 + b"]" * 100_000
        text = self.answer(request)
        words = sum(len(str(m.get("content", "")).split()) for m in request.messages)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if text is None:
            message["refusal"] = "I can't help with that."
        payload = {
            "object": "chat.completion",
            "model": body.get("model", "fake"),
            "system_fingerprint": self.fingerprint,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": words, "completion_tokens": len((text or "").split()), "total_tokens": words},
        }
        if kind == "badusage":
            payload["usage"] = {"prompt_tokens": "many", "completion_tokens": float("inf"), "total_tokens": -1}
        return 200, {}, json.dumps(payload).encode()


class _Server(ThreadingHTTPServer):
    """Remembers its open connections, so that stopping cuts the keep-alive ones as a dead host would."""

    # A real server's listen backlog (uvicorn's is 2048), not socketserver's 5: a burst of new
    # connections (4 shards x 8 at once) would otherwise wait out a 1 s SYN retry.
    request_queue_size = 128

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._connections: set[Any] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._connections_lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def _schema(body: dict[str, Any]) -> dict[str, Any]:
    fmt = body.get("response_format") or {}
    schema = fmt.get("schema") or fmt.get("json_schema", {}).get("schema") or {}
    return schema if isinstance(schema, dict) else {}


def _handler_for(model: FakeModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # the readiness probe lists models
            if not self.path.rstrip("/").endswith("/models"):
                self._send(404, {}, b'{"error": "not found"}')
            elif not model.authorized(self.headers.get("Authorization")):
                self._send(401, {}, b'{"error": {"message": "bad key"}}')
            else:
                self._send(200, {}, b'{"object": "list", "data": [{"id": "fake", "object": "model"}]}')

        def do_POST(self) -> None:
            received = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {}, b'{"error": "not found"}')
                return
            try:
                body = json.loads(raw)
                messages = [m for m in body["messages"] if isinstance(m, dict)]
                request = Request(messages, _schema(body), self.headers.get("Authorization"), received)
            except (ValueError, KeyError, TypeError, AttributeError):
                self._send(400, {}, b'{"error": "bad request body"}')
                return
            status, headers, payload = model.reply(body, request)
            request.status = status
            request.replied = time.monotonic()
            self._send(status, headers, payload)

        def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            # One write: status line, headers and body leave in a single segment. OSError: the
            # client gave up (read timeout) and there is nobody to tell.
            with contextlib.suppress(OSError):
                self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `seen` instead
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    """`python -m <package>.testing.fake_model --port 8000 --latency-ms 50 [--golden eval/golden.jsonl]`:
    serve until Ctrl-C (echo, or the golden set's answers as far as the prompts allow)."""
    import argparse

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--golden", type=Path, help="answer from this golden set instead of echoing")
    parser.add_argument("--fingerprint", default="fake-1", help="the system_fingerprint of every response")
    args = parser.parse_args(argv)
    answer = golden_answers(args.golden) if args.golden else echo
    with FakeModel(answer, latency_s=args.latency_ms / 1000, port=args.port, fingerprint=args.fingerprint) as model:
        print(model.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
