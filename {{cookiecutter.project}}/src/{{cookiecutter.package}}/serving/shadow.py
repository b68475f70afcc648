"""Shadow traffic: the stable track mirrors a fraction of its answered requests to another deployment
(`SHADOW_URL`, the canary's Service) and counts whether the two versions decide the same.

Each mirrored request is POSTed to the same route at `SHADOW_URL` with the caller's body (and its
`Authorization`), marked with `X-Shadow-Of: <this version>` so that the receiver answers it but never
mirrors it again. The other side's answer carries its version (`X-App-Version`); its reply is
compared with ours through the app contract's `decision` (a flow's agreement value), and the
outcome goes to `llm_shadow_requests_total{outcome, shadow_version}`:

    agree / disagree   two DIFFERENT versions decided the same / differently
    same_version       the other side serves this very version (e.g. the canary Service points at
                       the stable pods between rollouts): not a comparison, never counted as agreement
    error              no answer, a non-200, or a body that is not the route's reply
    dropped            `serve.shadow_max_inflight` mirrors already in flight: not sent, never queued

When the answer was captured (production/capture.py), the comparison's outcome is also written as a
`shadow` line joined to it by request id (`offer`'s `done`), so `harvest` finds the disagreements.

Why over HTTP and not a second version loaded in the stable pod: the comparison is then with the
canary as it really runs (its image, its model endpoint, its settings), the stable pod loads one
version and starts one model, and nothing in the shipped manifests can make it compare a version
with itself unseen.

The user never waits for a mirror: it is offered once the answer is complete, runs as a task of its
own (a fresh trace context) and is dropped when `max_inflight` are running. Mirrors still take the
other side's capacity: keep SHADOW_FRACTION small.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import UserError, clip
from .observability import Metrics, elapsed_ms

if TYPE_CHECKING:
    import aiohttp

MIRROR_HEADER = "x-shadow-of"  # on a mirrored request: the mirroring version; such a request is never mirrored
# What a served reply holds besides the route's reply itself (server.Service adds them).
SERVICE_FIELDS = ("request_id", "version")
log = logging.getLogger(f"{__package__}.shadow")

# The route's reply (without SERVICE_FIELDS) -> its decision in canonical JSON.
Decide = Callable[[dict[str, Any]], str]
# Told (outcome, the other side's version) once a comparison is done: the capture's shadow line.
Done = Callable[[str, str], None]


def shadow_url(text: str) -> str:
    """SHADOW_URL checked: an http(s) base URL with a host."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(
            f"SHADOW_URL: expected an http(s) base URL such as http://llm-app-canary, got {clip(text, 60)!r}"
        )
    return text.strip().rstrip("/")


class Shadow:
    """Mirrors requests to `url` in the background and records how the two versions compare."""

    def __init__(
        self,
        url: str,
        fraction: float,
        max_inflight: int,
        version_id: str,
        metrics: Metrics,
        timeout_s: float,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.url = url
        self.fraction = fraction
        self.max_inflight = max_inflight
        self.version_id = version_id
        self.metrics = metrics
        self.timeout_s = timeout_s
        self._rand = rand
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def offer(
        self,
        request_id: str,
        path: str,
        body: Any,
        decision: str,
        decide: Decide,
        authorization: str | None,
        done: Done | None = None,
    ) -> bool:
        """Mirror this answered request (with probability `fraction`); True when a mirror was started.
        `done` hears the outcome of the comparison (not of a mirror dropped for want of room)."""
        if self.fraction <= 0 or self._rand() >= self.fraction:
            return False
        if len(self._tasks) >= self.max_inflight:
            self.metrics.shadow.labels(outcome="dropped", shadow_version="unknown").inc()
            return False
        coroutine = self._compare(request_id, path, body, decision, decide, authorization, done)
        task = asyncio.get_running_loop().create_task(coroutine, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _compare(
        self,
        request_id: str,
        path: str,
        body: Any,
        decision: str,
        decide: Decide,
        authorization: str | None,
        done: Done | None,
    ) -> None:
        started = time.perf_counter()
        try:
            outcome, other, fields = await self._mirror(request_id, path, body, decision, decide, authorization)
            self.metrics.shadow.labels(outcome=outcome, shadow_version=other).inc()
            if done is not None:
                done(outcome, other)
            log.info(
                "shadow",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "route": path,
                        "shadow_version": other,
                        "outcome": outcome,
                        "latency_ms": elapsed_ms(started),
                        **fields,
                    }
                },
            )
        except Exception:  # a shadow bug must never surface anywhere near a user
            log.exception("shadow_failed", extra={"fields": {"request_id": request_id}})

    async def _mirror(
        self, request_id: str, path: str, body: Any, decision: str, decide: Decide, authorization: str | None
    ) -> tuple[str, str, dict[str, Any]]:
        """(outcome, the other side's version, log fields) of one mirrored request."""
        import aiohttp

        headers = {MIRROR_HEADER: self.version_id, "x-request-id": request_id}
        if authorization:
            headers["authorization"] = authorization
        try:
            async with self._client().post(self.url + path, json=body, headers=headers) as response:
                other = response.headers.get("x-app-version", "unknown")
                status = response.status
                text = await response.text() if status == 200 else ""
        except (aiohttp.ClientError, TimeoutError) as exc:
            return "error", "unknown", {"error_kind": type(exc).__name__}
        if other == self.version_id:
            return "same_version", other, {}
        if status != 200:
            return "error", other, {"error_kind": f"http_{status}"}
        try:
            payload = json.loads(text)
            theirs = decide({k: v for k, v in payload.items() if k not in SERVICE_FIELDS})
        except (ValueError, AttributeError, KeyError, TypeError):
            return "error", other, {"error_kind": "unreadable_reply"}
        return ("agree" if theirs == decision else "disagree"), other, {}

    def _client(self) -> aiohttp.ClientSession:
        # Built on first use: an aiohttp session belongs to the loop that creates it.
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=max(1, self.max_inflight)),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            )
        return self._session

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
