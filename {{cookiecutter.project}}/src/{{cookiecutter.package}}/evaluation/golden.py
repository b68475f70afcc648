"""The golden set: one JSON object per line, validated before any model call.

An example targets one prompt (`"prompt": "<id>"`, its `input` the prompt's variables) or one flow of
the app (`"flow": "<name>"`, its `input` the request the service would get, scored on the reply the
service would send). A bad line is reported with its file, line number and field, and every bad
line is reported at once, so a reviewer fixes the file in one go. Duplicate ids are an error:
results are paired by id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import strict_json
from ..errors import QUOTE_CHARS, UserError, clip, key_path, quote, read_text, schema_message

_TEXTS = {"type": "array", "items": {"type": "string", "minLength": 1}}
EXAMPLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "input"],
    "oneOf": [{"required": ["prompt"]}, {"required": ["flow"]}],
    # A prompt's variables are text; a flow's request is whatever its own schema says.
    "if": {"required": ["prompt"]},
    "then": {"properties": {"input": {"additionalProperties": {"type": "string"}}}},
    "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]*$", "maxLength": 128},
        "prompt": {"type": "string", "minLength": 1},
        "flow": {"type": "string", "minLength": 1},
        "input": {"type": "object"},
        "expected": {"type": ["string", "object"]},
        "includes": {"type": "object", "additionalProperties": _TEXTS},
        "contains": _TEXTS,
        "not_contains": _TEXTS,
        "regex": {"type": "string", "minLength": 1},
        "json_schema": {"type": "object"},
        "reference": {"type": "string", "minLength": 1},
        "min_bleu": {"type": "number", "minimum": 0, "maximum": 100},
        "min_rouge_l": {"type": "number", "minimum": 0, "maximum": 1},
        "grounded": {"type": "boolean"},
        "exact": {"type": "boolean"},  # compare `expected`, `includes`, `contains` and `not_contains` as written
        "max_latency_ms": {"type": "number", "exclusiveMinimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
        "todo": {"type": "string"},
        # A rubric for the LLM judge (judge/rubric.py), in place of the prompt file's `judge`.
        "judge": {"type": "string", "pattern": "\\S"},
        # Where a harvested candidate came from (production/harvest.py): for the person labelling it,
        # never an expectation (a user's correction is a suggestion, not a verdict).
        "harvest": {"type": "object"},
    },
    # A score bar without the text to score against would be silently ignored.
    "dependentRequired": {"min_bleu": ["reference"], "min_rouge_l": ["reference"]},
}
NOT_EXPECTATIONS = ("id", "prompt", "flow", "input", "tags", "harvest")
EXACT_APPLIES_TO = ("expected", "includes", "contains", "not_contains")


class GoldenSetError(UserError):
    """The golden set has bad lines; the message lists each with its line number and field."""


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str | None  # the prompt this example calls, or None for a flow example
    input: Mapping[str, Any]
    expectations: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    flow: str | None = None  # the flow this example sends its input to

    @property
    def target(self) -> str:
        """`<prompt id>` or `flow:<name>`: what the example's results are labelled with."""
        return f"flow:{self.flow}" if self.flow else str(self.prompt)

    def to_json(self) -> dict[str, Any]:
        head: dict[str, Any] = {"id": self.id, **({"flow": self.flow} if self.flow else {"prompt": self.prompt})}
        return {**head, "input": dict(self.input), **self.expectations, "tags": list(self.tags)}


def parse_lines(lines: Iterable[str], source: str, unlabelled: list[str] | None = None) -> list[Example]:
    """Parse and validate every line; raise GoldenSetError listing every problem. With `unlabelled`, a
    line still marked `todo` (a harvested candidate awaiting its label) is set aside there, by id,
    instead of being an error."""
    import re

    import jsonschema

    validator = jsonschema.Draft202012Validator(EXAMPLE_SCHEMA)
    problems: list[str] = []
    examples: list[Example] = []
    first_line: dict[str, int] = {}
    set_aside = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            data = strict_json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except ValueError as exc:  # NaN, Infinity, 1e999, nesting too deep
            problems.append(f"{where}: not valid JSON ({clip(str(exc), 80)})")
            continue
        errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
        for error in errors:
            path = key_path(error.absolute_path)
            if error.validator == "oneOf" and not path:
                problems.append(f"{where}: needs exactly one of `prompt` (a prompt id) or `flow` (a flow of the app)")
            elif error.validator == "additionalProperties" and not path:
                problems.append(f"{where}: {schema_message(error)}")
            else:
                problems.append(f"{where}: {path or '(line)'}: {schema_message(error)}")
        if errors:
            continue
        if "todo" in data and unlabelled is not None:
            unlabelled.append(data["id"])
            set_aside += 1
            continue
        if "todo" in data:
            problems.append(f"{where}: todo: a stub to fill in ({clip(data['todo'], QUOTE_CHARS)}), then delete `todo`")
            continue
        if "regex" in data:
            try:
                re.compile(data["regex"])
            except re.error as exc:
                problems.append(f"{where}: regex: invalid pattern ({quote(str(exc))})")
                continue
        if "harvest" in data and set(data) <= set(NOT_EXPECTATIONS):
            # `todo` deleted but no label written: a prompt's output schema alone would still "check" it.
            problems.append(f"{where}: checks nothing: label the candidate (`expected`, `contains`, ...)")
            continue
        meaningless = _expectation_problems(data)
        if meaningless:
            problems += [f"{where}: {problem}" for problem in meaningless]
            continue
        if data["id"] in first_line:
            problems.append(f"{where}: id: duplicate id {data['id']!r} (first on line {first_line[data['id']]})")
            continue
        first_line[data["id"]] = number
        expectations = {k: v for k, v in data.items() if k not in NOT_EXPECTATIONS}
        examples.append(
            Example(
                data["id"],
                data.get("prompt"),
                data["input"],
                expectations,
                tuple(data.get("tags", [])),
                data.get("flow"),
            )
        )
    if problems:
        raise GoldenSetError(f"{len(problems)} problem(s) in {source}:\n" + "\n".join(problems))
    if not examples and not set_aside:
        raise GoldenSetError(f"{source}: no examples")
    return examples


