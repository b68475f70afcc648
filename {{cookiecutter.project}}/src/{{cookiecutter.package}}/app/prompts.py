"""Prompt templates as data: load, validate against prompts/schema.json, render strictly, hash.

A template is a YAML file in prompts/. Placeholders are `{name}`; a literal brace is written `{{`
or `}}`. Rendering never guesses: a missing variable, an undeclared placeholder, a stray brace or
an empty message is a `PromptError` naming the template, the message and the variable. The content
hash of everything that changes model behaviour is the template's version: it appears in results,
keys the response cache and names the version in the registry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError, clip, key_path, quote, read_text, schema_message

PROMPTS_DIR = Path("prompts")
SCHEMA_FILE = "schema.json"
_FORMATTER = string.Formatter()


class PromptError(UserError):
    """A template that cannot be loaded or rendered; the message says which one and where."""


@dataclass(frozen=True)
class Prompt:
    id: str
    description: str
    variables: tuple[str, ...]
    messages: tuple[Mapping[str, str], ...]
    output_schema: Mapping[str, Any] | None
    examples: tuple[Mapping[str, Any], ...]
    source: str
    judge: str = ""  # the LLM judge's rubric for its answers; not sent to the model, so not in `version`

    @functools.cached_property
    def version(self) -> str:
        """Content hash (12 hex) of everything that reaches the model; computed once (the service
        names it on every call's span and every response)."""
        return content_hash(self)

    def render(self, variables: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat messages with variables filled in; few-shot examples come before the user turn."""
        missing = [v for v in self.variables if v not in variables]
        if missing:
            raise PromptError(f"{self.id}: missing variable(s) {', '.join(missing)}")
        extra = sorted(set(variables) - set(self.variables))
        if extra:
            raise PromptError(f"{self.id}: undeclared variable(s) {', '.join(extra)}")
        rendered = []
        for i, message in enumerate(self.messages):
            content = _fill(message["content"], variables, f"{self.id}: messages[{i}] ({message['role']})")
            if not content.strip():
                raise PromptError(f"{self.id}: messages[{i}] ({message['role']}) renders empty")
            rendered.append({"role": message["role"], "content": content})
        return _with_examples(rendered, self.examples)


def _with_examples(messages: list[dict[str, str]], examples: tuple[Mapping[str, Any], ...]) -> list[dict[str, str]]:
    if not examples:
        return messages
    shots = []
    for example in examples:
        shots.append({"role": "user", "content": str(example["user"])})
        shots.append({"role": "assistant", "content": _as_text(example["assistant"])})
    # Few-shot turns go after the system message(s) and before the real user turn.
    head = [m for m in messages if m["role"] == "system"]
    tail = [m for m in messages if m["role"] != "system"]
    return head + shots + tail


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def placeholders(text: str, where: str) -> list[str]:
    """Placeholder names in `text`; a stray brace or a format spec is an error naming `where`."""
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise PromptError(f"{where}: {exc} (write a literal brace as '{{{{' or '}}}}')") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise PromptError(
                f"{where}: placeholder {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} must be a plain {{name}}"
            )
        names.append(name)
    return names


def _fill(text: str, variables: Mapping[str, Any], where: str) -> str:
    for name in placeholders(text, where):
        if name not in variables:
            raise PromptError(f"{where}: placeholder {{{name}}} is not a declared variable")
    return text.format_map({k: v for k, v in variables.items()})


def content_hash(prompt: Prompt) -> str:
    payload = {
        "messages": [dict(m) for m in prompt.messages],
        "variables": list(prompt.variables),
        "output_schema": prompt.output_schema,
        "examples": [dict(e) for e in prompt.examples],
    }
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_schema(prompts_dir: Path = PROMPTS_DIR) -> dict[str, Any]:
    path = prompts_dir / SCHEMA_FILE
    try:
        return json.loads(read_text(path, PromptError))
    except ValueError as exc:
        raise PromptError(f"{path}: not valid JSON ({clip(str(exc))})") from None


def problems_in(data: Any, source: str, schema: Mapping[str, Any]) -> list[str]:
    """Every problem with one template's data: schema errors first, then placeholder checks."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    found = [
        f"{source}: {key_path(e.absolute_path) or '(top level)'}: {schema_message(e)}"
        for e in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if found:
        return found
    if data.get("output_schema") is not None:
        found += output_schema_problems(data["output_schema"], data.get("examples", []), source)
    declared = set(data["variables"])
    used: set[str] = set()
    for i, message in enumerate(data["messages"]):
        where = f"{source}: messages[{i}] ({message['role']})"
        if not message["content"].strip():
            found.append(f"{where}: message is empty")
        try:
            names = placeholders(message["content"], where)
        except PromptError as exc:
            found.append(str(exc))
            continue
        for name in names:
            if name not in declared:
                found.append(f"{where}: placeholder {{{name}}} is not a declared variable")
        used.update(names)
    for name in sorted(declared - used):
        found.append(f"{source}: variables: {name!r} is declared but no message uses it")
    if Path(source).stem != data["id"]:
        found.append(f"{source}: id: {quote(data['id'])} must match the file name {quote(Path(source).stem)}")
    return found


def output_schema_problems(schema: Mapping[str, Any], examples: list[Any], source: str) -> list[str]:
    """The output schema must be a valid JSON Schema (a typo such as `type: objekt` would otherwise
    surface only after the model calls), and every few-shot answer must match it: a few-shot that
    answers outside the schema teaches the model an answer it is then refused."""
    import jsonschema
    from referencing.exceptions import Unresolvable

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = key_path(("output_schema", *exc.absolute_path))
        return [f"{source}: {path}: not a valid JSON Schema ({schema_message(exc)})"]
    validator = jsonschema.Draft202012Validator(schema)
    found = []
    for i, example in enumerate(examples):
        where = f"{source}: examples[{i}]"
        answer = example["assistant"]
        if isinstance(answer, str):
            try:
                answer = json.loads(answer)
            except ValueError:
                found.append(f"{where}.assistant: not JSON, but the prompt has an output_schema")
                continue
        try:
            errors = sorted(validator.iter_errors(answer), key=lambda e: list(map(str, e.absolute_path)))
        except Unresolvable as exc:
            return [f"{source}: output_schema: a $ref that cannot be resolved ({clip(str(exc))})"]
        for error in errors:
            field = key_path(("assistant", *error.absolute_path))
            found.append(f"{where}.{field}: {schema_message(error)} (the output_schema)")
    return found


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(read_text(path, PromptError))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise PromptError(f"{where}: invalid YAML ({clip(str(getattr(exc, 'problem', exc)))})") from None


def check_all(prompts_dir: Path = PROMPTS_DIR) -> list[str]:
    """Every problem in every template under `prompts_dir` (empty list = all good)."""
    if not prompts_dir.is_dir():
        return [f"{prompts_dir}: no such directory of prompt templates"]
    try:
        schema = load_schema(prompts_dir)
    except PromptError as exc:
        return [str(exc)]
    found: list[str] = []
    files = sorted(prompts_dir.glob("*.yaml"))
    if not files:
        return [f"{prompts_dir}: no templates (*.yaml) found"]
    for path in files:
        try:
            found += problems_in(_read(path), str(path), schema)
        except PromptError as exc:
            found.append(str(exc))
    return found


def load_all(prompts_dir: Path = PROMPTS_DIR) -> dict[str, Prompt]:
    """All templates by id; raises PromptError listing every problem if any template is bad."""
    found = check_all(prompts_dir)
    if found:
        raise PromptError("\n".join(found))
    prompts = {}
    for path in sorted(prompts_dir.glob("*.yaml")):
        data = _read(path)
        prompts[data["id"]] = Prompt(
            id=data["id"],
            description=data.get("description", ""),
            variables=tuple(data["variables"]),
            messages=tuple(dict(m) for m in data["messages"]),
            output_schema=data.get("output_schema"),
            examples=tuple(data.get("examples", [])),
            source=str(path),
            judge=data.get("judge", ""),
        )
    return prompts


def main(argv: list[str] | None = None, prog: str = "prompts") -> int:
    """`prompts check`: validate every template, list every problem, exit 1 if any."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description="Prompt templates as code.")
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="validate all templates; exit 1 listing every problem")
    check.add_argument("--dir", type=Path, default=PROMPTS_DIR)
    show = sub.add_parser("list", help="print each template's id and version")
    show.add_argument("--dir", type=Path, default=PROMPTS_DIR)
    args = parser.parse_args(argv)
    if args.action == "check":
        found = check_all(args.dir)
        for problem in found:
            print(problem)
        print(f"{len(found)} problem(s) in {args.dir}" if found else f"prompts OK ({args.dir})")
        return 1 if found else 0
    for prompt in load_all(args.dir).values():
        print(f"{prompt.id}\t{prompt.version}\t{prompt.description}")
    return 0
