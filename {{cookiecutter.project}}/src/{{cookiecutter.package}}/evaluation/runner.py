"""Run the golden set through the model: plan the calls, serve what the cache has, call the rest
concurrently, score every answer.

A *call* is one (example, repeat). Its outcome is a `Result`: the scores when the model answered,
or the error when it could not (transport, HTTP, unparsable body) - errors are not failures and are
counted apart. The run stops starting new calls as soon as the error rate is certain to exceed
`max_error_rate`, and on Ctrl-C it returns what finished (the cache already holds every success,
and never an error, so the next run makes only the calls that are still missing).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ..client import Completion, ModelError
from ..prompts import Prompt
from . import scorers
from .cache import ResponseCache, cache_key
from .golden import Example

Chat = Callable[[Sequence[Mapping[str, str]], Mapping[str, Any] | None], Completion]


@dataclass(frozen=True)
class Call:
    example: Example
    repeat: int
    prompt: Prompt
    messages: list[dict[str, str]]
    key: str


@dataclass
class Result:
    id: str
    repeat: int
    prompt: str
    prompt_version: str
    output: str | None
    passed: bool | None  # None when the call errored
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency_ms: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    error: str | None = None
    cached: bool = False
    tags: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # A shallow dict, not dataclasses.asdict: asdict deep-copies every score (~1 ms a result).
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Outcome:
    results: list[Result]
    planned: int
    calls_made: int = 0
    aborted: str | None = None  # why the run stopped early, if it did
    interrupted: bool = False


def plan(
    examples: Sequence[Example],
    prompts: Mapping[str, Prompt],
    *,
    endpoint: str,
    model: str,
    sampling: Mapping[str, Any],
    repeats: int,
) -> list[Call]:
    calls = []
    for example in examples:
        prompt = prompts[example.prompt]
        messages = prompt.render(example.input)
        for repeat in range(repeats):
            key = cache_key(
                endpoint=endpoint,
                model=model,
                messages=messages,
                sampling=dict(sampling),
                schema=prompt.output_schema,
                repeat=repeat,
            )
            calls.append(Call(example, repeat, prompt, messages, key))
    return calls


def judge(call: Call, completion: Completion | None, error: ModelError | None, cached: bool) -> Result:
    base = dict(
        id=call.example.id,
        repeat=call.repeat,
        prompt=call.prompt.id,
        prompt_version=call.prompt.version,
        tags=list(call.example.tags),
        cached=cached,
    )
    if completion is None:
        return Result(**base, output=None, passed=None, error=str(error))
    parsed = scorers.parse_json(completion.text) if call.prompt.output_schema else None
    sample = scorers.Sample(
        expectations=call.example.expectations,
        input=call.example.input,
        output=completion.text,
        parsed=parsed,
        output_schema=call.prompt.output_schema,
        latency_ms=completion.latency_ms,
    )
    names = scorers.applicable(call.example.expectations, call.prompt.output_schema)
    scores = scorers.score_all(sample, names)
    return Result(
        **base,
        output=completion.text,
        passed=all(s.passed for s in scores.values()),
        scores={n: {"passed": s.passed, "value": s.value, "detail": s.detail} for n, s in scores.items()},
        latency_ms=round(completion.latency_ms, 3),
        tokens_in=completion.tokens_in,
        tokens_out=completion.tokens_out,
    )


class Progress:
    """A one-line progress bar on a terminal; silent in CI and when output is piped."""

    def __init__(self, total: int, stream=sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty() and not os.environ.get("CI")
        self.done = self.errors = 0
        self._last = 0.0

    def update(self, result: Result) -> None:
        self.done += 1
        self.errors += result.error is not None
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            width = 30
            filled = int(width * self.done / max(1, self.total))
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} errors {self.errors}"
            )
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def lookup(calls: Sequence[Call], cache: ResponseCache) -> dict[str, Completion]:
    """The cached completion of every call the cache can answer (a torn or foreign entry is a miss)."""
    hits = {}
    for call in calls:
        entry = cache.get(call.key)
        if entry is None:
            continue
        try:
            hits[call.key] = Completion(
                text=str(entry["text"]),
                tokens_in=int(entry["tokens_in"]),
                tokens_out=int(entry["tokens_out"]),
                latency_ms=float(entry["latency_ms"]),
                attempts=0,
            )
        except (KeyError, TypeError, ValueError):
            continue
    return hits


def run(
    calls: Sequence[Call],
    chat: Chat,
    cache: ResponseCache,
    *,
    concurrency: int,
    max_error_rate: float,
    on_result: Callable[[Result], None] | None = None,
    hits: Mapping[str, Completion] | None = None,
) -> Outcome:
    """Every call judged: cached ones first, the rest on `concurrency` worker threads.

    Workers are daemon threads fed from a queue, so Ctrl-C returns at once with what finished
    instead of waiting for requests in flight (a hung endpoint would otherwise hold the process
    for a whole read timeout). Every success is in the cache before it is reported.
    """
    outcome = Outcome(results=[], planned=len(calls))
    progress = Progress(len(calls))
    hits = lookup(calls, cache) if hits is None else hits

    def emit(result: Result) -> None:
        outcome.results.append(result)
        progress.update(result)
        if on_result:
            on_result(result)

    todo = [call for call in calls if call.key not in hits]
    for call in calls:
        if call.key in hits:
            emit(judge(call, hits[call.key], None, cached=True))

    stop = threading.Event()
    # The run is lost once errors exceed this many, whatever the remaining calls do. Workers count
    # errors themselves, so no worker starts another call after the one that crossed the line.
    error_budget = max_error_rate * len(calls)
    errors = 0
    lock = threading.Lock()
    work: queue.SimpleQueue[Call] = queue.SimpleQueue()
    finished: queue.SimpleQueue[Result | BaseException | None] = queue.SimpleQueue()
    for call in todo:
        work.put(call)

    def worker() -> None:
        nonlocal errors
        while True:
            try:
                call = work.get_nowait()
            except queue.Empty:
                return
            if stop.is_set():
                finished.put(None)  # skipped: the run was aborted or interrupted
                continue
            try:
                completion = chat(call.messages, call.prompt.output_schema)
            except ModelError as exc:
                with lock:
                    errors += 1
                    if errors > error_budget and not stop.is_set():
                        stop.set()
                        outcome.aborted = (
                            f"error rate above eval.max_error_rate={max_error_rate}: "
                            f"{errors} of {len(calls)} calls failed (last: {exc})"
                        )
                finished.put(judge(call, None, exc, cached=False))
                continue
            except BaseException as exc:  # not a model error: the main thread re-raises it
                finished.put(exc)
                continue
            try:
                answer = {k: getattr(completion, k) for k in ("text", "tokens_in", "tokens_out", "latency_ms")}
                cache.put(call.key, answer)
                finished.put(judge(call, completion, None, cached=False))
            except BaseException as exc:  # a worker that dies silently would leave the main thread waiting
                finished.put(exc)

    for i in range(min(max(1, concurrency), len(todo))):
        threading.Thread(target=worker, name=f"eval-{i}", daemon=True).start()

    try:
        for _ in range(len(todo)):
            item = _next(finished)
            if item is None:
                continue
            if isinstance(item, BaseException):
                stop.set()
                raise item
            outcome.calls_made += 1
            emit(item)
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        stop.set()
        progress.close()
    order = {(c.example.id, c.repeat): i for i, c in enumerate(calls)}
    outcome.results.sort(key=lambda r: order[(r.id, r.repeat)])
    return outcome


def _next(finished: queue.SimpleQueue) -> Any:
    # A bounded wait in a loop keeps the main thread responsive to Ctrl-C on every platform.
    while True:
        try:
            return finished.get(timeout=0.2)
        except queue.Empty:
            continue
