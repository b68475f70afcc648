"""The runner with the real client, a real cache on disk and a local server that misbehaves on purpose."""

import json
import time

import pytest

from {{ cookiecutter.package }}.app.client import ChatClient, RetryPolicy
from {{ cookiecutter.package }}.app.contract import App
from {{ cookiecutter.package }}.app.prompts import Prompt
from {{ cookiecutter.package }}.evaluation import runner
from {{ cookiecutter.package }}.evaluation.cache import MAX_SEGMENTS, ResponseCache, cache_key
from {{ cookiecutter.package }}.evaluation.golden import parse_lines
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

# Braces below are template placeholders, not cookiecutter variables.{% raw %}
ECHO = Prompt(
    id="echo",
    description="repeat the text",
    variables=("text",),
    messages=({"role": "system", "content": "Repeat the text."}, {"role": "user", "content": "{text}"}),
    output_schema=None,
    examples=(),
    source="test",
)
# {% endraw %}(end of the template placeholders)


def examples(*rows):
    """(id, text, expected) rows -> validated golden examples for the echo prompt."""
    lines = [json.dumps({"id": i, "prompt": "echo", "input": {"text": t}, "expected": e}) for i, t, e in rows]
    return parse_lines(lines, "golden.jsonl")


def plan(rows, repeats=1):
    return runner.plan(examples(*rows), repeats)


def evaluation(cache, prompt=ECHO):
    """Answer as the service would, through `cache`, keyed as a run on endpoint "fake", model "m"."""
    solver = runner.app_solver({"echo": prompt}, App(name="test"), None)
    return runner.Evaluation(solver, cache, runner.Keying("fake", "m", {"temperature": 0.0}))


def run(calls, chat, cache, **options):
    return runner.run(calls, evaluation(cache), chat, **options)


def key_of(task):
    """The cache key of a task's one call (the echo prompt: messages are the rendered template)."""
    messages = ECHO.render(task.example.input)
    return cache_key(
        endpoint="fake", model="m", messages=messages, sampling={"temperature": 0.0}, schema=None, repeat=task.repeat
    )


def chat_via(server, **retry):
    policy = RetryPolicy(**{"max_attempts": 3, "max_retry_s": 10.0, "backoff_base_s": 0.01, **retry})
    client = ChatClient(server.base_url, "m", "sk-SENTINEL-runner", timeout=(1.0, 0.5), retry=policy)
    return lambda messages, schema: client.chat(messages, schema=schema)


def cached(root):
    """How many answers a fresh reader finds on disk under `root`."""
    return len(ResponseCache(root))


ROWS = [
    *((f"pass-{n}", f"word{n}", f"word{n}") for n in range(4)),
    *((f"fail-{n}", f"other{n}", "something else") for n in range(3)),
    ("retry-429", "!429 late", "late"),
    ("retry-500", "!500once bumpy", "bumpy"),
    ("err-500", "!500 down", "down"),
    ("err-json", "!badjson", "x"),
    ("err-choices", "!nochoices", "x"),
    ("err-hang", "!hang", "x"),
]


