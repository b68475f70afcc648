"""Each scorer on answers that must pass and answers that must fail; the statistics against scipy."""

import subprocess
import sys

import pytest

from {{ cookiecutter.package }}.evaluation import scorers
from {{ cookiecutter.package }}.evaluation.stats import percentile, wilson_interval


def sample(output, schema=None, latency_ms=100.0, inputs=None, **expectations):
    return scorers.Sample(
        expectations=expectations,
        input=inputs or {},
        output=output,
        parsed=scorers.parse_json(output) if schema is not None or output.lstrip().startswith("{") else None,
        output_schema=schema,
        latency_ms=latency_ms,
    )


def verdict(name, *args, **kwargs):
    return scorers.SCORERS[name](sample(*args, **kwargs)).passed


def test_exact_match_text_and_json_fields():
    assert verdict("exact_match", "  Order  Status ", expected="order status")
    assert not verdict("exact_match", "order statuses", expected="order status")
    assert verdict("exact_match", '{"intent": "Refund", "x": 1}', expected={"intent": "refund"})
    assert not verdict("exact_match", '{"intent": "account"}', expected={"intent": "refund"})
    assert not verdict("exact_match", "refund", expected={"intent": "refund"})  # not JSON at all


def test_contains_and_not_contains():
    assert verdict("contains", "Returns within 30 days.", contains=["30 DAYS", "returns"])
    assert not verdict("contains", "Returns within 14 days.", contains=["30"])
    assert verdict("not_contains", "I cannot share that.", not_contains=["password"])
    assert not verdict("not_contains", "Your Password is hunter2", not_contains=["password"])


def test_regex():
    assert verdict("regex", "order BH-10422 shipped", regex=r"BH-\d{5}")
    assert not verdict("regex", "order 10422 shipped", regex=r"BH-\d{5}")


def test_json_valid_and_json_schema():
    schema = {"type": "object", "properties": {"intent": {"enum": ["refund"]}}, "required": ["intent"]}
    assert verdict("json_valid", '{"a": 1}', schema=schema)
    assert not verdict("json_valid", "{'a': 1}", schema=schema)
    assert verdict("json_schema", '{"intent": "refund"}', schema=schema)
    result = scorers.json_schema(sample('{"intent": "other"}', schema=schema))
    assert not result.passed and "'other' is not one of" in result.detail
    # An example's own json_schema wins over the prompt's output schema.
    assert not verdict("json_schema", '{"intent": "refund"}', schema=schema, json_schema={"required": ["order_id"]})


def test_latency_budget():
    assert verdict("within_latency", "ok", latency_ms=250.0, max_latency_ms=300)
    assert not verdict("within_latency", "ok", latency_ms=301.0, max_latency_ms=300)


def test_bleu_uses_sacrebleu_with_its_threshold():
    import sacrebleu

    reference = "refunds are paid within five business days"
    close = scorers.bleu(sample("refunds are paid within five business days", reference=reference))
    assert close.passed and close.value == pytest.approx(100.0)
    far = scorers.bleu(sample("we will pass this to a colleague", reference=reference))
    assert not far.passed
    assert far.value == pytest.approx(sacrebleu.sentence_bleu("we will pass this to a colleague", [reference]).score)
    assert not scorers.bleu(sample("refunds are paid within five days", reference=reference, min_bleu=99)).passed


def test_rouge_l_uses_rouge_score_with_its_threshold():
    reference = "refunds are paid within five business days"
    good = scorers.rouge_l(sample("Refunds are paid within five days.", reference=reference))
    assert good.passed and 0.5 < good.value < 1.0
    assert not scorers.rouge_l(sample("ask a colleague", reference=reference)).passed
    assert not scorers.rouge_l(
        sample("Refunds are paid within five days.", reference=reference, min_rouge_l=0.95)
    ).passed


def test_grounded_flags_numbers_emails_and_names_absent_from_the_input():
    policy = {"policy": "Items can be returned within 30 days. Refunds take 5 business days.", "question": "How long?"}
    assert verdict("grounded", '{"answer": "You have 30 days to return it."}', schema={}, inputs=policy, grounded=True)
    result = scorers.grounded(
        sample(
            '{"answer": "You have 60 days; write to Maria at help@shop.example."}',
            schema={},
            inputs=policy,
            grounded=True,
        )
    )
    assert not result.passed
    assert "60" in result.detail and "Maria" in result.detail and "help@shop.example" in result.detail


def test_only_declared_expectations_are_scored():
    assert scorers.applicable({"expected": "x"}, None) == ["exact_match"]
    assert scorers.applicable({"contains": ["a"], "max_latency_ms": 5}, {"type": "object"}) == [
        "contains", "json_schema", "json_valid", "within_latency",
    ]  # fmt: skip
    assert scorers.applicable({"reference": "r", "grounded": True}, None) == ["bleu", "grounded", "rouge_l"]
    assert scorers.applicable({"includes": {"a": ["x"]}}, None) == ["includes"]


def test_every_scorer_says_what_it_checks():
    assert set(scorers.CHECKS) == set(scorers.SCORERS) and all(scorers.CHECKS.values())


def test_lists_compare_as_sets_of_normalised_items():
    reply = '{"sentiment": "Positive", "aspects": ["Battery life", "screen"]}'
    assert verdict("exact_match", reply, expected={"aspects": ["screen", "battery  life"]})  # order, case, spaces
    assert not verdict("exact_match", reply, expected={"aspects": ["screen"]})  # equality, not inclusion
    assert not verdict("exact_match", reply, expected={"aspects": ["screen", "battery"]})
    assert verdict("includes", reply, includes={"aspects": ["SCREEN"]})
    assert not verdict("includes", reply, includes={"aspects": ["price"]})
    missing = scorers.includes(sample(reply, includes={"aspects": ["price"], "tags": ["x"]}))
    assert missing.detail == "missing: ['aspects: price', 'tags: x']"
    assert verdict("contains", reply, contains=["battery life"])  # list items are part of the answer text


def test_nested_expectations_pin_only_the_fields_they_name():
    reply = '{"intent": "refund", "order": {"order_id": "BH-1", "email": null}, "reply": "ok"}'
    assert verdict("exact_match", reply, expected={"order": {"order_id": "bh-1"}})
    assert verdict("exact_match", reply, expected={"order": {"email": None}, "intent": "refund"})
    wrong = scorers.exact_match(sample(reply, expected={"order": {"order_id": "BH-2"}, "intent": "other"}))
    assert not wrong.passed and wrong.detail == "mismatch: order.order_id, intent"


def test_graded_scorer_libraries_are_imported_only_when_used():
    code = (
        "import sys; from {{ cookiecutter.package }}.evaluation import scorers, runner, metrics, report;"
        "print([m for m in ('sacrebleu', 'rouge_score', 'scipy', 'jsonschema') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("passes", "trials"), [(0, 10), (3, 10), (10, 10), (37, 38), (1, 1), (150, 200)])
def test_wilson_interval_equals_scipy(passes, trials):
    from scipy.stats import binomtest

    expected = binomtest(passes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(passes, trials)
    assert low == pytest.approx(expected.low, abs=1e-12) and high == pytest.approx(expected.high, abs=1e-12)


def test_percentile_matches_numpy_linear():
    import numpy

    values = [12.0, 3.5, 7.25, 100.0, 42.0, 8.0]
    for q in (0, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(float(numpy.percentile(values, q)))
    assert percentile([], 50) == 0.0
