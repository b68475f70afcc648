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
  field), and is what shadow mode compares between two versions.

Every prompt can also be called alone (golden `"prompt": "<id>"`; `POST /v1/run/<id>` when
`serve.prompt_routes` is on). A project names its app in params.yaml (`app.entry: module:attribute`);
without one, the app is its prompts and nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import Completion

# The one render -> call -> parse path (runtime.Caller): what flows, the eval and the service share.
Call = Callable[[str, Mapping[str, Any]], "Answer"]


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
    """What a flow gets besides its request: the prompt caller and the app's data (`App.load`)."""

    call: Call
    data: Any = None


@dataclass(frozen=True)
class Flow:
    """One request -> one reply (a JSON object), through any number of prompt calls."""

    run: Callable[[Context, Mapping[str, Any]], dict[str, Any]]
    # JSON schema of the request body: anything else is a 422 before any model call.
    request: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    description: str = ""
    # What two versions must agree on in shadow mode (default: the whole reply). Free text rarely
    # matches word for word, so a flow usually compares its decisions, not its prose.
    agreement: Callable[[Mapping[str, Any]], Any] | None = None
    # Fields of a reply that are safe to log (ids, labels, sizes: never user text).
    log_fields: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None

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


def run_flow(flow: Flow, call: Call, data: Any, request: Mapping[str, Any]) -> Reply:
    """Run `flow` on `request`, recording every prompt call it makes. Raises the model's error."""
    calls: list[Answer] = []

    def recorded(prompt_id: str, variables: Mapping[str, Any]) -> Answer:
        answer = call(prompt_id, variables)
        calls.append(answer)
        return answer

    body = flow.run(Context(recorded, data), request)
    if not isinstance(body, dict):
        raise TypeError(f"a flow must return a dict (a JSON object), got {type(body).__name__}")
    return Reply(body, tuple(calls))
