"""Checks every prompt's own test calls (`new prompt` writes such a test): the template renders,
its golden examples fit its output schema, and the golden set can tell a right model from a wrong
one - judged by the real harness against the fake model over HTTP.

They read the project's files from the working directory (pytest runs at the project root).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ..app.contract import App
from ..app.prompts import Prompt, load_all
from ..evaluation import golden, runner
from ..evaluation.cache import ResponseCache
from .fake_model import FakeModel, golden_answers

GOLDEN = Path("eval/golden.jsonl")


def prompt(name: str) -> Prompt:
    prompts = load_all()
    assert name in prompts, f"no prompts/{name}.yaml"
    return prompts[name]


def examples_of(name: str) -> list[golden.Example]:
    return [e for e in golden.load(GOLDEN) if e.prompt == name]


def check_renders(name: str) -> None:
    """Every declared variable reaches the messages, and the user's turn comes last."""
    template = prompt(name)
    messages = template.render({v: f"<{v}>" for v in template.variables})
    assert messages[-1]["role"] == "user"
    for variable in template.variables:
        assert any(f"<{variable}>" in m["content"] for m in messages), f"{name}: {variable} is not used"


def check_golden_examples(name: str) -> None:
    """At least one example; each gives exactly the prompt's variables, and an `expected` object
    names only fields of the output schema with values it allows."""
    import jsonschema

    template = prompt(name)
    examples = examples_of(name)
    assert examples, f"no golden examples for {name} in {GOLDEN}"
    golden.check_targets(examples, {name: template}, {}, str(GOLDEN))
    schema = template.output_schema
    for example in examples:
        expected = example.expectations.get("expected")
        if schema is None or not isinstance(expected, dict):
            continue
        properties = schema.get("properties", {})
        unknown = sorted(set(expected) - set(properties))
        assert not unknown, f"{example.id}: expected names {unknown}, not in the output schema of {name}"
        for field, value in expected.items():
            errors = list(jsonschema.Draft202012Validator(properties[field]).iter_errors(value))
            assert not errors, (
                f"{example.id}: expected.{field} = {value!r} breaks the output schema: {errors[0].message}"
            )


def evaluate(name: str, wrong: dict[str, str] | None = None) -> dict[str, bool | None]:
    """id -> passed, for the prompt's golden examples, against the fake model giving their answers."""
    examples = examples_of(name)
    with FakeModel(golden_answers(GOLDEN, wrong)) as model, tempfile.TemporaryDirectory() as tmp:
        from ..app.client import ChatClient

        client = ChatClient(model.base_url, "fake")
        evaluation = runner.Evaluation(
            solver=runner.app_solver(load_all(), App(name="checks"), None),
            cache=ResponseCache(tmp, enabled=False),
            keying=runner.Keying("fake", "fake", {}),
        )
        outcome = runner.run(
            runner.plan(examples, 1), evaluation, lambda m, s: client.chat(m, schema=s), concurrency=4,
            max_error_rate=0.0,
        )  # fmt: skip
        client.close()
    return {r.id: r.passed for r in outcome.results}


def check_scoring(name: str) -> None:
    """A model giving the expected answers passes every example; one answering nonsense passes none."""
    right = evaluate(name)
    assert right and all(right.values()), f"the expected answers fail: {[i for i, ok in right.items() if not ok]}"
    nonsense: dict[str, Any] = {e.id: json.dumps({"nonsense": True}) for e in examples_of(name)}
    wrong = evaluate(name, nonsense)
    assert not any(wrong.values()), f"a wrong answer passes: {[i for i, ok in wrong.items() if ok]}"
