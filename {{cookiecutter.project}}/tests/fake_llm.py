"""A small OpenAI-compatible chat server on 127.0.0.1 that knows the golden set's answers.

Tests that exercise the pipeline and the registry (not the model) point `model.base_url` here: it
answers in milliseconds, passes the absolute thresholds, and counts the calls it served, so a test
can tell how many examples really reached the model. It finds the example a request is about by
looking for the example's input values in the request's messages (most specific match wins).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FALLBACK = {"answer": "I will pass your question to a colleague."}


def oracle_answer(example: dict[str, Any]) -> str:
    """A reply that passes the example's expectations."""
    expected = example.get("expected")
    if isinstance(expected, dict):
        return json.dumps(expected)
    if isinstance(expected, str):
        return expected
    contains = example.get("contains") or []
    return json.dumps({"answer": (" ".join(contains) + ".") if contains else FALLBACK["answer"]})


class Oracle:
    def __init__(self, golden: Path) -> None:
        self.examples = [json.loads(line) for line in golden.read_text().splitlines() if line.strip()]
        self.calls = 0
        self._lock = threading.Lock()

    def reply(self, messages: list[dict[str, str]]) -> str:
        with self._lock:
            self.calls += 1
        # The last user turn and the system message(s): few-shot turns would match other examples.
        user = [m["content"] for m in messages if m.get("role") == "user"][-1:]
        text = "\n".join([m["content"] for m in messages if m.get("role") == "system"] + user)
        best, best_len = None, 0
        for example in self.examples:
            values = list(example["input"].values())
            if all(v in text for v in values) and sum(map(len, values)) > best_len:
                best, best_len = example, sum(map(len, values))
        return oracle_answer(best) if best else json.dumps(FALLBACK)


def _handler(oracle: Oracle) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # or each keep-alive request stalls ~40 ms

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if not self.path.endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            text = oracle.reply(body.get("messages") or [])
            self._send(
                200,
                {
                    "id": "fake-1",
                    "object": "chat.completion",
                    "model": body.get("model", "fake"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                },
            )

    return Handler


@contextmanager
def serve(golden: Path) -> Iterator[tuple[str, Oracle]]:
    """(base_url, oracle) of a server running meanwhile; base_url ends in /v1."""
    oracle = Oracle(golden)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(oracle))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", oracle
    finally:
        server.shutdown()
        server.server_close()
