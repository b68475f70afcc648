"""Property-based: whatever a user writes into the golden set or params.yaml, the CLI answers with an
exit code of 0, 1 or 2 and lines that name the file - never a traceback, never a wall of text.

The commands run in-process (`cli.main`), so an unexpected exception fails the test outright; the
evaluation talks to the fake model on 127.0.0.1. Derandomized: CI sees the same examples every run.
"""

import contextlib
import io
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from {{ cookiecutter.package }}.cli import main
from {{ cookiecutter.package }}.testing import toy
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

ROOT = Path(__file__).resolve().parents[1]
PROG = "{{ cookiecutter.project }}"
PROPERTY = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LONGEST_LINE = 500

# Text as users (and copy-paste) produce it: any character but lone surrogates, line separators
# such as U+2028 and control characters included.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
WORDS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24).filter(str.strip)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=4
)
LABEL = st.sampled_from(["good", "bad"])
# What a line may say a good answer is, well formed for the toy app's targets (its `label` prompt
# answers {"label": "good" | "bad"}, `echo` repeats the text, the `reply` flow returns both).
EXPECTATIONS = {
    "expected": st.fixed_dictionaries({"label": LABEL}) | WORDS,
    "contains": st.lists(WORDS, min_size=1, max_size=2),
    "not_contains": st.lists(WORDS, min_size=1, max_size=2),
    "regex": WORDS.map(re.escape),
    "max_latency_ms": st.floats(1, 1e5),
    "grounded": st.just(True),
    "json_schema": st.sampled_from([{"type": "object"}, {"required": ["label"]}]),
}
# ...and the same keys (and the rest of the golden-set schema) with anything at all in them.
ANY_KEYS = (*EXPECTATIONS, "includes", "reference", "min_bleu", "min_rouge_l", "tags", "todo", "exact", "input", "id")


@st.composite
def examples(draw, number: int) -> dict:
    """A golden example of the toy app (a prompt or the flow) that checks one to three things."""
    target = draw(st.sampled_from([{"prompt": "echo"}, {"prompt": "label"}, {"flow": "reply"}]))
    example = {"id": f"e{number}", **target, "input": {"text": draw(WORDS)}, "tags": draw(st.lists(LABEL, max_size=2))}
    for key in draw(st.lists(st.sampled_from(sorted(EXPECTATIONS)), min_size=1, max_size=3, unique=True)):
        example[key] = draw(EXPECTATIONS[key])
    return example


@st.composite
def golden_files(draw) -> bytes:
    """A golden set as bytes: well-formed examples, and often one thing wrong - a field set to
    anything, a line that is not an example, a byte that is not UTF-8."""
    lines = [draw(examples(n)) for n in range(draw(st.integers(1, 4)))]
    texts = [json.dumps(line, ensure_ascii=draw(st.booleans())) for line in lines]
    mistake = draw(st.sampled_from(["none", "none", "field", "field", "line", "bytes"]))
    at = draw(st.integers(0, len(lines) - 1))
    if mistake == "field":
        texts[at] = json.dumps({**lines[at], draw(st.sampled_from(ANY_KEYS)): draw(VALUES)})
    elif mistake == "line":
        texts.insert(at, draw(VALUES.map(json.dumps) | TEXT))
    data = "\n".join(texts).encode()
    if mistake == "bytes":
        index = draw(st.integers(0, len(data)))
        data = data[:index] + draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80"])) + data[index:]
    return data


@contextlib.contextmanager
def inside(directory: Path):
    old = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(old)


def run(*argv: str) -> tuple[int, list[str]]:
    """`<project> <argv>` in-process: its exit code and its stderr lines (an exception propagates)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue().splitlines()


def assert_clear(code: int, err: list[str], command: str, source: str) -> None:
    """Exit 0/1 with nothing on stderr but threshold lines, or exit 2 whose lines name `source`."""
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in "\n".join(err)
    assert all(len(line) < LONGEST_LINE for line in err), max(err, key=len)[:200]
    if code == 2:
        head, *rest = err
        assert head.startswith(f"{PROG} {command}: error: "), err
        assert all(line.startswith(source) for line in rest), err


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A toy-app project on a fake model (the toy's answers), one eval at a time."""
    with FakeModel(toy.answers, hang_s=0.05) as model:
        root = toy.write_version(
            ROOT, tmp_path_factory.mktemp("properties"), model.base_url, eval={"max_attempts": 1, "concurrency": 4}
        )
        (root / "data" / "raw").mkdir(parents=True)
        yield root


