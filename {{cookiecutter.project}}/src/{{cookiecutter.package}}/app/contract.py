"""The app contract: everything the framework knows of an app, and nothing else.

An app is its prompts (`prompts/*.yaml`) and, optionally, *flows*: functions that answer one request
with one or more prompt calls (classify, then extract, then answer...). The pipeline, the registry,
the service, shadow mode and the canary handle any app through this contract:

- `App.prompts`: the prompt ids the app calls; a version without one of them is not servable.
- `App.files`: the app's own data files (paths relative to the project root) that belong to a
  version: served with the prompts, logged to the registry, part of the version id.
- `App.load(root)`: read and check those files from a version directory (a `UserError` naming the
  file when they are bad). What it returns reaches every flow as `ctx.data`.
- `App.flows`: name -> `Flow`. Each is served at `POST /v1/<name>`, can be the target of golden
  examples (`"flow": "<name>"`: a request in, the reply the service would send, scored field by
  field), is what shadow mode compares between two versions, and (with a `category`) what
  `drift` watches in production.

Every prompt can also be called alone (golden `"prompt": "<id>"`; `POST /v1/run/<id>` when
`serve.prompt_routes` is on). A project names its app in params.yaml (`app.entry: module:attribute`);
without one, the app is its prompts and nothing more.

Flows are `async def` and await their calls:

    async def reply(ctx: Context, request: Mapping[str, Any]) -> dict[str, Any]:
        label = (await ctx.call("label", {"text": request["text"]})).data
        ...

Why async: the service waits on the model for seconds per call, and a thread per waiting request
caps a pod at its pool (40 threads: ~13-40 answers/s with a real model). A coroutine per request
costs kilobytes, so one pod holds thousands of calls in flight, and health probes never queue behind
them. The price is one keyword: `await` before `ctx.call`. The same flow runs everywhere:

- the service awaits it on its event loop (`arun_flow`, an aiohttp client: app/async_client.py);
- the eval and the registered pyfunc model run it from their worker threads (`run_flow`): there
  `ctx.call` makes the blocking call of the eval's client (cached, retried, counted as before) inside
  the coroutine, so calls run one after another in the order the flow makes them, each worker keeps
  one call in flight as it always did, and the answers (and cache keys) do not depend on timing.
  A flow may still gather calls (`asyncio.gather`) for speed in the service: the eval then makes the
  same calls one by one, with the same results.

A flow must not block its event loop: no blocking I/O, and heavy CPU work in `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import Completion

# The one render -> call -> parse path (runtime.Caller / AsyncCaller): what flows, the eval and the
# service share. `ctx.call` is the awaitable form; the eval's threads hold the blocking one.
Call = Callable[[str, Mapping[str, Any]], Awaitable["Answer"]]
BlockingCall = Callable[[str, Mapping[str, Any]], "Answer"]


@dataclass(frozen=True)
class Answer:
    """One prompt called once: the raw text, its parsed JSON (prompts with an output schema)."""

    prompt: str
    prompt_version: str
    text: str
    data: Any  # the parsed JSON when the prompt has an output schema and the text parses, else None
    completion: Completion

    @property
    def output(self) -> Any:
        """What a caller of the prompt gets: the parsed JSON, or the text of a free-text prompt."""
        return self.data if self.data is not None else self.text


@dataclass(frozen=True)
class Context:
    """What a flow gets besides its request: the prompt caller (`await ctx.call(prompt_id, variables)`)
    and the app's data (`App.load`)."""

    call: Call
    data: Any = None


@dataclass(frozen=True)
class Flow:
    """One request -> one reply (a JSON object), through any number of prompt calls."""

    run: Callable[[Context, Mapping[str, Any]], Coroutine[Any, Any, dict[str, Any]]]  # an `async def`
    # JSON schema of the request body: anything else is a 422 before any model call.
    request: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    description: str = ""
    # What two versions must agree on in shadow mode (default: the whole reply). Free text rarely
    # matches word for word, so a flow usually compares its decisions, not its prose.
    agreement: Callable[[Mapping[str, Any]], Any] | None = None
    # Fields of a reply that are safe to log (ids, labels, sizes: never user text).
    log_fields: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    # The reply's category (a topic, a sentiment, a queue): `drift` watches the mix of categories in
    # production against the golden set's. None: the flow's replies have no category.
    category: Callable[[Mapping[str, Any]], str | None] | None = None
    # The category that means "none of the others" (a fallback queue, `unknown`): `drift` watches
    # its share, which rises when users ask for what the app was not built for.
    fallback: str | None = None

    def decision(self, reply: Mapping[str, Any]) -> str:
        """The agreement value in canonical JSON (comparable across processes)."""
        return canonical(self.agreement(reply) if self.agreement else reply)


def canonical(value: Any) -> str:
    """One JSON text per value, whatever the key order: what shadow mode compares."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def no_data(root: Path) -> None:
    """`App.load` of an app without data files."""
    return None


@dataclass(frozen=True)
class App:
    name: str
    prompts: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    load: Callable[[Path], Any] = no_data
    flows: Mapping[str, Flow] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A flow's reply and the prompt calls that made it (for tokens, model time and traces)."""

    body: dict[str, Any]
    calls: tuple[Answer, ...] = ()

    @property
    def tokens_in(self) -> int:
        return sum(c.completion.tokens_in for c in self.calls)

    @property
    def tokens_out(self) -> int:
        return sum(c.completion.tokens_out for c in self.calls)

    @property
    def model_ms(self) -> float:
        """Time spent waiting on the model (successful attempts): the floor of the request's latency."""
        return sum(c.completion.latency_ms for c in self.calls)


def is_async(run: Callable[..., Any]) -> bool:
    """Whether a flow's `run` is an `async def` (or a functools.partial of one)."""
    return inspect.iscoroutinefunction(run)


async def arun_flow(flow: Flow, call: Call, data: Any, request: Mapping[str, Any]) -> Reply:
    """Run `flow` on `request`, recording every prompt call it makes. Raises the model's error."""
    calls: list[Answer] = []

    async def recorded(prompt_id: str, variables: Mapping[str, Any]) -> Answer:
        answer = await call(prompt_id, variables)
        calls.append(answer)
        return answer

    if not is_async(flow.run):
        raise TypeError("a flow must be an `async def` that awaits ctx.call(...) (see app/contract.py)")
    body = await flow.run(Context(recorded, data), request)
    if not isinstance(body, dict):
        raise TypeError(f"a flow must return a dict (a JSON object), got {type(body).__name__}")
    return Reply(body, tuple(calls))


def run_flow(flow: Flow, call: BlockingCall, data: Any, request: Mapping[str, Any]) -> Reply:
    """`arun_flow` from a thread, with a blocking `call` (the eval's workers, the pyfunc model)."""

    async def blocking(prompt_id: str, variables: Mapping[str, Any]) -> Answer:
        return call(prompt_id, variables)

    return _run(arun_flow(flow, blocking, data, request))


def _run(coroutine: Coroutine[Any, Any, Reply]) -> Reply:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # Called from a thread that runs an event loop already (a notebook calling the pyfunc model):
    # asyncio.run cannot nest, so the flow gets a loop on a thread of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
