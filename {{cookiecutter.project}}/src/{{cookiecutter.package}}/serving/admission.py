"""Who may ask, and how much at once: checked before a request's body is read or the model called.

- `ApiKeys`: off unless `serve.api_keys_env` names an env var (filled from a Kubernetes Secret).
  Then the answer routes need `Authorization: Bearer <key>`, one of the variable's comma-separated
  keys, compared in constant time with every key (the time says nothing about which key, or how
  much of one, matched). Probes and /metrics stay open: the kubelet and Prometheus hold no key.
- `Capacity`: at most `serve.max_inflight` requests answered at once in the process. One more is
  refused at once (429, `Retry-After`) instead of queued: past its capacity a pod would answer
  everyone late, while a refused caller can retry, or be sent elsewhere by the load balancer.
- `ClientLimits`: per caller, at most `serve.client_max_inflight` requests at once and
  `serve.client_rate_per_s` a second (a token bucket holding one second of requests); 0 = off. The
  caller is its key when keys are on, else its address (behind a gateway: the gateway's, so turn
  keys on for per-caller limits). Idle callers are forgotten, so memory stays bounded.

Everything here is O(1) per request and never waits.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class Refusal:
    """Why a request is turned away: its status, the reason (a metric label), a sentence, and when to retry."""

    status: int
    reason: str
    detail: str
    retry_after_s: int | None = None


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @classmethod
    def from_env(cls, name: str, env: Mapping[str, str]) -> ApiKeys | None:
        """The keys in env var `name` (comma-separated); None when `name` is ""; a UserError when unset."""
        if not name:
            return None
        keys = [k.strip() for k in env.get(name, "").split(",") if k.strip()]
        if not keys:
            raise UserError(
                f"serve.api_keys_env: environment variable {name} holds no key (comma-separated keys, "
                'e.g. from the llm-app-secrets Secret; or set serve.api_keys_env to "" to serve without keys)'
            )
        return cls(keys)

    def caller(self, authorization: str | None) -> str | None:
        """An id for the caller (a hash prefix of its key, safe to log), or None when the header holds
        no valid key."""
        scheme, _, given = (authorization or "").partition(" ")
        presented = given.strip().encode()
        found = None
        for key in self._keys:  # every key, always: no early exit to time
            if hmac.compare_digest(presented, key) and scheme.lower() == "bearer":
                found = key
        return None if found is None else "key:" + hashlib.sha256(found).hexdigest()[:8]


class Capacity:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0

    def enter(self) -> Refusal | None:
        if self.inflight >= self.limit:
            return Refusal(
                429, "capacity", f"the service is answering {self.limit} requests, its limit (serve.max_inflight)", 1
            )
        self.inflight += 1
        return None

    def leave(self) -> None:
        self.inflight -= 1


@dataclass
class _Caller:
    inflight: int = 0
    tokens: float = 0.0
    refilled: float = 0.0


class ClientLimits:
    MAX_IDLE = 10_000  # callers remembered before idle ones are forgotten

    def __init__(self, max_inflight: int, rate_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_inflight = max_inflight
        self.rate = rate_per_s
        self.burst = max(1.0, rate_per_s)  # one second's worth
        self._clock = clock
        self._callers: dict[str, _Caller] = {}
        self._prune_at = self.MAX_IDLE

    @property
    def enabled(self) -> bool:
        return self.max_inflight > 0 or self.rate > 0

    def enter(self, caller: str) -> Refusal | None:
        if not self.enabled:
            return None
        now = self._clock()
        state = self._callers.get(caller)
        if state is None:
            self._forget_idle(now)
            state = self._callers[caller] = _Caller(tokens=self.burst, refilled=now)
        if self.max_inflight and state.inflight >= self.max_inflight:
            detail = f"this caller has {state.inflight} requests in flight, its limit (serve.client_max_inflight)"
            return Refusal(429, "client_concurrency", detail, 1)
        if self.rate:
            state.tokens = min(self.burst, state.tokens + (now - state.refilled) * self.rate)
            state.refilled = now
            if state.tokens < 1.0:
                wait = math.ceil((1.0 - state.tokens) / self.rate)
                return Refusal(
                    429, "client_rate", f"more than {self.rate:g} requests a second (serve.client_rate_per_s)", wait
                )
            state.tokens -= 1.0
        state.inflight += 1
        return None

    def leave(self, caller: str) -> None:
        if self.enabled:
            self._callers[caller].inflight -= 1

    def _forget_idle(self, now: float) -> None:
        # Amortised: a sweep at most each time the table doubles, so each request pays O(1).
        if len(self._callers) < self._prune_at:
            return
        for name, state in list(self._callers.items()):
            full = state.tokens + (now - state.refilled) * self.rate >= self.burst
            if state.inflight == 0 and (full or not self.rate):
                del self._callers[name]
        self._prune_at = max(self.MAX_IDLE, 2 * len(self._callers))
