"""The service's model client: the eval's `ChatClient` on asyncio (aiohttp) instead of threads.

Same request body, headers, failures, key scrubbing and retry policy (`client.ChatWire`,
`retry.RetryPolicy`); only the transport differs. A call waiting on the model holds a coroutine and a
pooled connection, not a thread, so one process keeps thousands of calls in flight in bounded memory.
Cancelling the awaiting task (a request deadline) abandons the call and closes its connection.

Why aiohttp and not httpx: measured here, 1,000 concurrent calls to a model that answers in 1 s took
1.1-1.2 s on aiohttp and 19-24 s on httpx 0.28 (its connection pool does work per waiting request on
every event: encode/httpx#3215), which capped the service at ~9 answers/s at 1,000 in flight.
aiohttp is imported when the first call is made, on the loop that will use it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .client import ChatWire, Completion, ModelError, read_completion
from .retry import RETRY_STATUS, RetryPolicy, parse_retry_after

if TYPE_CHECKING:
    import aiohttp


class AsyncChatClient(ChatWire):
    """Use from one event loop; `await client.aclose()` on that loop when done."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: tuple[float, float] = (5.0, 60.0),
        retry: RetryPolicy | None = None,
        max_connections: int = 1000,  # calls in flight at once; more wait (up to the connect timeout) for one
        json_schema_style: str = "openai",
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(
            base_url, model, api_key, timeout=timeout, retry=retry, json_schema_style=json_schema_style, rand=rand
        )
        self._sleep = sleep
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Built on first use: an aiohttp session belongs to the loop that creates it.
        if self._session is None:
            import aiohttp

            connect, read = self.timeout
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0),
                # connect covers waiting for a free connection too; read is the longest silence
                # between bytes of an answer (as requests' read timeout), not the whole answer.
                timeout=aiohttp.ClientTimeout(total=None, connect=connect, sock_read=read),
                trust_env=False,  # no proxies or netrc credentials picked up behind our back
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def chat(self, messages: Sequence[Mapping[str, str]], **options: Any) -> Completion:
        """One chat completion, retried as the policy allows; raises ModelError otherwise."""
        import aiohttp

        body = self.body(messages, **options)
        session = self._client()
        deadline = time.monotonic() + self.retry.max_retry_s
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            started = time.perf_counter()
            try:
                async with session.post(self.url, data=body, headers=self._headers) as response:
                    status, payload = response.status, await response.read()
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
            except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors (and ClientErrors)
                failure = ModelError("timeout", self._scrub(exc), attempt)
            except aiohttp.ClientError as exc:
                failure = ModelError("transport", self._scrub(exc), attempt)
            else:
                latency_ms = (time.perf_counter() - started) * 1000
                if status == 200:
                    return read_completion(payload, latency_ms, attempt)
                failure = self.http_failure(status, payload.decode("utf-8", "replace"), attempt)
                if status not in RETRY_STATUS:
                    raise failure
            wait = self.next_wait(attempt, retry_after, deadline)
            if wait is None:
                raise failure
            await self._sleep(wait)

    async def ping(self, timeout_s: float = 2.0) -> int:
        """HTTP status of `GET <base>/models`: whether the endpoint answers and takes our key.
        Raises ModelError (transport | timeout) when it does not answer."""
        import aiohttp

        url = self.url.removesuffix("/chat/completions") + "/models"
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        try:
            async with self._client().get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                await r.read()
                return r.status
        except TimeoutError as exc:
            raise ModelError("timeout", self._scrub(exc), 1) from None
        except aiohttp.ClientError as exc:
            raise ModelError("transport", self._scrub(exc), 1) from None
