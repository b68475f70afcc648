"""A small OpenAI-compatible model server on 127.0.0.1 that misbehaves on purpose (tests, benchmarks).

It answers the three support prompts the way a decent model would (keyword intent, regex order
fields, an answer quoting the policy) and, to make leak tests meaningful, ECHOES the user's message
in its answer and in its error bodies. Knobs: `latency_s` per call, `error_every` (every Nth call
fails with HTTP 400, which the client does not retry), `intent` (always this intent: a worse
candidate), `gate` (a threading.Event every call waits on: a model that hangs until released).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

INTENT_WORDS = (
    ("refund", ("refund", "return", "money back", "cancel")),
    ("order_status", ("order", "where", "shipped", "tracking", "parcel")),
    ("account", ("password", "account", "login", "sign in")),
    ("product", ("size", "material", "stock", "colour", "color")),
)


def classify(text: str) -> str:
    low = text.lower()
    for intent, words in INTENT_WORDS:
        if any(w in low for w in words):
            return intent
    return "other"


class FakeModel:
    def __init__(self, latency_s: float = 0.0, error_every: int = 0, intent: str | None = None,
                 gate: threading.Event | None = None, api_key: str | None = None) -> None:  # fmt: skip
        self.latency_s = latency_s
        self.error_every = error_every
        self.intent = intent
        self.gate = gate
        self.api_key = api_key
        self.calls = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- behaviour ---------------------------------------------------------------------------------
    def reply(self, messages: list[dict[str, str]], fields: frozenset[str] = frozenset()) -> tuple[int, dict[str, Any]]:
        """`fields`: the properties of the requested output schema, which name the prompt's task
        (its wording may change; its output contract is what the app relies on)."""
        with self._lock:
            self.calls += 1
            n = self.calls
        if self.gate is not None:
            self.gate.wait(timeout=30)
        if self.latency_s:
            time.sleep(self.latency_s)
        system = messages[0]["content"]
        user = messages[-1]["content"]
        if self.error_every and n % self.error_every == 0:
            return 400, {"error": {"message": f"cannot process: {user}"}}
        if "intent" in fields:
            content: dict[str, Any] = {"intent": self.intent or classify(user)}
        elif "order_id" in fields:
            order = re.search(r"\bBH-\d+\b", user)
            email = re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", user)
            content = {"order_id": order.group() if order else None, "email": email.group() if email else None}
        else:
            policy = system.split("Policy:", 1)[-1].strip().split(". ")[0]
            content = {"answer": f"You asked: {user} {policy}."}
        text = json.dumps(content)
        words = sum(len(m["content"].split()) for m in messages)
        usage = {"prompt_tokens": words, "completion_tokens": len(text.split()), "total_tokens": words}
        return 200, {"choices": [{"message": {"role": "assistant", "content": text}}], "usage": usage}

    # -- server ------------------------------------------------------------------------------------
    def start(self) -> str:
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # keep-alive without ~40 ms stalls
            wbufsize = 65536  # the response leaves in one piece

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if model.api_key and self.headers.get("Authorization") != f"Bearer {model.api_key}":
                    self._send(401, {"error": {"message": "bad key"}})
                    return False
                return True

            def do_GET(self) -> None:
                if self._authorized():
                    self._send(200, {"data": [{"id": "fake"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if self._authorized():
                    self._send(*model.reply(body["messages"], _schema_fields(body)))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.base_url

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def write_version(root: Path, dest: Path, base_url: str, **sections: dict[str, Any]) -> Path:
    """A version directory (params.yaml, prompts/, data/policies.yaml) from the project's files,
    its model pointed at `base_url`; `sections` override params keys, e.g. canary={"min_requests": 5}."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(root / "prompts", dest / "prompts", dirs_exist_ok=True)
    (dest / "data").mkdir(exist_ok=True)
    shutil.copy(root / "data" / "policies.yaml", dest / "data" / "policies.yaml")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"].update(base_url=base_url, name="fake-model", api_key_env="")
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def _schema_fields(body: dict[str, Any]) -> frozenset[str]:
    fmt = body.get("response_format") or {}
    schema = fmt.get("schema") or fmt.get("json_schema", {}).get("schema") or {}
    return frozenset(schema.get("properties", {}))
