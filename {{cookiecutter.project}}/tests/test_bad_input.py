"""A user's bad file or path is one line naming the file (and line, and field), exit 2, before any
model call: never a traceback, never the whole offending value."""

import json
from pathlib import Path

import pytest

from {{ cookiecutter.package }}.cli import main

PROG = "{{ cookiecutter.project }}"
PREPROCESS = [
    "preprocess",
    "--golden",
    "eval/golden.jsonl",
    "--raw",
    "data/raw",
    "--out",
    "o.jsonl",
    "--manifest",
    "m.json",
]


def run(capsys, *argv: str) -> tuple[int, list[str]]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err.splitlines()


@pytest.fixture
def project_with_raw(project: Path) -> Path:
    (project / "data" / "raw").mkdir(parents=True, exist_ok=True)
    return project


def test_a_golden_set_that_is_not_utf8_is_one_line_with_its_line(project_with_raw, capsys):
    golden = project_with_raw / "eval" / "golden.jsonl"
    lines = golden.read_bytes().split(b"\n")
    golden.write_bytes(b"\n".join([*lines[:2], lines[2].replace(b'"input"', b'"inp\xe9ut"', 1), *lines[3:]]))
    expected = "eval/golden.jsonl:3: not valid UTF-8 (save it as UTF-8)"
    assert run(capsys, *PREPROCESS) == (2, [f"{PROG} preprocess: error: {expected}"])
    assert run(capsys, "evaluate", "--eval-set", "eval/golden.jsonl") == (2, [f"{PROG} evaluate: error: {expected}"])
    assert not (project_with_raw / "o.jsonl").exists()


def test_a_raw_data_file_that_is_not_utf8_names_its_line(project_with_raw, capsys):
    raw = project_with_raw / "data" / "raw" / "feedback.jsonl"
    raw.write_bytes(b"\n\n" + b'{"id": "r1", "prompt": "x", "input": {"text": "\xff"}}\n')
    expected = f"{PROG} preprocess: error: data/raw/feedback.jsonl:3: not valid UTF-8 (save it as UTF-8)"
    assert run(capsys, *PREPROCESS) == (2, [expected])


def test_a_prompt_template_that_is_not_utf8_is_named_by_check_and_evaluate(project_with_raw, capsys):
    template = sorted((project_with_raw / "prompts").glob("*.yaml"))[0]
    text = template.read_bytes()
    template.write_bytes(text + b"# caf\xe9\n")
    line = text.count(b"\n") + 1
    problem = f"prompts/{template.name}:{line}: not valid UTF-8 (save it as UTF-8)"
    code = main(["prompts", "check"])
    assert code == 1 and problem in capsys.readouterr().out.splitlines()
    assert run(capsys, "evaluate", "--eval-set", "eval/golden.jsonl") == (2, [f"{PROG} evaluate: error: {problem}"])


def test_params_that_are_not_utf8_stop_every_stage(project_with_raw, capsys):
    params = project_with_raw / "params.yaml"
    params.write_bytes(params.read_bytes().replace(b"model:", b"model: # \xc3(", 1))
    code, err = run(capsys, "evaluate", "--eval-set", "eval/golden.jsonl")
    assert code == 2 and len(err) == 1 and err[0].endswith(": not valid UTF-8 (save it as UTF-8)")
    assert err[0].startswith(f"{PROG} evaluate: error: params.yaml:")


def test_results_that_are_not_utf8_are_one_line_for_plots(project, capsys):
    (project / "results.jsonl").write_bytes(b'{"id": "a", "repeat": 0, "passed": true}\n{"id": "\xff"}\n')
    expected = f"{PROG} plots: error: results.jsonl:2: not valid UTF-8 (save it as UTF-8)"
    assert run(capsys, "plots", "--results", "results.jsonl", "--out-dir", "plots") == (2, [expected])


def test_a_line_separator_inside_a_golden_text_is_text_not_a_new_line(project_with_raw, capsys):
    golden = project_with_raw / "eval" / "golden.jsonl"
    first = json.loads(golden.read_text().split("\n")[0])
    odd = {**first, "id": "separators", "input": {k: "one\u2028two\u0085three" for k in first["input"]}}
    golden.write_text(json.dumps(odd, ensure_ascii=False) + "\n" + golden.read_text())
    assert main(PREPROCESS) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (project_with_raw / "o.jsonl").read_text().split("\n") if line]
    assert rows[0]["id"] == "separators" and "\u2028" in next(iter(rows[0]["input"].values()))


