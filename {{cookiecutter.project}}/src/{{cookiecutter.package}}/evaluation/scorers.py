"""Scorers: small pure functions registered by name, each with the one line the catalogue shows.

Each takes a `Sample` (the example's expectations, the raw output, its parsed JSON if any, the
latency) and returns a `Score`: `passed` (True/False) and an optional `value` for graded metrics.
`applicable(example)` decides which scorers run: an example is judged only on what it declares.
Each scorer's pass rate is the metric `<scorer>_rate` (higher is better).

Normalisation, the same everywhere (the README's golden-set section states each rule; the tests
test each): text is casefolded with runs of whitespace collapsed and the ends trimmed; a list is
compared as a set of such items (order and repeats do not matter); `null` and a missing key are the
same; numbers compare as numbers (2 == 2.0), never equal to true, false or text. `regex` reads the
answer as it is. An example with `"exact": true` turns normalisation off for its comparisons.
"""

from __future__ import annotations

import json
import re
import unicodedata
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


def _text(text: str, exact: bool = False) -> str:
    return text if exact else " ".join(text.casefold().split())


def _exact(sample: Sample) -> bool:
    return bool(sample.expectations.get("exact", False))


def canonical(value: Any, exact: bool = False) -> str:
    """`value` as one JSON text that is equal for values that compare equal: text normalised (see
    `_text`), a list as the sorted set of its items (as it is when `exact`), 2.0 as 2 (one number)."""
    return json.dumps(_canonical(value, exact), sort_keys=True, ensure_ascii=False)


def _canonical(value: Any, exact: bool) -> Any:
    if isinstance(value, str):
        return _text(value, exact)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        items = [_canonical(v, exact) for v in value]
        return items if exact else sorted({json.dumps(v, sort_keys=True, ensure_ascii=False) for v in items})
    if isinstance(value, dict):
        return {k: _canonical(v, exact) for k, v in value.items()}
    return value


def mismatches(expected: Mapping[str, Any], actual: Any, prefix: str = "", exact: bool = False) -> list[str]:
    """The fields of `expected` that `actual` gets wrong (dotted paths); nested objects compare only
    the fields they name, so an expectation can pin part of a larger reply. A missing field is
    null, unless `exact`."""
    if not isinstance(actual, Mapping):
        return [prefix.rstrip(".") or "(output)"]
    wrong = []
    for key, want in expected.items():
        got = actual.get(key)
        if isinstance(want, Mapping) and want:
            wrong += mismatches(want, got, f"{prefix}{key}.", exact)
        elif (exact and key not in actual) or canonical(got, exact) != canonical(want, exact):
            wrong.append(f"{prefix}{key}")
    return wrong


@scorer("exact_match", "expected", "`expected`: the answer, or each field it names, equals it (normalised)")
def exact_match(sample: Sample) -> Score:
    expected, exact = sample.expectations["expected"], _exact(sample)
    if isinstance(expected, Mapping):
        if not isinstance(sample.parsed, dict):
            return Score(False, detail="output is not a JSON object")
        wrong = mismatches(expected, sample.parsed, exact=exact)
        return Score(not wrong, detail=f"mismatch: {', '.join(wrong)}" if wrong else "")
    return Score(_text(answer_text(sample), exact) == _text(expected, exact))


@scorer("includes", "includes", "`includes`: each listed item is in the output's list of that field")
def includes(sample: Sample) -> Score:
    if not isinstance(sample.parsed, dict):
        return Score(False, detail="output is not a JSON object")
    exact = _exact(sample)
    missing = []
    for key, items in sample.expectations["includes"].items():
        got = sample.parsed.get(key)
        # The golden set lists text: an item that is not text is matched by its JSON text ("2", "true").
        have = (
            {_text(v if isinstance(v, str) else json.dumps(v), exact) for v in got} if isinstance(got, list) else set()
        )
        missing += [f"{key}: {item}" for item in items if _text(item, exact) not in have]
    return Score(not missing, detail=f"missing: {missing}" if missing else "")


@scorer("contains", "contains", "`contains`: every listed text occurs in the answer")
def contains(sample: Sample) -> Score:
    exact = _exact(sample)
    text = _text(answer_text(sample), exact)
    missing = [s for s in sample.expectations["contains"] if _text(s, exact) not in text]
    return Score(not missing, detail=f"missing: {missing}" if missing else "")


@scorer("not_contains", "not_contains", "`not_contains`: no listed text occurs in the answer")
def not_contains(sample: Sample) -> Score:
    exact = _exact(sample)
    text = _text(answer_text(sample), exact)
    found = [s for s in sample.expectations["not_contains"] if _text(s, exact) in text]
    return Score(not found, detail=f"found: {found}" if found else "")


