"""Scorers: small pure functions registered by name, each with the one line the catalogue shows.

Each takes a `Sample` (the example's expectations, the raw output, its parsed JSON if any, the
latency) and returns a `Score`: `passed` (True/False) and an optional `value` for graded metrics.
`applicable(example)` decides which scorers run: an example is judged only on what it declares.
Each scorer's pass rate is the metric `<scorer>_rate` (higher is better).

Normalisation, the same everywhere: text is compared case-insensitively with runs of whitespace
collapsed and the ends trimmed; a list is compared as a set of such items (order and repeats do
not matter); `null` and a missing key are the same.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    expectations: Mapping[str, Any]
    input: Mapping[str, str]
    output: str
    parsed: Any  # the output parsed as JSON, or None when it is not JSON
    output_schema: Mapping[str, Any] | None
    latency_ms: float


@dataclass(frozen=True)
class Score:
    passed: bool
    value: float | None = None  # graded scorers (bleu, rouge_l) report their value too
    detail: str = ""


Scorer = Callable[[Sample], Score]
SCORERS: dict[str, Scorer] = {}
# scorer -> what it checks, one line (the metric catalogue shows it)
CHECKS: dict[str, str] = {}
# expectation key -> scorers that judge it
BY_EXPECTATION: dict[str, list[str]] = {}


def scorer(name: str, expectation: str | None, checks: str) -> Callable[[Scorer], Scorer]:
    def register(fn: Scorer) -> Scorer:
        SCORERS[name] = fn
        CHECKS[name] = checks
        if expectation:
            BY_EXPECTATION.setdefault(expectation, []).append(name)
        return fn

    return register


def applicable(expectations: Mapping[str, Any], output_schema: Mapping[str, Any] | None) -> list[str]:
    names = [name for key in expectations for name in BY_EXPECTATION.get(key, [])]
    if output_schema is not None or "json_schema" in expectations:
        names += ["json_valid", "json_schema"]
    return sorted(set(names))


def answer_text(sample: Sample) -> str:
    """The text to judge: for a JSON answer, every string and number in it (lists and nested
    objects included) joined by spaces, in order; else the raw output."""
    if isinstance(sample.parsed, dict | list):
        return " ".join(_leaves(sample.parsed))
    return sample.output


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [text for v in value.values() for text in _leaves(v)]
    if isinstance(value, list):
        return [text for v in value for text in _leaves(v)]
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return [str(value)]
    return []


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def normalised(value: Any) -> Any:
    """Text casefolded and whitespace-collapsed; a list as a set of normalised items (order and
    repeats do not matter); an object field by field; anything else as it is."""
    if isinstance(value, str):
        return _norm(value)
    if isinstance(value, list):
        return frozenset(json.dumps(normalised(v), sort_keys=True, default=sorted) for v in value)
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    return value


def mismatches(expected: Mapping[str, Any], actual: Any, prefix: str = "") -> list[str]:
    """The fields of `expected` that `actual` gets wrong (dotted paths); nested objects compare only
    the fields they name, so an expectation can pin part of a larger reply."""
    if not isinstance(actual, Mapping):
        return [prefix.rstrip(".") or "(output)"]
    wrong = []
    for key, want in expected.items():
        got = actual.get(key)
        if isinstance(want, Mapping) and want:
            wrong += mismatches(want, got, f"{prefix}{key}.")
        elif normalised(got) != normalised(want):
            wrong.append(f"{prefix}{key}")
    return wrong


@scorer("exact_match", "expected", "`expected`: the answer, or each field it names, equals it (normalised)")
def exact_match(sample: Sample) -> Score:
    expected = sample.expectations["expected"]
    if isinstance(expected, Mapping):
        if not isinstance(sample.parsed, dict):
            return Score(False, detail="output is not a JSON object")
        wrong = mismatches(expected, sample.parsed)
        return Score(not wrong, detail=f"mismatch: {', '.join(wrong)}" if wrong else "")
    return Score(_norm(answer_text(sample)) == _norm(expected))


@scorer("includes", "includes", "`includes`: each listed item is in the output's list of that field")
def includes(sample: Sample) -> Score:
    if not isinstance(sample.parsed, dict):
        return Score(False, detail="output is not a JSON object")
    missing = []
    for key, items in sample.expectations["includes"].items():
        got = sample.parsed.get(key)
        have = {_norm(str(v)) for v in got} if isinstance(got, list) else set()
        missing += [f"{key}: {item}" for item in items if _norm(item) not in have]
    return Score(not missing, detail=f"missing: {missing}" if missing else "")


@scorer("contains", "contains", "`contains`: every listed text occurs in the answer")
def contains(sample: Sample) -> Score:
    text = _norm(answer_text(sample))
    missing = [s for s in sample.expectations["contains"] if _norm(s) not in text]
    return Score(not missing, detail=f"missing: {missing}" if missing else "")


@scorer("not_contains", "not_contains", "`not_contains`: no listed text occurs in the answer")
def not_contains(sample: Sample) -> Score:
    text = _norm(answer_text(sample))
    found = [s for s in sample.expectations["not_contains"] if _norm(s) in text]
    return Score(not found, detail=f"found: {found}" if found else "")


@scorer("regex", "regex", "`regex`: the pattern matches the answer")
def regex(sample: Sample) -> Score:
    return Score(re.search(sample.expectations["regex"], answer_text(sample)) is not None)


@scorer("json_valid", None, "the answer is JSON (prompts with an output schema)")
def json_valid(sample: Sample) -> Score:
    return Score(sample.parsed is not None, detail="" if sample.parsed is not None else "not JSON")


@scorer("json_schema", None, "the answer matches the output schema (or the example's `json_schema`)")
def json_schema(sample: Sample) -> Score:
    import jsonschema

    # `applicable` runs this scorer only where there is a schema; an example's empty one ({}) on a
    # prompt without an output schema accepts any JSON, as an empty JSON Schema does.
    schema = sample.expectations.get("json_schema") or sample.output_schema or {}
    if sample.parsed is None:
        return Score(False, detail="not JSON")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(sample.parsed))
    return Score(error is None, detail=error.message if error else "")


@scorer("within_latency", "max_latency_ms", "`max_latency_ms`: the model answered within it")
def within_latency(sample: Sample) -> Score:
    budget = float(sample.expectations["max_latency_ms"])
    return Score(sample.latency_ms <= budget, value=sample.latency_ms)


@scorer("bleu", "reference", "`reference`: sacreBLEU sentence score >= `min_bleu` (default 30)")
def bleu(sample: Sample) -> Score:
    """sacreBLEU sentence score against `reference` (0-100); passes at `min_bleu` (default 30)."""
    import sacrebleu

    value = sacrebleu.sentence_bleu(answer_text(sample), [sample.expectations["reference"]]).score
    return Score(value >= float(sample.expectations.get("min_bleu", 30.0)), value=value)


@scorer("rouge_l", "reference", "`reference`: ROUGE-L F1 >= `min_rouge_l` (default 0.5)")
def rouge_l(sample: Sample) -> Score:
    """ROUGE-L F1 against `reference` (0-1) from Google's rouge-score; passes at `min_rouge_l` (0.5)."""
    from rouge_score import rouge_scorer

    scorer_ = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    value = scorer_.score(sample.expectations["reference"], answer_text(sample))["rougeL"].fmeasure
    return Score(value >= float(sample.expectations.get("min_rouge_l", 0.5)), value=value)


