"""Run the golden set through the app: plan the tasks, replay what the cache holds, run the rest
concurrently, score every answer.

A *task* is one (example, repeat). The *solver* answers it the way the service would: one prompt
call for a prompt example, the whole flow for a flow example, always through the one
render/call/parse path (`app.runtime.Caller`). Every model call goes through the response cache
(`CachedChat`): a re-run with nothing changed makes no model call, and a prompt change re-asks only
what it changed. The outcome of a task is a `Result`: the scores when the model answered, or the
error when it could not (transport, HTTP, unparsable body) - errors are not failures and are
counted apart. The run stops starting new tasks as soon as the error rate is certain to exceed
`max_error_rate`, or at once when the endpoint refuses the credentials (HTTP 401/403: no later call
could succeed), and on Ctrl-C it returns what finished (the cache already holds every success, and
never an error, so the next run makes only the calls that are still missing).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..app.client import AuthenticationError, Completion, ModelError
from ..app.contract import App, run_flow
from ..app.prompts import Prompt
from ..app.runtime import Caller, Chat
from ..judge.rubric import Assessment, Judge, is_verdict
from . import scorers
from .cache import ResponseCache, cache_key
from .golden import Example
from .results import Result


@dataclass(frozen=True)
class Task:
    example: Example
    repeat: int


@dataclass(frozen=True)
class Solution:
    """A task answered: the raw output, its parsed form, and the model calls that made it."""

    output: str
    parsed: Any
    completions: tuple[Completion, ...]
    output_schema: Mapping[str, Any] | None = None  # the prompt's, for the JSON scorers; None for a flow


Solver = Callable[[Task, Chat], Solution]


@dataclass(frozen=True)
class Keying:
    """What, besides the messages and the repeat, decides an answer: part of every cache key."""

    endpoint: str
    model: str
    sampling: Mapping[str, Any]


class CacheMiss(Exception):
    """A call the cache cannot answer, in a replay that must not reach the model."""


class CachedChat:
    """A task's chat through the response cache. `chat=None` replays only: a miss raises CacheMiss.
    `usable`: which answers count as answers (the judge's: a verdict); any other is an error, so it
    is neither cached nor replayed, like every error."""

    def __init__(
        self,
        cache: ResponseCache,
        keying: Keying,
        repeat: int,
        chat: Chat | None = None,
        usable: Callable[[str], bool] | None = None,
    ) -> None:
        self.cache = cache
        self.keying = keying
        self.repeat = repeat
        self.chat = chat
        self.usable = usable
        self.made = 0  # calls that reached the model

    def __call__(self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any] | None) -> Completion:
        key = cache_key(
            endpoint=self.keying.endpoint,
            model=self.keying.model,
            messages=[dict(m) for m in messages],
            sampling=dict(self.keying.sampling),
            schema=schema,
            repeat=self.repeat,
        )
        hit = _completion(self.cache.get(key))
        if hit is not None and (self.usable is None or self.usable(hit.text)):
            return hit
        if self.chat is None:
            raise CacheMiss(key)
        completion = self.chat(messages, schema)
        self.made += 1
        if self.usable is not None and not self.usable(completion.text):
            return completion
        entry = {
            k: getattr(completion, k) for k in ("text", "tokens_in", "tokens_out", "latency_ms", "model", "fingerprint")
        }
        self.cache.put(key, entry)
        return completion


def _completion(entry: Mapping[str, Any] | None) -> Completion | None:
    if entry is None:
        return None
    try:
        return Completion(
            text=str(entry["text"]),
            tokens_in=int(entry["tokens_in"]),
            tokens_out=int(entry["tokens_out"]),
            latency_ms=float(entry["latency_ms"]),
            attempts=0,
            model=str(entry.get("model", "")),  # entries written before providers were recorded: unknown
            fingerprint=str(entry.get("fingerprint", "")),
        )
    except (KeyError, TypeError, ValueError):
        return None  # a torn or foreign entry is a miss


def plan(examples: Sequence[Example], repeats: int) -> list[Task]:
    return [Task(example, repeat) for example in examples for repeat in range(repeats)]


def app_solver(prompts: Mapping[str, Prompt], app: App, data: Any) -> Solver:
    """The solver that answers as the service does: a prompt alone, or a flow of `app`."""

    def solve(task: Task, chat: Chat) -> Solution:
        call = Caller(prompts, chat)
        example = task.example
        if example.flow is not None:
            reply = run_flow(app.flows[example.flow], call, data, example.input)
            output = json.dumps(reply.body, ensure_ascii=False, sort_keys=True)
            return Solution(output, reply.body, tuple(c.completion for c in reply.calls))
        answer = call(str(example.prompt), example.input)
        return Solution(answer.text, answer.data, (answer.completion,), prompts[answer.prompt].output_schema)

    return solve


def target_versions(prompts: Mapping[str, Prompt], app: App) -> dict[str, str]:
    """target -> the version its results carry: a prompt's content hash; for a flow, one hash over
    the app's prompts (the flow may call any of them)."""
    versions = {pid: p.version for pid, p in prompts.items()}
    used = {pid: versions[pid] for pid in (app.prompts or versions) if pid in versions}
    canonical = json.dumps(sorted(used.items()), separators=(",", ":"))
    flows = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return {**versions, **{f"flow:{name}": flows for name in app.flows}}


def judge(
    task: Task,
    version: str,
    solution: Solution | None,
    error: ModelError | None,
    cached: bool,
    assessment: Assessment | None = None,
) -> Result:
    """The task's Result: its scores, and the LLM judge's verdict (`assessment`) when it was judged,
    which counts towards `passed` only for a calibrated rubric."""
    example = task.example
    base: dict[str, Any] = dict(
        id=example.id, repeat=task.repeat, target=example.target, version=version, tags=list(example.tags),
        cached=cached,
    )  # fmt: skip
    if solution is None:
        return Result(**base, output=None, passed=None, error=str(error))
    latency_ms = sum(c.latency_ms for c in solution.completions)
    sample = scorers.Sample(
        expectations=example.expectations,
        input=example.input,
        output=solution.output,
        parsed=solution.parsed,
        output_schema=solution.output_schema,
        latency_ms=latency_ms,
    )
    names = scorers.applicable(example.expectations, solution.output_schema)
    scores = scorers.score_all(sample, names)
    passed = all(s.passed for s in scores.values())
    shown = {n: {"passed": s.passed, "value": s.value, "detail": s.detail} for n, s in scores.items()}
    verdict = assessment.verdict if assessment is not None else None
    if assessment is not None and verdict is not None:
        shown["judge"] = {"passed": verdict.passed, "value": verdict.score, "detail": verdict.reason}
        passed = passed and (verdict.passed or not assessment.gating)
    return Result(
        **base,
        output=solution.output,
        passed=passed,
        scores=shown,
        latency_ms=round(latency_ms, 3),
        tokens_in=sum(c.tokens_in for c in solution.completions),
        tokens_out=sum(c.tokens_out for c in solution.completions),
        provider=providers(solution.completions),
        judge=assessment.record() if assessment is not None else None,
    )


def providers(completions: Sequence[Completion]) -> str:
    """Who answered a task's calls (normally one backend): distinct `Completion.provider`s, sorted."""
    return "; ".join(sorted({c.provider for c in completions if c.provider}))


@dataclass
class Outcome:
    results: list[Result]
    planned: int
    calls_made: int = 0  # tasks that reached the model at least once
    aborted: str | None = None  # why the run stopped early (error budget, refused key), if it did
    interrupted: bool = False
    errors: int = 0  # tasks that ended in an error

    @property
    def partial(self) -> bool:
        """Stopped before its end (aborted or interrupted): its numbers are not a result."""
        return self.interrupted or self.aborted is not None

    def counts(self) -> str:
        """How the calls ended, in the words every line about this run uses."""
        passed = sum(r.passed is True for r in self.results)
        failed = sum(r.passed is False for r in self.results)
        errors = sum(r.error is not None for r in self.results)
        return (
            f"{len(self.results)} of {self.planned} calls finished: {passed} passed, {failed} failed, {errors} errors"
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


@dataclass
class Evaluation:
    """What a run needs besides its tasks: how to answer, where answers are cached, how they are labelled."""

    solver: Solver
    cache: ResponseCache
    keying: Keying
    versions: Mapping[str, str] = field(default_factory=dict)  # target -> version (results carry it)
    judge: Judge | None = None  # the LLM judge, when params.yaml configures one
    judge_keying: Keying | None = None  # its calls' cache keys (its own endpoint and model)

    def version(self, task: Task) -> str:
        return self.versions.get(task.example.target, "")

    def assess(self, task: Task, solution: Solution, chat: CachedChat | None) -> Assessment | None:
        """The judge's verdict on a task's answer, through the cache (`chat`, keyed as the judge);
        None when there is no judge or no rubric for the example."""
        rubric = self.judge.rubric(task.example) if self.judge is not None else None
        if self.judge is None or rubric is None or chat is None:
            return None
        return self.judge.assess(chat, rubric, task.example.input, solution.output)

    def judge_chat(self, chat: Chat | None) -> CachedChat | None:
        # One verdict per distinct answer: repeats that answer alike share it (the key holds the answer).
        if self.judge_keying is None:
            return None
        return CachedChat(self.cache, self.judge_keying, 0, chat, usable=is_verdict)


def replay(tasks: Sequence[Task], evaluation: Evaluation) -> tuple[list[Result], list[Task]]:
    """Every task the cache answers in full, judged (no model needed); and the tasks left to run."""
    done, todo = [], []
    for task in tasks:
        try:
            solution = evaluation.solver(task, CachedChat(evaluation.cache, evaluation.keying, task.repeat))
            assessment = evaluation.assess(task, solution, evaluation.judge_chat(None))
        except CacheMiss:
            todo.append(task)
            continue
        done.append(judge(task, evaluation.version(task), solution, None, cached=True, assessment=assessment))
    return done, todo


def run(
    tasks: Sequence[Task],
    evaluation: Evaluation,
    chat: Chat | None,
    *,
    concurrency: int,
    max_error_rate: float,
    on_result: Callable[[Result], None] | None = None,
    replayed: tuple[list[Result], list[Task]] | None = None,
    whole: int | None = None,
    judge_chat: Chat | None = None,
) -> Outcome:
    """Every task judged: those the cache answers first, the rest on `concurrency` worker threads
    calling `chat` (None when `replayed`, the caller's own `replay`, left nothing to run).

    Workers are daemon threads fed from a queue, so Ctrl-C returns at once with what finished
    instead of waiting for requests in flight (a hung endpoint would otherwise hold the process
    for a whole read timeout). Every success is in the cache before it is reported. `whole`: the
    tasks of the whole evaluation when these are one shard of it - the error budget is a share of
    those (a shard stops once its errors alone sink the whole; the merge judges the rest).
    `judge_chat`: the LLM judge's endpoint, when the evaluation has a judge. Its errors are the
    verdict's, never the answer's: they do not count towards the error budget.
    """
    outcome = Outcome(results=[], planned=len(tasks))
    progress = Progress(len(tasks))

    def emit(result: Result) -> None:
        outcome.results.append(result)
        progress.update(result)
        if on_result:
            on_result(result)

    done, todo = replayed if replayed is not None else replay(tasks, evaluation)
    for result in done:
        emit(result)
    if todo and chat is None:
        raise ValueError("run: tasks are left to run but no chat was given")

    stop = threading.Event()
    # The run is lost once errors exceed this many, whatever the remaining tasks do. Workers count
    # errors themselves, so no worker starts another task after the one that crossed the line.
    planned = whole or len(tasks)
    error_budget = max_error_rate * planned
    lock = threading.Lock()
    why: dict[str, ModelError] = {}  # "refused" / "budget": the error that stopped the run
    work: queue.SimpleQueue[Task] = queue.SimpleQueue()
    finished: queue.SimpleQueue[tuple[Result, int] | BaseException | None] = queue.SimpleQueue()
    for task in todo:
        work.put(task)

    def worker() -> None:
        while True:
            try:
                task = work.get_nowait()
            except queue.Empty:
                return
            if stop.is_set():
                finished.put(None)  # skipped: the run was aborted or interrupted
                continue
            cached_chat = CachedChat(evaluation.cache, evaluation.keying, task.repeat, chat)
            try:
                solution = evaluation.solver(task, cached_chat)
            except ModelError as exc:
                with lock:
                    outcome.errors += 1
                    if isinstance(exc, AuthenticationError):
                        why.setdefault("refused", exc)
                        stop.set()
                    elif outcome.errors > error_budget and not stop.is_set():
                        why["budget"] = exc
                        stop.set()
                finished.put((judge(task, evaluation.version(task), None, exc, cached=False), 1))
                continue
            except BaseException as exc:  # not a model error: the main thread re-raises it
                finished.put(exc)
                continue
            try:
                judge_chat_ = evaluation.judge_chat(judge_chat)
                assessment = evaluation.assess(task, solution, judge_chat_)
                made = cached_chat.made + (judge_chat_.made if judge_chat_ is not None else 0)
                result = judge(task, evaluation.version(task), solution, None, made == 0, assessment)
                finished.put((result, int(made > 0)))
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
            result, made = item
            outcome.calls_made += made
            emit(result)
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        stop.set()
        progress.close()
    order = {(t.example.id, t.repeat): i for i, t in enumerate(tasks)}
    outcome.results.sort(key=lambda r: order[(r.id, r.repeat)])
    # Worded once the run is over, from the results themselves: calls in flight when the line was
    # crossed finish (and may fail) after it, and every line about the run must give the same counts.
    if "refused" in why:
        outcome.aborted = (
            f"the model endpoint refused the credentials ({why['refused']}): check the key in the environment "
            f"variable named by model.api_key_env; stopped, {outcome.counts()}"
        )
    elif "budget" in why:
        outcome.aborted = (
            f"error rate above eval.max_error_rate={max_error_rate} (at most {int(error_budget)} of "
            f"{planned} calls may fail): stopped, {outcome.counts()} (last error: {why['budget']})"
        )
    return outcome


def _next(finished: queue.SimpleQueue) -> Any:
    # A bounded wait in a loop keeps the main thread responsive to Ctrl-C on every platform.
    while True:
        try:
            return finished.get(timeout=0.2)
        except queue.Empty:
            continue