@scorer("regex", "regex", "`regex`: the pattern matches the answer (as it is: case-sensitive)")
def regex(sample: Sample) -> Score:
    return Score(re.search(sample.expectations["regex"], answer_text(sample)) is not None)


@scorer("json_valid", None, "the answer is JSON (prompts with an output schema)")
def json_valid(sample: Sample) -> Score:
    return Score(sample.parsed is not None, detail="" if sample.parsed is not None else "not JSON")


@scorer("json_schema", None, "the answer matches the prompt's output schema and the example's `json_schema`")
def json_schema(sample: Sample) -> Score:
    import jsonschema

    if sample.parsed is None:
        return Score(False, detail="not JSON")
    # Both: an example's own schema narrows the prompt's, it never replaces it. `applicable` runs
    # this scorer only where there is one; an example's empty one ({}) accepts any JSON.
    schemas = {"output schema": sample.output_schema, "json_schema": sample.expectations.get("json_schema")}
    for name, schema in schemas.items():
        if schema is not None:
            validator = jsonschema.Draft202012Validator(schema)
            error = jsonschema.exceptions.best_match(validator.iter_errors(sample.parsed))
            if error is not None:
                return Score(False, detail=f"{name}: {error.message}")
    return Score(True)


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


# Numbers, email addresses and names are the facts a small model most often invents. Each is
# looked up whole among the facts of the same kind in the input, never as a substring: "3" is not
# in "30 days", "Ire" is not in "Ireland". Every pattern is linear-time (no nested repeats that can
# backtrack over the same text); the email's lookbehind starts a match only where a run of address
# characters starts, and its domain ends at a letter or digit, never at a sentence's full stop.
_EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
_GROUPED_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")  # 1,000 and 1,000.50: a comma groups thousands
_WORD_RE = re.compile(r"[^\W\d_]+")  # a run of letters, in any script


def _numbers(text: str) -> dict[str, str]:
    """Each number in `text` by its value (`"30"`, `"4.95"`, `"1000"`) -> as written. A comma groups
    thousands, a full stop is the decimal point; a token that is neither (a date, "1.2.3") is its
    digit runs. £30, 30% and 30-day are 30; 4.950 is 4.95; 01 is 1."""
    found: dict[str, str] = {}
    for written in _NUMBER_RE.findall(text):
        token = written if written.isascii() else "".join(str(unicodedata.decimal(c, c)) for c in written)  # ٣٠ is 30
        if _GROUPED_RE.fullmatch(token):
            parts = [token.replace(",", "")]
        elif "," not in token and token.count(".") <= 1:
            parts = [token]
        else:
            parts = re.findall(r"\d+", token)
        for part in parts:
            whole, _, fraction = part.partition(".")
            value = (whole.lstrip("0") or "0") + ("." + fraction.rstrip("0") if fraction.rstrip("0") else "")
            found.setdefault(value, written if len(parts) == 1 else part)
    return found


def _names(text: str) -> list[str]:
    """Capitalised words of two letters or more that do not start a sentence or a line: names,
    places, products ("Ireland", "Zoë", "UK")."""
    names, end = [], -1
    for match in _WORD_RE.finditer(text):
        gap = text[max(end, 0) : match.start()]
        starts = end < 0 or "\n" in gap or gap.rstrip().rstrip("\"')]\u201d\u2019").endswith((".", "!", "?", ":"))
        end = match.end()
        word = match.group()
        if not starts and len(word) > 1 and word[0].isupper():
            names.append(word)
    return names


def unsupported_facts(answer: str, context: str) -> list[str]:
    """Numbers, email addresses and names in `answer` (as written) that `context` lacks: compared
    whole, case-insensitively, after Unicode (NFKC) normalisation."""
    answer, context = unicodedata.normalize("NFKC", answer), unicodedata.normalize("NFKC", context)
    emails = {e.casefold() for e in _EMAIL_RE.findall(context)}
    numbers = set(_numbers(context))
    words = {w.casefold() for w in _WORD_RE.findall(context)}
    invented = {e for e in _EMAIL_RE.findall(answer) if e.casefold() not in emails}
    rest = _EMAIL_RE.sub(" ", answer)  # an address's parts are not facts of their own
    invented |= {written for value, written in _numbers(rest).items() if value not in numbers}
    invented |= {name for name in _names(rest) if name.casefold() not in words}
    return sorted(invented)


@scorer("grounded", "grounded", "`grounded`: no number, email address or name absent from the input")
def grounded(sample: Sample) -> Score:
    """Fails when the answer states a number, email address or name that the input does not contain
    (the input holds the context: a policy text, a customer message)."""
    context = " ".join(_leaves(dict(sample.input)))
    invented = unsupported_facts(answer_text(sample), context)
    return Score(not invented, detail=f"not in the input: {invented}" if invented else "")


def score_all(sample: Sample, names: list[str]) -> dict[str, Score]:
    return {name: SCORERS[name](sample) for name in names}