# Numbers, email addresses and names are the facts a small model most often invents.
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
# A capitalised word that does not start a sentence: a name, a place, a product.
_NAME_RE = re.compile(r"(?<![.!?:]\s)(?<!^)\b[A-Z][a-zA-Z]+\b")


def unsupported_facts(answer: str, context: str) -> list[str]:
    """Numbers, email addresses and names in `answer` that appear nowhere in `context`."""
    facts = set(_NUMBER_RE.findall(answer)) | set(_EMAIL_RE.findall(answer))
    facts |= {name for name in _NAME_RE.findall(answer.strip()) if name != "I"}
    lowered = context.casefold()
    return sorted(f for f in facts if f.casefold() not in lowered)


@scorer("grounded", "grounded", "`grounded`: no number, email address or name absent from the input")
def grounded(sample: Sample) -> Score:
    """Fails when the answer states a number, email address or name that the input does not contain
    (the input holds the context: a policy text, a customer message)."""
    context = " ".join(_leaves(dict(sample.input)))
    invented = unsupported_facts(answer_text(sample), context)
    return Score(not invented, detail=f"not in the input: {invented}" if invented else "")


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def score_all(sample: Sample, names: list[str]) -> dict[str, Score]:
    return {name: SCORERS[name](sample) for name in names}
