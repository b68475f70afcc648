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

from ..errors import QUOTE_CHARS, UserError, clip, quote, read_text, schema_message

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
        "max_latency_ms": {"type": "number", "exclusiveMinimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
        "todo": {"type": "string"},
    },
    # A score bar without the text to score against would be silently ignored.
    "dependentRequired": {"min_bleu": ["reference"], "min_rouge_l": ["reference"]},
}
NOT_EXPECTATIONS = ("id", "prompt", "flow", "input", "tags")


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


def parse_lines(lines: Iterable[str], source: str) -> list[Example]:
    """Parse and validate every line; raise GoldenSetError listing every problem."""
    import re

    import jsonschema

    validator = jsonschema.Draft202012Validator(EXAMPLE_SCHEMA)
    problems: list[str] = []
    examples: list[Example] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
        for error in errors:
            path = ".".join(map(str, error.absolute_path))
            if error.validator == "oneOf" and not path:
                problems.append(f"{where}: needs exactly one of `prompt` (a prompt id) or `flow` (a flow of the app)")
            elif error.validator == "additionalProperties" and not path:
                problems.append(f"{where}: {schema_message(error)}")
            else:
                problems.append(f"{where}: {path or '(line)'}: {schema_message(error)}")
        if errors:
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
    if not examples:
        raise GoldenSetError(f"{source}: no examples")
    return examples


def load(path: Path) -> list[Example]:
    # Lines end at "\n" only: str.splitlines() also splits at U+2028 and other separators that are
    # valid inside a JSON string, and would then misnumber every later line.
    return parse_lines(read_text(path, GoldenSetError).split("\n"), str(path))


def check_targets(
    examples: Iterable[Example], prompts: Mapping[str, Any], flows: Mapping[str, Any], source: str
) -> None:
    """Each example names an existing prompt and gives exactly its variables (as text), or names a
    flow of the app and gives a request its schema accepts."""
    problems = []
    for example in examples:
        if example.flow is not None:
            problems += _flow_problems(example, example.flow, flows, source)
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
    path = ".".join(map(str, ("input", *error.absolute_path)))
    return [f"{source}: {example.id}: {path}: {schema_message(error)} (the {name!r} flow's request schema)"]
