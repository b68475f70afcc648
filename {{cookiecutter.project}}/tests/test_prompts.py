import pytest

from {{ cookiecutter.package }}.app.prompts import PROMPTS_DIR, PromptError, check_all, load_all, main, placeholders

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
    changed = type(prompt)(
        **{**prompt.__dict__, "messages": ({"role": "system", "content": "x"}, *prompt.messages[1:])}
    )
    assert changed.version != prompt.version
    same_but_described = type(prompt)(**{**prompt.__dict__, "description": "other words"})
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
    problems = [p for p in check_all(project / "prompts") if "broken.yaml" in p]
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


def test_placeholders_ignores_escaped_braces():
    assert placeholders("{{literal}} and {real}", "t") == ["real"]


# {% endraw %}(end of the test data)
