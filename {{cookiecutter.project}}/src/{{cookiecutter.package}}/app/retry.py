"""When a failed model call is tried again, and after how long: the one policy that the eval's client
(threads, `client.ChatClient`) and the service's (asyncio, `async_client.AsyncChatClient`) share, so
a call is retried the same way wherever it is made.

Retried: 429, 408, 409 and 5xx answers, connection errors and timeouts. Waits grow exponentially with
full jitter, or are what the server asked for in `Retry-After`. A call gives up after
`max_attempts`, or when the next wait would end past `max_retry_s` from its first attempt.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


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

    def next_wait(
        self, attempts: int, retry_after: float | None, deadline: float, rand: Callable[[], float]
    ) -> float | None:
        """After `attempts` failed retryable attempts: seconds to wait before the next one, or None to
        give up (attempts used up, or the wait would end past `deadline`, a time.monotonic())."""
        wait = self.delay(attempts - 1, retry_after, rand)
        if attempts >= self.max_attempts or time.monotonic() + wait > deadline:
            return None
        return wait


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