HUGE = "x" * 2_000_000


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({"id": "a", "prompt": "p", "input": HUGE}, "eval/golden.jsonl:1: input: 'xxx"),
        ({"id": "a", "prompt": "p", "input": {"text": "t"}, "contains": HUGE}, "eval/golden.jsonl:1: contains: 'xxx"),
        ({"id": HUGE, "prompt": "p", "input": {}}, "eval/golden.jsonl:1: id: 'xxx"),
        ({"id": "a", "prompt": "p", "input": {}, "todo": HUGE}, "eval/golden.jsonl:1: todo: a stub to fill in (xxx"),
        ({"id": "a", "prompt": "p", "input": {}, HUGE: 1}, "eval/golden.jsonl:1: Additional properties are not"),
    ],
)
def test_a_huge_offending_value_is_quoted_by_a_short_prefix(project_with_raw, capsys, line, expected):
    (project_with_raw / "eval" / "golden.jsonl").write_text(json.dumps(line) + "\n")
    code, err = run(capsys, *PREPROCESS)
    assert code == 2 and err[1].startswith(expected), err
    assert max(map(len, err)) < 400


def test_a_huge_value_in_a_prompt_template_is_quoted_short(project, capsys):
    template = sorted((project / "prompts").glob("*.yaml"))[0]
    template.write_text(template.read_text().replace("description:", f"description: [{HUGE}]\nnotes:", 1))
    code = main(["prompts", "check"])
    out = capsys.readouterr().out
    assert code == 1 and f"prompts/{template.name}: description: ['xxx" in out and max(map(len, out.splitlines())) < 400


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["evaluate", "--prompts", "nope"], "nope: no such directory of prompt templates"),
        (["evaluate", "--eval-set", "nope.jsonl"], "nope.jsonl: cannot read (No such file or directory)"),
        (["evaluate", "--params", "nope.yaml"], "nope.yaml: cannot read (No such file or directory)"),
        (["evaluate", "--params", "prompts"], "prompts: cannot read (Is a directory)"),
        (["preprocess", *PREPROCESS[1:2], "nope.jsonl", *PREPROCESS[3:]], "nope.jsonl: cannot read (No such file"),
        ([*PREPROCESS[:3], "--raw", "data/nope", *PREPROCESS[5:]], "--raw data/nope: no such directory"),
        (["plots", "--results", "nope.jsonl"], "nope.jsonl: cannot read (No such file or directory)"),
        (["params", "--params", "nope.yaml"], "nope.yaml: cannot read (No such file or directory)"),
        (["prompts", "list", "--dir", "nope"], "nope: no such directory of prompt templates"),
    ],
)
def test_a_missing_path_argument_is_one_line_exit_2(project_with_raw, capsys, argv, expected):
    code, err = run(capsys, *argv)
    assert (code, len(err)) == (2, 1), err
    assert err[0].startswith(f"{PROG} {argv[0]}: error: {expected}"), err


def test_an_output_path_that_cannot_be_written_is_one_line(project_with_raw, capsys):
    (project_with_raw / "blocker").write_text("a file where a directory should be\n")
    code, err = run(capsys, *PREPROCESS[:-4], "--out", "blocker/eval_set.jsonl", "--manifest", "m.json")
    assert (code, len(err)) == (2, 1) and err[0].startswith(f"{PROG} preprocess: error: blocker"), err


def test_a_tag_metric_whose_tag_no_example_has_is_refused_before_any_call(project_with_raw, capsys):
    params = project_with_raw / "params.yaml"
    text = params.read_text()
    params.write_text(text.replace("\n  min:\n", "\n  min:\n    tag_no_such_tag_pass_rate: 0.5\n", 1))
    line = params.read_text().split("\n").index("    tag_no_such_tag_pass_rate: 0.5") + 1
    code, err = run(capsys, "evaluate", "--eval-set", "eval/golden.jsonl")
    assert code == 2 and len(err) == 1, err
    expected = f"params.yaml:{line}: thresholds.min.tag_no_such_tag_pass_rate: no example in eval/golden.jsonl"
    assert err[0].startswith(f"{PROG} evaluate: error: {expected} is tagged 'no_such_tag' (tags: "), err


@pytest.mark.parametrize("entry", [".relative:APP", "x" * 2_000_000 + ":APP", "no_colon", "json:loads"])
def test_a_bad_app_entry_is_one_short_line(project_with_raw, capsys, entry):
    import re

    params = project_with_raw / "params.yaml"
    params.write_text(re.sub(r"(?m)^  entry: .*$", f'  entry: "{entry}"', params.read_text(), count=1))
    code, err = run(capsys, "evaluate", "--eval-set", "eval/golden.jsonl")
    assert (code, len(err)) == (2, 1) and len(err[0]) < 400, err[0][:400]
    assert err[0].startswith(f"{PROG} evaluate: error: app.entry: "), err
