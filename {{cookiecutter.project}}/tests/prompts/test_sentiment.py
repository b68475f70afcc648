"""prompts/sentiment.yaml: it renders, its golden examples fit its schema, and a model giving the
expected answers passes them while a wrong one fails. Written by `{{ cookiecutter.project }} new prompt sentiment`:
add the checks this prompt needs."""

from {{ cookiecutter.package }}.testing.prompt_checks import check_golden_examples, check_renders, check_scoring

PROMPT = "sentiment"


def test_renders_with_its_variables():
    check_renders(PROMPT)


def test_has_golden_examples_that_fit_its_schema():
    check_golden_examples(PROMPT)


def test_expected_answers_pass_and_wrong_ones_fail():
    check_scoring(PROMPT)