@settings(PROPERTY, max_examples=150)
@given(golden=golden_files())
def test_preprocess_and_evaluate_answer_any_golden_set_with_0_1_or_2(workspace, golden):
    with inside(workspace):
        Path("golden.jsonl").write_bytes(golden)
        code, err = run(
            "preprocess", "--golden", "golden.jsonl", "--raw", "data/raw", "--out", "set.jsonl", "--manifest", "m.json"
        )
        assert_clear(code, err, "preprocess", "golden.jsonl")
        event(f"preprocess exit {code}")
        code, err = run("evaluate", "--eval-set", "golden.jsonl", "--check")
        assert_clear(code, err, "evaluate", "golden.jsonl")
        event(f"evaluate exit {code}")
        if code != 2:
            assert Path("eval/metrics.json").is_file()


PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
KEYS = [(section, key) for section, values in PARAMS.items() if isinstance(values, dict) for key in values] + [
    ("model", "colour"),
    ("evaluation", None),
    ("thresholds", "min"),
    ("gate", "tolerance"),
    ("gate", "required"),
]
# Plausible values (in range for many keys) more often than not, anything at all otherwise.
PARAM_VALUES = st.one_of(
    st.integers(-2, 64),
    st.floats(-1.5, 120, allow_nan=False),
    st.floats(),
    st.booleans(),
    TEXT,
    st.sampled_from(["embedded", "http://127.0.0.1:8000/v1", "https://user:pw@h/v1", "ftp://x", "MODEL_KEY", ""]),
    st.dictionaries(
        st.sampled_from(["pass_rate", "error_rate", "tag_good_pass_rate", "pass_rat"]) | TEXT,
        st.floats(-1, 2),
        max_size=2,
    ),
    st.lists(st.sampled_from(["pass_rate", "error_rate", "eror_rate"]) | TEXT, max_size=2),
    VALUES,
)


def _with(params: dict, path: tuple, value) -> dict:
    section, key = path
    current = params.get(section)
    changed = {**params, section: dict(current) if isinstance(current, dict) else {}}
    if key is None:
        changed[section] = value
    else:
        changed[section][key] = value
    return changed


@st.composite
def params_files(draw) -> bytes:
    """The shipped params.yaml with a few keys set to anything, and now and then a line duplicated,
    a line of junk or a byte that is not UTF-8."""
    params = PARAMS
    for path in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=2)):
        params = _with(params, path, draw(PARAM_VALUES))
    lines = yaml.safe_dump(params, sort_keys=False, allow_unicode=draw(st.booleans())).split("\n")
    mutation = draw(st.sampled_from(["none", "none", "duplicate", "junk", "bytes"]))
    at = draw(st.integers(0, len(lines) - 1))
    if mutation == "duplicate":
        lines.insert(at, lines[at])
    elif mutation == "junk":
        lines.insert(at, draw(TEXT))
    data = "\n".join(lines).encode()
    if mutation == "bytes":
        data = data[: at * 3] + b"\xc3(" + data[at * 3 :]
    return data


@settings(PROPERTY, max_examples=300)
@given(text=params_files())
def test_params_answers_any_params_yaml_with_0_or_one_line_exit_2(tmp_path_factory, text):
    directory = tmp_path_factory.getbasetemp() / "params-property"
    directory.mkdir(exist_ok=True)
    with inside(directory):
        Path("params.yaml").write_bytes(text)
        code, err = run("params")
    event(f"params exit {code}")
    assert code in (0, 2) and "Traceback" not in "\n".join(err)
    if code == 2:
        assert len(err) == 1 and len(err[0]) < LONGEST_LINE, err
        assert re.match(rf"{PROG} params: error: params\.yaml(:\d+)?: ", err[0]), err
    else:
        assert err == []


def test_the_examples_reach_every_outcome(workspace):
    """The strategies are not vacuous: valid lines pass, broken ones are refused, at both commands."""
    valid = json.dumps({"id": "ok", "prompt": "label", "input": {"text": "good"}, "expected": {"label": "good"}})
    with inside(workspace):
        for golden, preprocess_code, evaluate_code in [
            (valid, 0, 0),
            (valid.replace('"good"}}', '"bad"}}'), 0, 1),  # a wrong answer: the threshold is missed
            ("{not json", 2, 2),
            (valid.replace('"label"', '"nope"', 1), 0, 2),  # an unknown prompt: refused before any call
        ]:
            Path("golden.jsonl").write_text(golden + "\n")
            assert (
                run(
                    "preprocess",
                    "--golden",
                    "golden.jsonl",
                    "--raw",
                    "data/raw",
                    "--out",
                    "s.jsonl",
                    "--manifest",
                    "m.json",
                )[0]
                == preprocess_code
            )
            assert run("evaluate", "--eval-set", "golden.jsonl", "--check")[0] == evaluate_code, golden