def test_counts_of_passes_failures_and_errors_are_exact_and_errors_are_not_cached(tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    calls = plan(ROWS)
    with FakeModel(retry_after="1", hang_s=3.0) as server:
        outcome = run(calls, chat_via(server), cache, concurrency=4, max_error_rate=1.0)
        by_id = {r.id: r for r in outcome.results}
        assert [r.id for r in outcome.results] == [row[0] for row in ROWS]  # plan order, not finish order
        assert sorted(i for i, r in by_id.items() if r.passed is True) == [
            "pass-0", "pass-1", "pass-2", "pass-3", "retry-429", "retry-500",
        ]  # fmt: skip
        assert sorted(i for i, r in by_id.items() if r.passed is False) == ["fail-0", "fail-1", "fail-2"]
        errored = {i: r.error for i, r in by_id.items() if r.passed is None}
        assert sorted(errored) == ["err-500", "err-choices", "err-hang", "err-json"]
        assert errored["err-500"].startswith("http: HTTP 500")
        assert errored["err-json"].startswith("parse:") and errored["err-choices"].startswith("parse:")
        assert errored["err-hang"].startswith("timeout:")
        # Exactly the attempts the policy allows, at the server.
        assert server.calls("!500 down") == 3 and server.calls("!hang") == 3
        assert server.calls("!badjson") == 1 and server.calls("!429") == 2 and server.calls("!500once") == 2
        assert outcome.calls_made == len(ROWS) and not outcome.aborted
        # Only the 9 answered calls are cached; no error is.
        assert cached(tmp_path / "cache") == 9
        for call in calls:
            assert (cache.get(key_of(call)) is None) == (by_id[call.example.id].passed is None)

        # A re-run retries exactly the errors and serves everything else from the cache.
        server.reset()
        again = run(calls, chat_via(server), cache, concurrency=4, max_error_rate=1.0)
        assert again.calls_made == 4
        assert server.calls() == 3 + 1 + 1 + 3  # err-500, err-json, err-choices, err-hang (with retries)
        assert [r.passed for r in again.results] == [r.passed for r in outcome.results]
        assert sum(r.cached for r in again.results) == 9


def test_the_run_aborts_when_the_error_rate_passes_the_limit(tmp_path):
    rows = [(f"e{n}", f"!500 n{n}", "x") for n in range(20)]
    with FakeModel() as server:
        outcome = run(
            plan(rows), chat_via(server, max_attempts=1), ResponseCache(tmp_path), concurrency=2, max_error_rate=0.2
        )
        assert outcome.aborted and "eval.max_error_rate=0.2" in outcome.aborted
        # 20 * 0.2 = 4 errors are allowed; the 5th aborts. The one other call in flight still finishes.
        assert 5 <= outcome.calls_made <= 5 + 1
        # ...and is counted in the message too: it is worded from the results once the run is over.
        errors = sum(r.error is not None for r in outcome.results)
        assert f"{len(outcome.results)} of 20 calls finished: 0 passed, 0 failed, {errors} errors" in outcome.aborted
        assert server.calls() == outcome.calls_made
    assert cached(tmp_path) == 0


def test_keyboard_interrupt_keeps_what_finished_and_the_next_run_makes_only_the_rest(tmp_path):
    rows = [(f"r{n}", f"text {n}", f"text {n}") for n in range(12)]
    calls = plan(rows)
    cache = ResponseCache(tmp_path / "cache")
    seen_results = []

    def interrupt_after_three(result):
        seen_results.append(result)
        if len(seen_results) == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread

    with FakeModel(latency_s=0.05) as server:
        outcome = run(
            calls, chat_via(server), cache, concurrency=2, max_error_rate=1.0, on_result=interrupt_after_three
        )
        assert outcome.interrupted and len(outcome.results) == 3
        assert all(r.passed for r in outcome.results)
        time.sleep(0.3)  # let calls already in flight land (they are cached too: they succeeded)
        kept = cached(tmp_path / "cache")
        assert 3 <= kept < len(rows)
        server.reset()
        resumed = run(calls, chat_via(server), cache, concurrency=2, max_error_rate=1.0)
        assert server.calls() == len(rows) - kept  # only the calls that never finished
        assert resumed.calls_made == len(rows) - kept
        assert len(resumed.results) == len(rows) and all(r.passed for r in resumed.results)


def test_repeats_give_per_example_pass_rates_and_a_flaky_flag(tmp_path):
    from {{ cookiecutter.package }}.evaluation.metrics import compute, per_example

    flips = iter(["heads", "tails", "heads"])

    def coin_or_echo(request):
        return next(flips) if request.content == "coin" else request.content

    rows = [("steady", "same", "same"), ("coin", "coin", "heads")]
    calls = plan(rows, repeats=3)
    assert len({key_of(c) for c in calls}) == 6  # the repeat index is part of the cache key
    with FakeModel(answer=coin_or_echo) as server:
        outcome = run(calls, chat_via(server), ResponseCache(tmp_path), concurrency=3, max_error_rate=0.0)
        assert server.calls() == 6
    summary = per_example(outcome.results)
    assert summary["steady"] == {"runs": 3, "answered": 3, "pass_rate": 1.0, "flaky": False}
    assert summary["coin"]["pass_rate"] == pytest.approx(2 / 3) and summary["coin"]["flaky"] is True
    metrics = compute(outcome.results, {})
    assert metrics["flaky_examples"] == 1 and metrics["pass_rate"] == pytest.approx(5 / 6)


def test_the_cache_key_covers_endpoint_model_messages_sampling_and_repeat():
    base = dict(endpoint="e", model="m", messages=[{"role": "user", "content": "hi"}], sampling={"t": 0}, repeat=0)
    key = cache_key(**base)
    assert key == cache_key(**dict(reversed(list(base.items()))))  # canonical: order does not matter
    for change in (
        {"endpoint": "other"},
        {"model": "m2"},
        {"messages": [{"role": "user", "content": "hi!"}]},
        {"sampling": {"t": 0.1}},
        {"repeat": 1},
    ):
        assert cache_key(**{**base, **change}) != key, change


def replayed(calls, cache):
    """Ids of the tasks the cache answers in full (no model needed)."""
    done, _ = runner.replay(calls, evaluation(cache))
    return [r.id for r in done]


def test_a_torn_cache_entry_is_a_miss_not_a_crash(tmp_path):
    calls = plan([("a", "one", "one")])
    cache = ResponseCache(tmp_path)
    cache.put(key_of(calls[0]), {"text": "one"})  # an entry without the other fields
    assert replayed(calls, cache) == []
    cache.close()
    segment = next(tmp_path.glob("*.jsonl"))
    whole = {"text": "one", "tokens_in": 1, "tokens_out": 1, "latency_ms": 1.0}
    line = json.dumps({"key": key_of(calls[0]), "value": whole})
    segment.write_text(line[:-5])  # a write torn by a crash
    assert replayed(calls, ResponseCache(tmp_path)) == []
    segment.write_text(f"{line[:-5]}\n{line}\n")  # torn line, then the call made again
    assert replayed(calls, ResponseCache(tmp_path)) == ["a"]


def test_segments_from_many_runs_are_merged_and_the_newest_answer_wins(tmp_path):
    for run in range(MAX_SEGMENTS + 3):
        with ResponseCache(tmp_path) as cache:  # each run appends to a segment of its own
            cache.put("same", {"text": f"run {run}"})
            cache.put(f"only-{run}", {"text": "x"})
    assert len(list(tmp_path.glob("*.jsonl"))) == MAX_SEGMENTS + 3
    reader = ResponseCache(tmp_path)
    assert reader.get("same") == {"text": f"run {MAX_SEGMENTS + 2}"}
    assert len(reader) == MAX_SEGMENTS + 4
    assert len(list(tmp_path.glob("*.jsonl"))) == 1  # merged by that reader
    again = ResponseCache(tmp_path)
    assert again.get("same") == {"text": f"run {MAX_SEGMENTS + 2}"} and len(again) == MAX_SEGMENTS + 4


def test_a_flow_example_is_scored_on_its_reply_and_cached_call_by_call(tmp_path, toy_project):
    from {{ cookiecutter.package }}.app.prompts import load_all
    from {{ cookiecutter.package }}.testing import toy

    def flow_evaluation():
        solver = runner.app_solver(load_all(toy_project / "prompts"), toy.APP, toy.APP.load(toy_project))
        return runner.Evaluation(solver, ResponseCache(tmp_path / "cache"), runner.Keying("fake", "m", {}))

    lines = [
        {"id": "f1", "flow": "reply", "input": {"text": "good day"}, "expected": {"label": "good"}},
        {"id": "f2", "flow": "reply", "input": {"text": "awful"}, "expected": {"label": "good"}},
        {"id": "f3", "flow": "reply", "input": {"text": "good"}, "contains": ["Hello good"], "tags": ["e2e"]},
    ]
    tasks = runner.plan(parse_lines([json.dumps(line) for line in lines], "golden.jsonl"), 1)
    with FakeModel(toy.answers) as server:
        outcome = runner.run(tasks, flow_evaluation(), chat_via(server), concurrency=2, max_error_rate=0.0)
        assert [r.passed for r in outcome.results] == [True, False, True]
        assert outcome.results[1].scores["exact_match"]["detail"] == "mismatch: label"
        assert {r.target for r in outcome.results} == {"flow:reply"} and server.calls() == 6  # 2 calls a flow
        assert json.loads(outcome.results[0].output) == {"label": "good", "echo": "Hello good day"}
        assert outcome.results[0].tokens_in > 0 and outcome.results[0].latency_ms > 0

        server.reset()
        again = runner.run(tasks, flow_evaluation(), chat_via(server), concurrency=2, max_error_rate=0.0)
        assert server.calls() == 0 and all(r.cached for r in again.results)

        echo = toy_project / "prompts" / "echo.yaml"
        echo.write_text(echo.read_text().replace("Repeat the text.", "Repeat the text exactly."))
        after = runner.run(tasks, flow_evaluation(), chat_via(server), concurrency=2, max_error_rate=0.0)
        assert server.calls() == 3 and all("Repeat the text exactly." in s.system for s in server.seen)
        assert [r.passed for r in after.results] == [True, False, True] and not any(r.cached for r in after.results)
