"""A fake OpenAI-compatible model server on 127.0.0.1 that misbehaves on purpose.

Fault tests and the benchmark talk to it over real HTTP, through our real client. It answers
`POST /v1/chat/completions` by echoing the last user message (so a golden example passes or fails
by construction), after a fixed latency. A marker in the user message picks a fault for that call:

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
from typing import Any

MARKER_RE = re.compile(r"\s*!(429|500once|500|hang|badjson|nochoices|echoauth)\b\s*")


@dataclass
class Seen:
    """One request as the server saw it."""

    content: str  # the last user message
    authorization: str | None
    received: float  # time.monotonic() at arrival
    replied: float = 0.0
    status: int = 0


def echo(content: str) -> str:
    """The default model: the user message without fault markers."""
    return MARKER_RE.sub(" ", content).strip()


class FakeModel:
    """`with FakeModel(latency_s=0.05) as model: ... model.base_url ... model.calls()`."""

    def __init__(
        self,
        latency_s: float = 0.0,
        *,
        retry_after: str = "1",
        hang_s: float = 5.0,
        answer: Callable[[str], str] = echo,
        port: int = 0,
    ) -> None:
        self.latency_s = latency_s
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.answer = answer
        self.seen: list[Seen] = []
        self._per_message: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-model", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeModel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()  # wakes `!hang` handlers
        self._server.shutdown()
        self._server.server_close()

    def calls(self, marker: str | None = None) -> int:
        """Requests received so far (only those whose message contains `marker`, if given)."""
        with self._lock:
            return sum(1 for s in self.seen if marker is None or marker in s.content)

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()
            self._per_message.clear()

    def reply(self, body: dict[str, Any], seen: Seen) -> tuple[int, dict[str, str], bytes]:
        """Status, extra headers and body for one request (the fault logic)."""
        content = seen.content
        with self._lock:
            self._per_message[content] += 1
            nth = self._per_message[content]
        fault = MARKER_RE.search(content)
        kind = fault.group(1) if fault else None
        if kind == "429" and nth == 1:
            return 429, {"Retry-After": self.retry_after}, b'{"error": {"message": "rate limited"}}'
        if kind == "500" or (kind == "500once" and nth == 1):
            return 500, {}, b'{"error": {"message": "internal error"}}'
        if kind == "echoauth":
            text = f'{{"error": "invalid key: {seen.authorization}"}}'
            return 401, {}, text.encode()
        if kind == "hang":
            self._closing.wait(self.hang_s)
        elif self.latency_s:
            time.sleep(self.latency_s)
        if kind == "badjson":
            return 200, {}, b'{"choices": [{"message": {"content": "trunc'
        if kind == "nochoices":
            return 200, {}, b'{"object": "chat.completion"}'
        text = self.answer(content)
        words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        payload = {
            "object": "chat.completion",
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": words, "completion_tokens": len(text.split())},
        }
        return 200, {}, json.dumps(payload).encode()


def _handler_for(model: FakeModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            received = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {}, b'{"error": "not found"}')
                return
            try:
                body = json.loads(raw)
                users = [m for m in body["messages"] if m.get("role") == "user"]
                content = str(users[-1]["content"]) if users else ""
            except (ValueError, KeyError, TypeError):
                self._send(400, {}, b'{"error": "bad request body"}')
                return
            seen = Seen(content, self.headers.get("Authorization"), received)
            with model._lock:
                model.seen.append(seen)
            status, headers, payload = model.reply(body, seen)
            seen.status = status
            seen.replied = time.monotonic()
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
    """`python -m <package>.testing.fake_model --port 8000 --latency-ms 50`: serve until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    with FakeModel(args.latency_ms / 1000, port=args.port) as model:
        print(model.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
