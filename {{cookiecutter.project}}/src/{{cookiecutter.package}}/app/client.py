"""OpenAI-compatible chat client on `requests`: pooled, bounded, honest about failures.

- explicit (connect, read) timeouts on every call;
- retries on 429, 5xx and connection/timeout errors with exponential backoff and full jitter,
  honouring `Retry-After`; bounded by `max_attempts` and by `max_retry_s` of total time;
- token usage and latency recorded per call;
- anything that still fails is a `ModelError` (an *error*, counted apart from wrong answers).
The API key goes in the Authorization header and nowhere else: every error text is scrubbed of it
(servers and gateways do echo the header back in error bodies), so it cannot reach results or logs.
`requests` is imported when the first client is built, not with this module: a fully cached
evaluation never pays for it.
"""

from __future__ import annotations

import email.utils
import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
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


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    max_retry_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 8.0

    def delay(self, attempt: int, retry_after: float | None, rand: Callable[[], float]) -> float:
        """Seconds to wait before attempt `attempt + 1` (full jitter unless the server said)."""
        if retry_after is not None:
            return retry_after
        return rand() * min(self.backoff_cap_s, self.backoff_base_s * 2**attempt)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ChatClient:
    """One pooled HTTP session per client; safe to share between worker threads."""

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
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.json_schema_style = json_schema_style
        self._sleep = sleep
        self._rand = rand
        self._local = threading.local()
        self._headers = {"Content-Type": "application/json"}
        self._secret = api_key or None
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
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

    def chat(self, messages: Sequence[Mapping[str, str]], **options: Any) -> Completion:
        """One chat completion, retried as the policy allows; raises ModelError otherwise."""
        import requests

        # Serialised once and sent as a prepared request on the thread's session: Session.post
        # would re-merge proxies, cookies and auth on every call, ~60% of requests' CPU per call,
        # which 16 threads then queue for under the GIL (see benchmarks/bench_eval.py).
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method="POST",
            url=self.url,
            headers=self._headers,
            data=json.dumps(self.payload(messages, **options), ensure_ascii=False, separators=(",", ":")).encode(),
        )
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
                    return _completion(response, latency_ms, attempt)
                body_text = self._scrub(response.text)
                error = AuthenticationError if response.status_code in AUTH_STATUS else ModelError
                failure = error("http", f"HTTP {response.status_code}: {body_text}", attempt)
                if response.status_code not in RETRY_STATUS:
                    raise failure
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            wait = self.retry.delay(attempt - 1, retry_after, self._rand)
            if attempt >= self.retry.max_attempts or time.monotonic() + wait > deadline:
                raise failure
            self._sleep(wait)

    def _scrub(self, text: object) -> str:
        """Error text, short, with the API key cut out *before* truncating (no half key survives)."""
        text = str(text) or type(text).__name__
        if self._secret:
            text = text.replace(self._secret, REDACTED)
        return _short(text)


def _completion(response: requests.Response, latency_ms: float, attempts: int) -> Completion:
    try:
        data = response.json()
        text = data["choices"][0]["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("content is not a string")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ModelError("parse", f"unusable response body ({_short(exc)})", attempts) from None
    usage = data.get("usage") or {}
    return Completion(
        text=text,
        tokens_in=int(usage.get("prompt_tokens") or 0),
        tokens_out=int(usage.get("completion_tokens") or 0),
        latency_ms=latency_ms,
        attempts=attempts,
    )


def _short(text: object) -> str:
    text = str(text) or type(text).__name__
    return text if len(text) <= 200 else text[:197] + "..."
