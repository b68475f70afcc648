import json
from pathlib import Path

import pytest

from {{ cookiecutter.package }}.app.loader import load_app
from {{ cookiecutter.package }}.app.prompts import load_all
from {{ cookiecutter.package }}.evaluation.golden import GoldenSetError, check_targets, load, parse_lines
from {{ cookiecutter.package }}.settings import load as load_settings
from {{ cookiecutter.package }}.stages.preprocess import main as preprocess_main
from {{ cookiecutter.package }}.testing import toy


def test_the_shipped_golden_set_is_valid_and_matches_the_prompts_and_flows():
    examples = load(Path("eval/golden.jsonl"))
    app = load_app(load_settings().app.entry)
    check_targets(examples, load_all(), app.flows, "eval/golden.jsonl")
    assert all(e.tags for e in examples), "every example is tagged (per-tag pass rates)"


def test_every_bad_line_is_reported_with_its_number_and_field():
    lines = [
        json.dumps({"id": "a", "prompt": "p", "input": {"x": "1"}}),
        "{not json",
        json.dumps({"id": "b", "prompt": "p", "input": {"x": 1}}),
        json.dumps({"id": "a", "prompt": "p", "input": {"x": "2"}}),
        json.dumps({"id": "c", "prompt": "p", "input": {}, "contians": ["typo"]}),
        json.dumps({"id": "d", "prompt": "p", "input": {}, "regex": "("}),
        json.dumps({"id": "e", "prompt": "p", "input": {}, "min_bleu": 30}),
        json.dumps({"id": "f", "input": {}}),
        json.dumps({"id": "g", "prompt": "p", "flow": "f", "input": {}}),
        json.dumps({"id": "h", "prompt": "p", "input": {}, "todo": "write it"}),
        json.dumps({"id": "i", "prompt": "p", "input": {}, "includes": {"aspects": "battery"}}),
    ]
    with pytest.raises(GoldenSetError) as err:
        parse_lines(lines, "golden.jsonl")
    message = str(err.value)
    assert "golden.jsonl:2: not valid JSON" in message
    assert "golden.jsonl:3: input.x: 1 is not of type 'string'" in message
    assert "golden.jsonl:4: id: duplicate id 'a' (first on line 1)" in message
    assert "golden.jsonl:5: Additional properties are not allowed ('contians' was unexpected)" in message
    assert "golden.jsonl:6: regex: invalid pattern" in message
    assert "golden.jsonl:7: (line): 'reference' is a dependency of 'min_bleu'" in message
    assert "golden.jsonl:8: needs exactly one of `prompt` (a prompt id) or `flow` (a flow of the app)" in message
    assert "golden.jsonl:9: needs exactly one of `prompt`" in message
    assert "golden.jsonl:10: todo: a stub to fill in (write it), then delete `todo`" in message
    assert "golden.jsonl:11: includes.aspects: 'battery' is not of type 'array'" in message


def test_what_python_reads_but_json_does_not_is_rejected():
    """NaN, Infinity, 1e999 and deep nesting: Python's json takes the first three (the last is a
    RecursionError), no other JSON reader does."""
    lines = [
        '{"id": "a", "prompt": "p", "input": {}, "expected": {"score": NaN}}',
        '{"id": "b", "prompt": "p", "input": {}, "expected": {"score": -Infinity}}',
        '{"id": "c", "prompt": "p", "input": {}, "expected": {"score": 1e999}}',
        "[" * 100_000 + "]" * 100_000,
    ]
    with pytest.raises(GoldenSetError) as err:
        parse_lines(lines, "golden.jsonl")
    message = str(err.value)
    assert "golden.jsonl:1: not valid JSON (NaN is not a JSON value)" in message
    assert "golden.jsonl:2: not valid JSON (-Infinity is not a JSON value)" in message
    assert "golden.jsonl:3: not valid JSON (1e999 does not fit a float)" in message
    assert "golden.jsonl:4: not valid JSON (nested too deeply)" in message


def test_an_expectation_that_would_check_nothing_is_rejected():
    base = {"prompt": "p", "input": {}}
    empty = [
        {"contains": []},
        {"not_contains": []},
        {"includes": {}},
        {"includes": {"aspects": []}},
        {"expected": {}},
        {"contains": ["30", "  "]},
        {"includes": {"aspects": ["\t"]}},
        {"grounded": False},
        {"exact": True, "regex": "x"},
        {"json_schema": {"type": "objekt"}},  # not a schema: it would fail after the model calls
    ]
    lines = [json.dumps({"id": f"e{n}", **base, **fields}) for n, fields in enumerate(empty, start=1)]
    with pytest.raises(GoldenSetError) as err:
        parse_lines(lines, "golden.jsonl")
    assert str(err.value).splitlines()[1:] == [
        "golden.jsonl:1: contains: empty, so it checks nothing (say what to check, or remove it)",
        "golden.jsonl:2: not_contains: empty, so it checks nothing (say what to check, or remove it)",
        "golden.jsonl:3: includes: empty, so it checks nothing (say what to check, or remove it)",
        "golden.jsonl:4: includes.aspects: empty, so it checks nothing (say what to check, or remove it)",
        "golden.jsonl:5: expected: empty, so it checks nothing (say what to check, or remove it)",
        "golden.jsonl:6: contains.1: blank text, so it checks nothing (say what to check, or remove it)",
        "golden.jsonl:7: includes.aspects.0: blank text, so it checks nothing (say what to check, or remove it)",
        "golden.jsonl:8: grounded: false checks nothing (remove it)",
        "golden.jsonl:9: exact: applies to expected, includes, contains and not_contains; this example has none",
        "golden.jsonl:10: json_schema: not a valid JSON Schema ('objekt' is not valid under any of the given schemas)",
    ]
    assert parse_lines([json.dumps({"id": "ok", **base, "contains": ["30"], "exact": True})], "g.jsonl")


