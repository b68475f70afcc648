"""The service's model client: the eval's `ChatClient` on asyncio (httpx) instead of threads.

Same request body, headers, failures, key scrubbing and retry policy (`client.ChatWire`,
`retry.RetryPolicy`); only the transport differs. A call waiting on the model holds a coroutine and a
pooled connection, not a thread, so one process keeps thousands of calls in flight in bounded memory.
Cancelling the awaiting task (a request deadline) abandons the call and its connection at once.
httpx is imported when the first client is built.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from .client import ChatWire, Completion, ModelError, read_completion
from .retry import RETRY_STATUS, RetryPolicy, parse_retry_after


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
        max_connections: int = 1000,  # calls in flight at once; more wait for a connection
        keepalive: int = 16,  # idle connections kept open between bursts
        json_schema_style: str = "openai",
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        import httpx

        super().__init__(
            base_url, model, api_key, timeout=timeout, retry=retry, json_schema_style=json_schema_style, rand=rand
        )
        self._sleep = sleep
        connect, read = timeout
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(read, connect=connect, pool=connect),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=keepalive),
            trust_env=False,  # no proxies or netrc credentials picked up behind our back
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def chat(self, messages: Sequence[Mapping[str, str]], **options: Any) -> Completion:
        """One chat completion, retried as the policy allows; raises ModelError otherwise."""
        import httpx

        body = self.body(messages, **options)
        deadline = time.monotonic() + self.retry.max_retry_s
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            started = time.perf_counter()
            try:
                response = await self._client.post(self.url, content=body, headers=self._headers)
            except httpx.TimeoutException as exc:
                failure = ModelError("timeout", self._scrub(exc), attempt)
            except httpx.HTTPError as exc:
                failure = ModelError("transport", self._scrub(exc), attempt)
            else:
                latency_ms = (time.perf_counter() - started) * 1000
                if response.status_code == 200:
                    return read_completion(response, latency_ms, attempt)
                failure = self.http_failure(response.status_code, response.text, attempt)
                if response.status_code not in RETRY_STATUS:
                    raise failure
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            wait = self.next_wait(attempt, retry_after, deadline)
            if wait is None:
                raise failure
            await self._sleep(wait)

    async def ping(self, timeout_s: float = 2.0) -> int:
        """HTTP status of `GET <base>/models`: whether the endpoint answers and takes our key.
        Raises ModelError (transport | timeout) when it does not answer."""
        import httpx

        url = self.url.removesuffix("/chat/completions") + "/models"
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        try:
            response = await self._client.get(url, headers=headers, timeout=timeout_s)
        except httpx.TimeoutException as exc:
            raise ModelError("timeout", self._scrub(exc), 1) from None
        except httpx.HTTPError as exc:
            raise ModelError("transport", self._scrub(exc), 1) from None
        return response.status_code
