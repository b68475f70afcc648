"""`<project> new prompt NAME`: a new feature starts as three files that describe it, nothing else.

    prompts/NAME.yaml            the template: variables, messages, an output schema (--fields / --lists)
    eval/golden.jsonl            three stub examples appended; `preprocess` refuses them until filled in
    tests/prompts/test_NAME.py   its test: it renders, its golden examples fit its schema, and a model
                                 that gives the expected answers passes them while a wrong one fails

Nothing is overwritten: an existing prompt or test of that name is one clear line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from .. import PACKAGE, PROJECT
from ..errors import UserError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
STUBS = 3


def prompt_yaml(name: str, variables: list[str], fields: list[str], lists: list[str]) -> str:
    user = "\n".join(f"{v}: {{{v}}}" for v in variables) if len(variables) > 1 else f"{{{variables[0]}}}"
    lines = [
        f"id: {name}",
        f"description: TODO one line on what {name} does for the user.",
        "notes: Written by `new prompt`; say here why the last change was made.",
        f"variables: [{', '.join(variables)}]",
        "messages:",
        "  - role: system",
        "    content: |",
        f"      TODO: tell the model what {name} does, the labels it may use and the shape of its answer.",
        *(["      Reply with JSON only."] if fields or lists else []),
        "  - role: user",
        f"    content: {json.dumps(user)}",
    ]
    if fields or lists:
        props = [f"    {f}: {{type: string}}" for f in fields]
        props += [f"    {f}: {{type: array, items: {{type: string}}}}" for f in lists]
        lines += [
            "output_schema:",
            "  type: object",
            "  additionalProperties: false  # required by OpenAI's strict structured outputs",
            "  properties:",
            *props,
            f"  required: [{', '.join(fields + lists)}]",
        ]
    return "\n".join(lines) + "\n"


def stubs(name: str, variables: list[str], fields: list[str], lists: list[str]) -> list[dict]:
    expected: dict | str = (
        {**{f: "TODO" for f in fields}, **{f: ["TODO"] for f in lists}} if fields or lists else "TODO"
    )
    return [
        {
            "id": f"{name}-{n:02}",
            "prompt": name,
            "input": {v: "TODO" for v in variables},
            "expected": expected,
            "tags": [name],
            "todo": "write a real input and the answer you expect",
        }
        for n in range(1, STUBS + 1)
    ]


def test_source(name: str) -> str:
    return f'''"""prompts/{name}.yaml: it renders, its golden examples fit its schema, and a model giving the
expected answers passes them while a wrong one fails. Written by `{PROJECT} new prompt {name}`:
add the checks this prompt needs."""

from {PACKAGE}.testing.prompt_checks import check_golden_examples, check_renders, check_scoring

PROMPT = "{name}"


def test_renders_with_its_variables():
    check_renders(PROMPT)


def test_has_golden_examples_that_fit_its_schema():
    check_golden_examples(PROMPT)


def test_expected_answers_pass_and_wrong_ones_fail():
    check_scoring(PROMPT)
'''


def _names(text: str | None, what: str) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    for n in names:
        if not n.isidentifier():
            raise UserError(f"--{what}: {n!r} is not a valid name (letters, digits, _)")
    return names


def create(root: Path, name: str, variables: list[str], fields: list[str], lists: list[str]) -> list[Path]:
    """Write the prompt, append its golden stubs, write its test; returns the paths touched."""
    if not NAME_RE.match(name):
        raise UserError(f"NAME: {name!r} must be lower case letters, digits and _ (a prompt id), e.g. review_insights")
    if set(fields) & set(lists):
        raise UserError(f"--fields and --lists share {', '.join(sorted(set(fields) & set(lists)))}")
    prompt = root / "prompts" / f"{name}.yaml"
    test = root / "tests" / "prompts" / f"test_{name}.py"
    golden = root / "eval" / "golden.jsonl"
    for path in (prompt, test):
        if path.exists():
            raise UserError(f"{path}: already exists; nothing written")
    if not golden.parent.is_dir() or not (root / "prompts").is_dir():
        raise UserError(f"{root}: no prompts/ or eval/ here: run `new prompt` at the project's root")
    prompt.write_text(prompt_yaml(name, variables, fields, lists))
    existing = golden.read_text() if golden.exists() else ""
    lines = "".join(json.dumps(stub) + "\n" for stub in stubs(name, variables, fields, lists))
    golden.write_text(existing + ("" if not existing or existing.endswith("\n") else "\n") + lines)
    test.parent.mkdir(parents=True, exist_ok=True)
    test.write_text(test_source(name))
    return [prompt, golden, test]


def main(argv: list[str] | None = None, prog: str = "new") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    new_prompt = sub.add_parser("prompt", help="a prompt template, golden-example stubs and their test")
    new_prompt.add_argument("name", help="the prompt id, e.g. review_insights")
    new_prompt.add_argument("--variables", default="text", help="comma-separated variable names (default: text)")
    new_prompt.add_argument("--fields", help="comma-separated text fields of a JSON answer")
    new_prompt.add_argument("--lists", help="comma-separated list-of-text fields of a JSON answer")
    args = parser.parse_args(argv)
    variables = _names(args.variables, "variables") or ["text"]
    paths = create(Path("."), args.name, variables, _names(args.fields, "fields"), _names(args.lists, "lists"))
    for path in paths:
        print(f"wrote {path}")
    print(f"next: fill in prompts/{args.name}.yaml and the `todo` examples in eval/golden.jsonl, then `make repro`")
    return 0