def test_an_example_that_checks_nothing_is_rejected(toy_project):
    lines = [
        json.dumps({"id": "free-text", "prompt": "echo", "input": {"text": "x"}}),
        json.dumps({"id": "flow", "flow": "reply", "input": {"text": "good"}}),
        json.dumps({"id": "schema", "prompt": "label", "input": {"text": "x"}}),  # its output schema is checked
        json.dumps({"id": "timed", "prompt": "echo", "input": {"text": "x"}, "max_latency_ms": 900}),
        json.dumps({"id": "rubric", "prompt": "echo", "input": {"text": "x"}, "judge": "Polite."}),
    ]
    with pytest.raises(GoldenSetError) as err:
        check_targets(parse_lines(lines, "g.jsonl"), load_all(), toy.APP.flows, "g.jsonl")
    assert str(err.value).splitlines() == [
        "g.jsonl: free-text: checks nothing: say what a good answer is (`expected`, `contains`, ...)",
        "g.jsonl: flow: checks nothing: say what a good answer is (`expected`, `contains`, ...)",
        "g.jsonl: rubric: checks nothing: its judge rubric counts only once calibrated; add a check of its own "
        "(`contains`, `regex`, ...)",
    ]


def test_flow_examples_are_checked_against_the_flow_request_schema(toy_project):
    lines = [
        json.dumps({"id": "ok", "flow": "reply", "input": {"text": "good"}, "expected": {"label": "good"}}),
        json.dumps({"id": "typo", "flow": "reply", "input": {"txt": "good"}}),
        json.dumps({"id": "nope", "flow": "nope", "input": {}}),
        json.dumps({"id": "var", "prompt": "echo", "input": {"text": "x", "more": "y"}}),
    ]
    with pytest.raises(GoldenSetError) as err:
        check_targets(parse_lines(lines, "g.jsonl"), load_all(), toy.APP.flows, "g.jsonl")
    message = str(err.value)
    assert "g.jsonl: typo: input: Additional properties are not allowed ('txt' was unexpected)" in message
    assert "(the 'reply' flow's request schema)" in message
    assert "g.jsonl: nope: flow: the app has no flow 'nope' (have: reply)" in message
    assert "g.jsonl: var: input: variable(s) more not declared by echo" in message
    assert "g.jsonl: ok" not in message


def test_preprocess_stops_on_a_bad_golden_set(project):
    (project / "data" / "raw").mkdir(parents=True)
    (project / "eval" / "golden.jsonl").write_text('{"id": "x", "prompt": "some_prompt"}\n')
    with pytest.raises(GoldenSetError, match=r"golden.jsonl:1: \(line\): 'input' is a required property"):
        preprocess_main(
            ["--golden", "eval/golden.jsonl", "--raw", "data/raw", "--out", "out.jsonl", "--manifest", "m.json"]
        )
    assert not (project / "out.jsonl").exists()


def test_preprocess_merges_normalises_and_drops_duplicate_inputs(project):
    raw = project / "data" / "raw"
    raw.mkdir(parents=True)
    first = json.loads((project / "eval" / "golden.jsonl").read_text().splitlines()[0])
    duplicate = {**first, "id": "raw-dup", "input": {k: f"  {v} " for k, v in first["input"].items()}}
    fresh = {**first, "id": "raw-new", "input": {k: "caf\u0065\u0301" for k in first["input"]}}
    (raw / "feedback.jsonl").write_text(json.dumps(duplicate) + "\n" + json.dumps(fresh) + "\n")
    args = ["--golden", "eval/golden.jsonl", "--raw", "data/raw", "--out", "p/eval.jsonl", "--manifest", "p/m.json"]
    assert preprocess_main(args) == 0
    rows = [json.loads(line) for line in (project / "p" / "eval.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in rows]
    assert "raw-dup" not in ids and "raw-new" in ids
    assert rows[ids.index("raw-new")]["input"][next(iter(first["input"]))] == "caf\u00e9"
    manifest = json.loads((project / "p" / "m.json").read_text())
    assert manifest["examples"] == len(rows) and len(manifest["sha256"]) == 64
    # Same inputs, same hash: the data hash is a stable lineage id.
    assert preprocess_main(args) == 0
    assert json.loads((project / "p" / "m.json").read_text())["sha256"] == manifest["sha256"]