def _expectation_problems(data: Mapping[str, Any]) -> list[str]:
    """What is wrong with a line's expectations beyond their types: an empty one (`"contains": []`)
    would pass, or fail, whatever the answer; a modifier with nothing to modify; a `json_schema`
    that is not a schema (it would fail mid-run, after the model calls)."""
    lists = {key: data[key] for key in ("contains", "not_contains") if key in data}
    lists |= {f"includes.{key}": texts for key, texts in data.get("includes", {}).items()}
    empty = [key for key in ("expected", "includes") if data.get(key) == {}]
    blank = []
    for path, texts in lists.items():
        empty += [] if texts else [path]
        blank += [f"{path}.{i}" for i, text in enumerate(texts) if not text.strip()]
    say = "so it checks nothing (say what to check, or remove it)"
    problems = [f"{path}: empty, {say}" for path in empty] + [f"{path}: blank text, {say}" for path in blank]
    if data.get("grounded") is False:
        problems.append("grounded: false checks nothing (remove it)")
    if "exact" in data and not any(key in data for key in EXACT_APPLIES_TO):
        problems.append(
            f"exact: applies to {', '.join(EXACT_APPLIES_TO[:-1])} and {EXACT_APPLIES_TO[-1]}; this example has none"
        )
    if "json_schema" in data:
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(data["json_schema"])
        except jsonschema.SchemaError as exc:
            problems.append(f"json_schema: not a valid JSON Schema ({schema_message(exc)})")
    return problems


def load(path: Path, unlabelled: list[str] | None = None) -> list[Example]:
    # Lines end at "\n" only: str.splitlines() also splits at U+2028 and other separators that are
    # valid inside a JSON string, and would then misnumber every later line.
    return parse_lines(read_text(path, GoldenSetError).split("\n"), str(path), unlabelled)


def check_targets(
    examples: Iterable[Example], prompts: Mapping[str, Any], flows: Mapping[str, Any], source: str
) -> None:
    """Each example names an existing prompt and gives exactly its variables (as text), or names a
    flow of the app and gives a request its schema accepts."""
    from .scorers import applicable

    problems = []
    for example in examples:
        # An example with nothing to score would count as a pass whatever the answer. A rubric alone
        # is not a check: its verdicts count only once calibrated (judge/calibration.py), and never
        # while the judge is off.
        checks_nothing = f"{source}: {example.id}: checks nothing" + (
            ": its judge rubric counts only once calibrated; add a check of its own (`contains`, `regex`, ...)"
            if "judge" in example.expectations
            else ": say what a good answer is (`expected`, `contains`, ...)"
        )
        if example.flow is not None:
            problems += _flow_problems(example, example.flow, flows, source)
            problems += [] if applicable(example.expectations, None) else [checks_nothing]
            continue
        prompt = prompts.get(str(example.prompt))
        if prompt is None:
            problems.append(
                f"{source}: {example.id}: prompt: no template {quote(example.prompt)} (have: {', '.join(sorted(prompts))})"
            )
            continue
        missing = sorted(set(prompt.variables) - set(example.input))
        extra = sorted(set(example.input) - set(prompt.variables))
        if missing:
            problems.append(
                f"{source}: {example.id}: input: missing variable(s) {', '.join(missing)} of {example.prompt}"
            )
        if extra:
            problems.append(
                f"{source}: {example.id}: input: variable(s) {', '.join(extra)} not declared by {example.prompt}"
            )
        if not applicable(example.expectations, prompt.output_schema):
            problems.append(checks_nothing)
    if problems:
        raise GoldenSetError("\n".join(problems))


def _flow_problems(example: Example, name: str, flows: Mapping[str, Any], source: str) -> list[str]:
    flow = flows.get(name)
    if flow is None:
        have = ", ".join(sorted(flows)) or "none: set app.entry in params.yaml"
        return [f"{source}: {example.id}: flow: the app has no flow {quote(name)} (have: {have})"]
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(flow.request).iter_errors(example.input))
    if error is None:
        return []
    path = key_path(("input", *error.absolute_path))
    return [f"{source}: {example.id}: {path}: {schema_message(error)} (the {name!r} flow's request schema)"]
