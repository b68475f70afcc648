"""OpenAI-compatible chat client on `requests`: pooled, bounded, honest about failures.

- explicit (connect, read) timeouts on every call;
- retries on 429, 5xx and connection/timeout errors with exponential backoff and full jitter,
  honouring `Retry-After`; bounded by `max_attempts` and by `max_retry_s` of total time (the
  policy in retry.py, shared with the service's asyncio client, async_client.py);
- token usage and latency recorded per call;
- anything that still fails is a `ModelError` (an *error*, counted apart from wrong answers).
The API key goes in the Authorization header and nowhere else: every error text is scrubbed of it
(servers and gateways do echo the header back in error bodies), so it cannot reach results or logs.
`requests` is imported when the first client is built, not with this module: a fully cached
evaluation never pays for it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .retry import RETRY_STATUS, RetryPolicy, parse_retry_after

if TYPE_CHECKING:
    import requests

REDACTED = "[REDACTED]"


class ModelError(Exception):
    """A call that did not produce a usable completion after the allowed retries."""

    def __init__(self, kind: str, message: str, attempts: int) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind  # "transport" | "timeout" | "http" | "parse"
        self.attempts = attempts


class AuthenticationError(ModelError):
    """The endpoint refused the credentials (HTTP 401 or 403): no later call can succeed either, so
    an evaluation stops at once instead of spending its error budget on the same answer."""


AUTH_STATUS = frozenset({401, 403})


@dataclass(frozen=True)
class Completion:
    text: str
    tokens_in: int
    tokens_out: int
    latency_ms: float  # the successful attempt alone
    attempts: int
    # Who answered, as the response says: its `model` and `system_fingerprint` (the backend build and
    # configuration). A provider that swaps weights or runtime under the same name changes these;
    # `drift` watches them. "" when the endpoint sends none.
    model: str = ""
    fingerprint: str = ""

    @property
    def provider(self) -> str:
        """`model` or `model fingerprint=<fp>`: one comparable text per backend."""
        return f"{self.model} fingerprint={self.fingerprint}" if self.fingerprint else self.model


class ChatWire:
    """What a client sends and how it reads what comes back, whatever its transport: the request
    body, the headers, failures (scrubbed of the key) and the retry policy. `ChatClient` (requests,
    threads) and `async_client.AsyncChatClient` (aiohttp, asyncio) differ only in how bytes travel."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: tuple[float, float] = (5.0, 60.0),
        retry: RetryPolicy | None = None,
        json_schema_style: str = "openai",  # "openai" | "llama.cpp": how to ask for schema output
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.json_schema_style = json_schema_style
        self._rand = rand
        self._headers = {"Content-Type": "application/json"}
        self._secret = api_key or None
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def payload(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int = 128,
        seed: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if seed is not None:
            body["seed"] = seed
        if schema is not None:
            if self.json_schema_style == "llama.cpp":
                # llama.cpp turns this into a grammar: the model cannot emit anything else.
                body["response_format"] = {"type": "json_object", "schema": dict(schema)}
            else:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": dict(schema), "strict": True},
                }
        return body

    def body(self, messages: Sequence[Mapping[str, str]], **options: Any) -> bytes:
        """The request body, serialised once for every attempt."""
        return json.dumps(self.payload(messages, **options), ensure_ascii=False, separators=(",", ":")).encode()

    def http_failure(self, status: int, text: str, attempt: int) -> ModelError:
        error = AuthenticationError if status in AUTH_STATUS else ModelError
        return error("http", f"HTTP {status}: {self._scrub(text)}", attempt)

    def next_wait(self, attempt: int, retry_after: float | None, deadline: float) -> float | None:
        """Seconds before the next attempt after a retryable failure, or None to give up."""
        return self.retry.next_wait(attempt, retry_after, deadline, self._rand)

    def _scrub(self, text: object) -> str:
        """Error text, short, with the API key cut out *before* truncating (no half key survives)."""
        text = str(text) or type(text).__name__
        if self._secret:
            text = text.replace(self._secret, REDACTED)
        return _short(text)


class ChatClient(ChatWire):
    """One pooled HTTP session per thread; safe to share between worker threads."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: tuple[float, float] = (5.0, 60.0),
        retry: RetryPolicy | None = None,
        pool_size: int = 16,
        json_schema_style: str = "openai",  # "openai" | "llama.cpp": how to ask for schema output
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(
            base_url, model, api_key, timeout=timeout, retry=retry, json_schema_style=json_schema_style, rand=rand
        )
        self._sleep = sleep
        self._local = threading.local()
        self._pool_size = pool_size
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        # One Session per thread: requests does not promise Session is thread-safe, and a
        # per-thread keep-alive connection is exactly the pooling we want.
        session = getattr(self._local, "session", None)
        if session is None:
            import requests
            from requests.adapters import HTTPAdapter

            session = requests.Session()
            session.trust_env = False  # no proxies or netrc credentials picked up behind our back
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self._pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def chat(self, messages: Sequence[Mapping[str, str]], **options: Any) -> Completion:
        """One chat completion, retried as the policy allows; raises ModelError otherwise."""
        import requests

        # Serialised once and sent as a prepared request on the thread's session: Session.post
        # would re-merge proxies, cookies and auth on every call, ~60% of requests' CPU per call,
        # which 16 threads then queue for under the GIL (see benchmarks/bench_eval.py).
        prepared = requests.PreparedRequest()
        prepared.prepare(method="POST", url=self.url, headers=self._headers, data=self.body(messages, **options))
        deadline = time.monotonic() + self.retry.max_retry_s
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            started = time.perf_counter()
            try:
                response = self._session().send(prepared, timeout=self.timeout)
            except requests.Timeout as exc:
                failure = ModelError("timeout", self._scrub(exc), attempt)
            except requests.RequestException as exc:
                failure = ModelError("transport", self._scrub(exc), attempt)
            else:
                latency_ms = (time.perf_counter() - started) * 1000
                if response.status_code == 200:
                    return read_completion(response.content, latency_ms, attempt)
                failure = self.http_failure(response.status_code, response.text, attempt)
                if response.status_code not in RETRY_STATUS:
                    raise failure
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            wait = self.next_wait(attempt, retry_after, deadline)
            if wait is None:
                raise failure
            self._sleep(wait)


def read_completion(body: bytes, latency_ms: float, attempts: int) -> Completion:
    """The completion in the body of a 200 response."""
    try:
        data = json.loads(body)
        text = data["choices"][0]["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("content is not a string")
    except (ValueError, KeyError, IndexError, TypeError, RecursionError) as exc:
        raise ModelError("parse", f"unusable response body ({_short(exc)})", attempts) from None
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return Completion(
        text=text,
        tokens_in=_count(usage.get("prompt_tokens")),
        tokens_out=_count(usage.get("completion_tokens")),
        latency_ms=latency_ms,
        attempts=attempts,
        model=_label(data.get("model")),
        fingerprint=_label(data.get("system_fingerprint")),
    )


def _label(value: object) -> str:
    """A short identifying text from the response (model, fingerprint); "" when absent or not text."""
    return value[:200] if isinstance(value, str) else ""


def _count(value: object) -> int:
    """A token count from `usage`; 0 when a server sends none or nonsense (it is a figure, not the answer)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**53:
        return 0
    return int(value)


def _short(text: object) -> str:
    text = str(text) or type(text).__name__
    return text if len(text) <= 200 else text[:197] + "..."
