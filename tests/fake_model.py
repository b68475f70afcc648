"""A deterministic OpenAI-compatible model on 127.0.0.1 that answers from a lookup table.

The gate's end-to-end tests need a model whose answers change when, and only when, a prompt gets
worse; the embedded model takes seconds per call on a loaded box. This server looks up the last
user message. An entry may name a word the system message must contain for the model to "know"
the answer (e.g. an intent label): a prompt that drops the label gets the fallback answer instead,
which is how "remove the labels from classify_intent" turns into real pass -> fail flips.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    answer: str
    needs: str | None = None  # a word the system message must contain, else the fallback answer


def golden_table(golden: Path, wrong: dict[str, str] | None = None) -> dict[str, Entry]:
    """Right answers for every example of a golden set (user message -> entry); `wrong` overrides
    chosen example ids with a wrong answer, so the baseline is realistic rather than perfect."""
    wrong = wrong or {}
    table: dict[str, Entry] = {}
    for line in golden.read_text().splitlines():
        example = json.loads(line)
        inputs = example["input"]
        if example["prompt"] == "classify_intent":
            answer = wrong.get(example["id"]) or json.dumps(example["expected"])
            label = json.loads(answer)["intent"]
            table[inputs["message"]] = Entry(answer, needs=f"{label}:")
        elif example["prompt"] == "extract_order":
            table[inputs["message"]] = Entry(wrong.get(example["id"]) or json.dumps(example["expected"]))
        else:  # answer_policy: quoting the policy sentence that holds the facts asked for is grounded
            answer = json.dumps({"answer": quote(inputs["policy"], example.get("contains", []))})
            table[inputs["question"]] = Entry(wrong.get(example["id"]) or answer)
    return table


def quote(policy: str, facts: list[str], limit: int = 160) -> str:
    """The first policy sentence holding every fact, within the answer schema's length limit."""
    sentences = [part.strip() for part in re.split(r"(?<=[.;])\s+", policy) if part.strip()]
    best = next((x for x in sentences if all(f.casefold() in x.casefold() for f in facts)), sentences[0])
    return best[:limit]


class FakeModel:
    """`with FakeModel(table) as url:` -> an OpenAI-compatible base URL (…/v1) while it runs."""

    def __init__(self, table: dict[str, Entry], fallback: str = '{"intent": "other"}') -> None:
        self.table = table
        self.fallback = fallback
        self.calls = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def answer(self, messages: list[dict[str, str]]) -> str:
        system = " ".join(m["content"] for m in messages if m["role"] == "system")
        user = [m["content"] for m in messages if m["role"] == "user"][-1]
        entry = self.table.get(user)
        if entry is None or (entry.needs and entry.needs not in system):
            return self.fallback
        return entry.answer

    def __enter__(self) -> str:
        model = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive clients stall ~40 ms per request without these (NOTES.md, test servers).
            disable_nagle_algorithm = True
            wbufsize = 65536
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with model._lock:
                    model.calls += 1
                text = model.answer(body["messages"])
                words = sum(len(m["content"].split()) for m in body["messages"])
                reply = json.dumps({
                    "id": "fake", "object": "chat.completion", "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": words, "completion_tokens": len(text.split())},
                }).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:  # quiet test output
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
