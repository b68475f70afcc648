import dataclasses

import pytest

from {{ cookiecutter.package }}.app.prompts import PROMPTS_DIR, PromptError, check_all, load_all, main, placeholders
from {{ cookiecutter.package }}.cli import main as cli
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

# Braces below are test data, not cookiecutter variables.{% raw %}


def test_every_shipped_template_is_valid():
    assert check_all(PROMPTS_DIR) == []


def test_every_template_renders_with_its_declared_variables():
    for prompt in load_all().values():
        messages = prompt.render({name: f"<{name}>" for name in prompt.variables})
        assert messages[-1]["role"] == "user"
        for name in prompt.variables:
            assert any(f"<{name}>" in m["content"] for m in messages), (prompt.id, name)


def test_version_is_a_content_hash(toy_project):
    prompt = load_all()["echo"]
    assert len(prompt.version) == 12
    changed = dataclasses.replace(prompt, messages=({"role": "system", "content": "x"}, *prompt.messages[1:]))
    assert changed.version != prompt.version
    same_but_described = dataclasses.replace(prompt, description="other words")
    assert same_but_described.version == prompt.version


def test_render_rejects_missing_and_undeclared_variables(toy_project):
    prompt = load_all()["label"]
    with pytest.raises(PromptError, match="label: missing variable"):
        prompt.render({})
    with pytest.raises(PromptError, match="undeclared variable"):
        prompt.render({"text": "hi", "extra": "x"})


def test_values_with_braces_are_inserted_literally(toy_project):
    prompt = load_all()["echo"]
    messages = prompt.render({"text": "my order {id} is {{late}}"})
    assert messages[-1]["content"] == "my order {id} is {{late}}"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("Hello {name", "expected '}'"),
        ("Hello name}", "Single '}'"),
        ("Hello {name:>10}", "must be a plain"),
        ("Hello {other}", "is not a declared variable"),
        ("   ", "message is empty"),
    ],
)
def test_check_names_template_message_and_problem(project, content, problem):
    path = project / "prompts" / "broken.yaml"
    path.write_text(
        "id: broken\ndescription: d\nvariables: [name]\nmessages:\n"
        f"  - role: system\n    content: 'fixed {{name}}'\n  - role: user\n    content: '{content}'\n"
    )
    problems = [p for p in check_all(PROMPTS_DIR) if "broken.yaml" in p]
    assert problems, "the broken template must be reported"
    assert any("messages[1] (user)" in p and problem in p for p in problems), problems


def test_check_lists_every_problem_and_exits_1(project, capsys):
    (project / "prompts" / "a.yaml").write_text(
        "id: a\ndescription: d\nvariables: [x, unused]\nmessages:\n  - {role: user, content: '{x}'}\n"
    )
    (project / "prompts" / "b.yaml").write_text("id: b\nmessages: []\n")
    assert main(["check", "--dir", str(project / "prompts")]) == 1
    out = capsys.readouterr().out
    assert "'unused' is declared but no message uses it" in out
    assert "b.yaml: (top level): 'description' is a required property" in out
    assert "b.yaml: messages: [] should be non-empty" in out


def _label_prompt(toy_project, **changes):
    import yaml

    path = toy_project / "prompts" / "label.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return data


def test_an_output_schema_that_is_not_a_json_schema_is_a_problem(toy_project):
    schema = _label_prompt(toy_project)["output_schema"]
    _label_prompt(toy_project, output_schema={**schema, "type": "objekt"})
    assert check_all(PROMPTS_DIR) == [
        "prompts/label.yaml: output_schema.type: not a valid JSON Schema "
        "('objekt' is not valid under any of the given schemas)"
    ]
    nested = {**schema, "properties": {"label": {"type": "string", "enum": "good"}}}
    _label_prompt(toy_project, output_schema=nested)
    (problem,) = check_all(PROMPTS_DIR)
    assert problem.startswith("prompts/label.yaml: output_schema.properties.label.enum: not a valid JSON Schema")


def test_few_shot_answers_must_match_the_output_schema(toy_project):
    shots = [
        {"user": "Lovely!", "assistant": {"label": "good"}},
        {"user": "Meh.", "assistant": {"label": "meh"}},
        {"user": "Awful.", "assistant": '{"label": "bad", "why": "rude"}'},
        {"user": "Fine.", "assistant": "good"},
    ]
    _label_prompt(toy_project, examples=shots)
    assert check_all(PROMPTS_DIR) == [
        "prompts/label.yaml: examples[1].assistant.label: 'meh' is not one of ['good', 'bad'] (the output_schema)",
        "prompts/label.yaml: examples[2].assistant: Additional properties are not allowed ('why' was unexpected)"
        " (the output_schema)",
        "prompts/label.yaml: examples[3].assistant: not JSON, but the prompt has an output_schema",
    ]


def test_a_label_dropped_from_the_enum_fails_the_few_shot_that_answers_it(project):
    """The shipped prompts: remove a label a few-shot answers from its enum, and `prompts check` says so."""
    import yaml

    for path in sorted((project / "prompts").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        properties = (data.get("output_schema") or {}).get("properties") or {}
        for shot in data.get("examples", []):
            answer = shot["assistant"]
            field = next(
                (f for f in properties if "enum" in properties[f] and isinstance(answer, dict) and f in answer), None
            )
            if field is None:
                continue
            label = answer[field]
            properties[field]["enum"].remove(label)
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            assert main(["check", "--dir", "prompts"]) == 1
            problems = [p for p in check_all(PROMPTS_DIR) if p.startswith(f"prompts/{path.name}: examples[")]
            assert problems and all(f".assistant.{field}: {label!r} is not one of" in p for p in problems), problems
            return
    pytest.skip("no shipped prompt has an enum that a few-shot answers")


def test_evaluate_stops_on_a_broken_output_schema_before_any_model_call(toy_project, capsys):
    import json

    schema = _label_prompt(toy_project)["output_schema"]
    _label_prompt(toy_project, output_schema={**schema, "type": "objekt"})
    golden = toy_project / "eval" / "golden.jsonl"
    golden.parent.mkdir()
    golden.write_text(
        json.dumps({"id": "a", "prompt": "label", "input": {"text": "good"}, "expected": {"label": "good"}})
    )
    with FakeModel() as model:
        params = (toy_project / "params.yaml").read_text().replace("http://127.0.0.1:9/v1", model.base_url)
        (toy_project / "params.yaml").write_text(params)
        assert cli(["evaluate", "--eval-set", str(golden)]) == 2
        assert model.calls() == 0
    err = capsys.readouterr().err
    assert "prompts/label.yaml: output_schema.type: not a valid JSON Schema" in err and "Traceback" not in err


def test_placeholders_ignores_escaped_braces():
    assert placeholders("{{literal}} and {real}", "t") == ["real"]


# {% endraw %}(end of the test data)
