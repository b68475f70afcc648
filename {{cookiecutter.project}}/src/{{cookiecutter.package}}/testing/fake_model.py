"""The fake OpenAI-compatible model server on 127.0.0.1 that every test and benchmark talks to.

They reach it over real HTTP, through our real client. WHAT it answers is a pure function of the
request, an "answerer" (`Request -> reply text`):

    echo                           the last user message without fault markers (the default)
    support_answers(intent=None)   the three support prompts as a decent model answers them
    golden_answers(golden, ...)    the golden set's right answers (or chosen wrong ones)

HOW it answers is the server's: `latency_s` per call; `error_every` (every Nth call fails with HTTP
400 whose body echoes the message, as some providers do); `api_key` (any other key gets 401);
`gate` (a threading.Event every call waits on: a model that hangs until released); and a marker in
the last user message picks a fault for that call:

    !429        first request for this message: 429 with `Retry-After`, then normal answers
    !500        always HTTP 500
    !500once    first request 500, then normal answers
    !hang       sleep `hang_s` before answering (longer than the client's read timeout)
    !badjson    200 with a truncated JSON body
    !nochoices  200 with valid JSON that has no `choices`
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
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MARKER_RE = re.compile(r"\s*!(429|500once|500|hang|badjson|nochoices|echoauth)\b\s*")


@dataclass
class Request:
    """One chat request as the server saw it."""

    messages: list[dict[str, Any]]
    fields: frozenset[str]  # properties of the requested output schema: they name the prompt's task
    authorization: str | None
    received: float  # time.monotonic() at arrival
    replied: float = 0.0
    status: int = 0

    @property
    def content(self) -> str:
        """The last user message (few-shot turns come before it)."""
        users = [m for m in self.messages if m.get("role") == "user"]
        return str(users[-1].get("content", "")) if users else ""

    @property
    def system(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.messages if m.get("role") == "system")


Answerer = Callable[[Request], str]


# -- answerers -------------------------------------------------------------------------------------


def echo(request: Request) -> str:
    """The user message without fault markers: a golden example passes or fails by construction."""
    return MARKER_RE.sub(" ", request.content).strip()


INTENT_WORDS = (
    ("refund", ("refund", "return", "money back", "cancel")),
    ("order_status", ("order", "where", "shipped", "tracking", "parcel")),
    ("account", ("password", "account", "login", "sign in")),
    ("product", ("size", "material", "stock", "colour", "color")),
)


def classify(text: str) -> str:
    low = text.lower()
    return next((intent for intent, words in INTENT_WORDS if any(w in low for w in words)), "other")


def support_answers(intent: str | None = None) -> Answerer:
    """The three support prompts answered like a decent model: keyword intent, regex order fields,
    an answer quoting the policy. The prompt is recognised by its output schema (its wording may
    change; its output contract is what the app relies on). Answers ECHO the user's message, which
    makes leak tests meaningful. `intent`: always this intent (a worse candidate)."""

    def answer(request: Request) -> str:
        user = request.content
        if "intent" in request.fields:
            return json.dumps({"intent": intent or classify(user)})
        if "order_id" in request.fields:
            order = re.search(r"\bBH-\d+\b", user)
            email = re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", user)
            return json.dumps({"order_id": order.group() if order else None, "email": email.group() if email else None})
        policy = request.system.split("Policy:", 1)[-1].strip().split(". ")[0]
        return json.dumps({"answer": f"You asked: {user} {policy}."})

    return answer


def golden_answers(golden: Path, wrong: dict[str, str] | None = None, *, needs_label: bool = False) -> Answerer:
    """The golden set's answers: the example whose input values all appear in the request's system
    messages and last user turn (few-shot turns would match other examples), the most specific match
    winning. `wrong`: example id -> a wrong answer, so a baseline is realistic rather than perfect.
    `needs_label`: an intent is known only while the system message names it (`label:`), so a prompt
    that drops its labels gets real pass -> fail flips. Anything else gets a "don't know" answer."""
    wrong = wrong or {}
    entries = []
    for line in Path(golden).read_text().splitlines():
        if line.strip():
            example = json.loads(line)
            reply = wrong.get(example["id"]) or right_answer(example)
            label = _intent(reply) if needs_label else None
            entries.append((list(example["input"].values()), reply, f"{label}:" if label else ""))
    entries.sort(key=lambda entry: -sum(map(len, entry[0])))  # stable: ties keep the file's order

    def answer(request: Request) -> str:
        system, text = request.system, request.system + "\n" + request.content
        match = next((e for e in entries if all(v in text for v in e[0])), None)
        if match is None or match[2] not in system:
            return json.dumps({"intent": "other"} if "intent" in request.fields else {"answer": DONT_KNOW})
        return match[1]

    return answer


DONT_KNOW = "I will pass your question to a colleague."


def right_answer(example: dict[str, Any]) -> str:
    """A reply that passes the example: its `expected`, or the policy sentence holding its facts."""
    expected = example.get("expected")
    if expected is not None:
        return expected if isinstance(expected, str) else json.dumps(expected)
    return json.dumps({"answer": quote(example["input"].get("policy", ""), example.get("contains", []))})


def quote(policy: str, facts: list[str], limit: int = 160) -> str:
    """The first policy sentence holding every fact, within the answer schema's length limit."""
    sentences = [part.strip() for part in re.split(r"(?<=[.;])\s+", policy) if part.strip()] or [" ".join(facts)]
    best = next((x for x in sentences if all(f.casefold() in x.casefold() for f in facts)), sentences[0])
    return best[:limit]


def _intent(reply: str) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        return json.loads(reply).get("intent")
    return None


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
    ) -> None:
        self.answer = answer
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
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("the fake model has not been started")
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-model", daemon=True).start()
        return self.base_url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            self._closing.set()  # wakes `!hang` handlers
            server.shutdown()
            server.server_close()

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
            time.sleep(self.latency_s)
        if kind == "badjson":
            return 200, {}, b'{"choices": [{"message": {"content": "trunc'
        if kind == "nochoices":
            return 200, {}, b'{"object": "chat.completion"}'
        text = self.answer(request)
        words = sum(len(str(m.get("content", "")).split()) for m in request.messages)
        payload = {
            "object": "chat.completion",
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": words, "completion_tokens": len(text.split()), "total_tokens": words},
        }
        return 200, {}, json.dumps(payload).encode()


def _schema_fields(body: dict[str, Any]) -> frozenset[str]:
    fmt = body.get("response_format") or {}
    schema = fmt.get("schema") or fmt.get("json_schema", {}).get("schema") or {}
    return frozenset(schema.get("properties", {}))


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
                request = Request(messages, _schema_fields(body), self.headers.get("Authorization"), received)
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
    serve until Ctrl-C (echo, or the golden set's answers)."""
    import argparse

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--golden", type=Path, help="answer from this golden set instead of echoing")
    args = parser.parse_args(argv)
    answer = golden_answers(args.golden) if args.golden else echo
    with FakeModel(answer, latency_s=args.latency_ms / 1000, port=args.port) as model:
        print(model.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
