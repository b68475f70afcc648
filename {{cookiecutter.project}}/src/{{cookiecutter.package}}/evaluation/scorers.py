"""Scorers: small pure functions registered by name.

Each takes a `Sample` (the example's expectations, the raw output, its parsed JSON if any, the
latency) and returns a `Score`: `passed` (True/False) and an optional `value` for graded metrics.
`applicable(example)` decides which scorers run: an example is judged only on what it declares.
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
# expectation key -> scorers that judge it
BY_EXPECTATION: dict[str, list[str]] = {}


def scorer(name: str, expectation: str | None = None) -> Callable[[Scorer], Scorer]:
    def register(fn: Scorer) -> Scorer:
        SCORERS[name] = fn
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
    """The text to judge: for a JSON answer, its string values joined; else the raw output."""
    if isinstance(sample.parsed, dict):
        return " ".join(str(v) for v in sample.parsed.values() if isinstance(v, str | int | float))
    return sample.output


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


@scorer("exact_match", "expected")
def exact_match(sample: Sample) -> Score:
    expected = sample.expectations["expected"]
    if isinstance(expected, Mapping):
        if not isinstance(sample.parsed, dict):
            return Score(False, detail="output is not a JSON object")
        wrong = [k for k, v in expected.items() if _norm_value(sample.parsed.get(k)) != _norm_value(v)]
        return Score(not wrong, detail=f"mismatch: {', '.join(wrong)}" if wrong else "")
    return Score(_norm(answer_text(sample)) == _norm(expected))


def _norm_value(value: Any) -> Any:
    return _norm(value) if isinstance(value, str) else value


@scorer("contains", "contains")
def contains(sample: Sample) -> Score:
    text = _norm(answer_text(sample))
    missing = [s for s in sample.expectations["contains"] if _norm(s) not in text]
    return Score(not missing, detail=f"missing: {missing}" if missing else "")


@scorer("not_contains", "not_contains")
def not_contains(sample: Sample) -> Score:
    text = _norm(answer_text(sample))
    found = [s for s in sample.expectations["not_contains"] if _norm(s) in text]
    return Score(not found, detail=f"found: {found}" if found else "")


@scorer("regex", "regex")
def regex(sample: Sample) -> Score:
    return Score(re.search(sample.expectations["regex"], answer_text(sample)) is not None)


@scorer("json_valid")
def json_valid(sample: Sample) -> Score:
    return Score(sample.parsed is not None, detail="" if sample.parsed is not None else "not JSON")


@scorer("json_schema")
def json_schema(sample: Sample) -> Score:
    import jsonschema

    schema = sample.expectations.get("json_schema") or sample.output_schema
    if sample.parsed is None:
        return Score(False, detail="not JSON")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(sample.parsed))
    return Score(error is None, detail=error.message if error else "")


@scorer("latency", "max_latency_ms")
def latency(sample: Sample) -> Score:
    budget = float(sample.expectations["max_latency_ms"])
    return Score(sample.latency_ms <= budget, value=sample.latency_ms)


@scorer("bleu", "reference")
def bleu(sample: Sample) -> Score:
    """sacreBLEU sentence score against `reference` (0-100); passes at `min_bleu` (default 30)."""
    import sacrebleu

    value = sacrebleu.sentence_bleu(answer_text(sample), [sample.expectations["reference"]]).score
    return Score(value >= float(sample.expectations.get("min_bleu", 30.0)), value=value)


@scorer("rouge_l", "reference")
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


@scorer("hallucination", "grounded")
def hallucination(sample: Sample) -> Score:
    """Fails when the answer states a number, email address or name that the input does not contain
    (the input holds the context: the policy text, the customer message)."""
    context = " ".join(sample.input.values())
    invented = unsupported_facts(answer_text(sample), context)
    return Score(not invented, detail=f"not in the input: {invented}" if invented else "")


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def score_all(sample: Sample, names: list[str]) -> dict[str, Score]:
    return {name: SCORERS[name](sample) for name in names}
