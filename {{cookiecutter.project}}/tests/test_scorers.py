"""Each scorer on answers that must pass and answers that must fail; the statistics against scipy."""

import subprocess
import sys

import pytest

from {{ cookiecutter.package }}.app.client import Completion
from {{ cookiecutter.package }}.app.prompts import Prompt
from {{ cookiecutter.package }}.app.runtime import Caller
from {{ cookiecutter.package }}.evaluation import scorers
from {{ cookiecutter.package }}.evaluation.stats import percentile, wilson_interval

JSON_PROMPT = Prompt("p", "", (), ({"role": "user", "content": "hi"},), {}, (), "test")


def parsed(output):
    """`output` as the model's reply, parsed as the eval and the service parse it (runtime.Caller)."""
    return Caller({"p": JSON_PROMPT}, lambda messages, schema: Completion(output, 1, 1, 1.0, 1))("p", {}).data


def sample(output, schema=None, latency_ms=100.0, inputs=None, **expectations):
    return scorers.Sample(
        expectations=expectations,
        input=inputs or {},
        output=output,
        parsed=parsed(output) if schema is not None or output.lstrip().startswith(("{", "[")) else None,
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
    # An example's own json_schema is checked as well as the prompt's output schema.
    assert not verdict("json_schema", '{"intent": "refund"}', schema=schema, json_schema={"required": ["order_id"]})


def test_an_examples_json_schema_does_not_replace_the_prompts_output_schema():
    schema = {"type": "object", "properties": {"intent": {"enum": ["refund"]}}, "required": ["intent"]}
    own = {"required": ["order_id"]}
    broken = scorers.json_schema(sample('{"intent": "other", "order_id": "BH-1"}', schema=schema, json_schema=own))
    assert not broken.passed and broken.detail == "output schema: 'other' is not one of ['refund']"
    short = scorers.json_schema(sample('{"intent": "refund"}', schema=schema, json_schema=own))
    assert not short.passed and short.detail == "json_schema: 'order_id' is a required property"
    assert verdict("json_schema", '{"intent": "refund", "order_id": "BH-1"}', schema=schema, json_schema=own)
    # A flow has no output schema: its example's json_schema alone; an empty one accepts any JSON.
    assert verdict("json_schema", '{"order_id": "BH-1"}', json_schema=own)
    assert verdict("json_schema", "[1]", json_schema={})


@pytest.mark.parametrize(
    "text",
    [
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": -Infinity}',
        "[1, -Infinity]",
        '{"a": 1e999}',
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=["nan", "infinity", "-infinity", "in-a-list", "overflows-a-float", "nested-100000-deep"],
)
def test_json_valid_takes_only_json_that_can_be_sent_on_as_json(text):
    # Python's json.loads takes NaN and Infinity (not JSON), turns 1e999 into infinity and raises
    # RecursionError on deep nesting: the eval would pass it, the service could not send it on.
    assert parsed(text) is None
    assert not verdict("json_valid", text, schema={})
    assert verdict("json_valid", '{"a": 1e308, "b": -0.5, "c": [null, true]}', schema={})


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
    assert result.detail == "not in the input: ['60', 'Maria', 'help@shop.example']"  # no full stop


POLICY = (
    "Items can be returned within 30 days. Shipping costs £4.95; orders over 1000 ship free. "
    "We ship to Ireland, and Zoe\u0308 answers on the phone. Write to privacy@brightside.example."
)


@pytest.mark.parametrize(
    "answer",
    [
        "You have a 30-day window.",
        "Shipping is £4.95, or 4.950 pounds.",
        "Free above 1,000 (1000.00) pounds.",
        "We ship to IRELAND.",  # names compare case-insensitively
        "Ask Zo\u00eb.",  # the same name, composed or not
        "Write to Privacy@Brightside.example.",  # an address at the end of a sentence: no full stop
        "Items can be returned.",  # a capital that starts a sentence is not a name
        "It is 30 days:\nThirty days, that is.",  # nor one that starts a line
    ],
)
def test_grounded_facts_are_found_whole_in_the_input(answer):
    assert scorers.unsupported_facts(answer, POLICY) == []


@pytest.mark.parametrize(
    ("answer", "invented"),
    [
        ("Refunds take 3 days.", ["3"]),  # "3" occurs inside "30", but it is not 30
        ("Shipping is 4.9 or 95p.", ["4.9", "95"]),
        ("Free above 100 pounds.", ["100"]),
        ("Free above 2,000 or \u0661\u0660\u0660\u0660 (1000) pounds.", ["2,000"]),  # as written; other digits too
        ("We ship to Ire and to Irelandia.", ["Ire", "Irelandia"]),  # inside "Ireland", not Ireland
        ("Ask Zoé or Zoëy.", ["Zoé", "Zoëy"]),  # names beyond ASCII are names too
        (
            "Mail vacy@brightside.example or privacy@brightside.examples",
            ["privacy@brightside.examples", "vacy@brightside.example"],
        ),
        ("Or write to help@shop.example.", ["help@shop.example"]),
        ("It takes thirty or 30.5 days.", ["30.5"]),  # numbers by value
    ],
)
def test_grounded_flags_a_fact_that_is_only_part_of_one_in_the_input(answer, invented):
    assert scorers.unsupported_facts(answer, POLICY) == invented


def test_grounded_reads_a_date_or_a_version_as_its_numbers():
    assert scorers.unsupported_facts("Sent on 2024-01-30, version 1.2.3.", "Posted 30/01/2024 (v3.2.1).") == []
    assert scorers.unsupported_facts("Sent on 2024-01-31.", "Posted 30/01/2024.") == ["31"]


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


def test_each_documented_normalisation_rule():
    """README, "The golden set": each rule of the normalisation, in the order it lists them."""
    # Text: casefolded, runs of whitespace collapsed, the ends trimmed.
    assert verdict("exact_match", "  Order\n\t STATUS ", expected="order status")
    assert verdict("exact_match", '{"city": " STRASSE  am  See"}', expected={"city": "straße am see"})
    assert verdict("contains", "Returns   within\n30 DAYS.", contains=["within 30 days"])
    assert verdict("contains", "within 300 days", contains=["30"])  # a substring test: regex \b30\b for the number
    assert not verdict("not_contains", "Your PASS  WORD is", not_contains=["pass word"])
    assert verdict("includes", '{"aspects": ["  Battery  Life "]}', includes={"aspects": ["battery life"]})
    # A missing field is null.
    assert verdict("exact_match", '{"intent": "refund"}', expected={"intent": "refund", "order_id": None})
    # Numbers compare as numbers, never equal to true/false or to text.
    assert verdict("exact_match", '{"quantity": 2.0}', expected={"quantity": 2})
    assert not verdict("exact_match", '{"in_stock": 1}', expected={"in_stock": True})
    assert not verdict("exact_match", '{"in_stock": 0}', expected={"in_stock": False})
    assert not verdict("exact_match", '{"quantity": "2"}', expected={"quantity": 2})
    # An item of the answer's list that is not text compares by its JSON text.
    assert verdict("includes", '{"sizes": [2, true]}', includes={"sizes": ["2", "true"]})
    # A text `expected`, `contains` and `regex` read a JSON answer as its strings and numbers joined
    # by single spaces, in order (true, false and null left out).
    reply = '{"answer": "Order BH-1", "days": 30, "late": false, "note": null, "steps": ["a", {"b": "c"}]}'
    assert verdict("exact_match", reply, expected="order bh-1 30 a c")
    assert verdict("regex", reply, regex=r"^Order BH-1 30 a c$")
    # `regex` is never normalised: it is case-sensitive unless the pattern says (?i).
    assert not verdict("regex", "order bh-1", regex=r"BH-\d")
    assert verdict("regex", "order bh-1", regex=r"(?i)BH-\d")


def test_an_example_can_ask_for_exact_comparisons():
    exact = {"exact": True}
    assert not verdict("exact_match", "Order status", expected="order status", **exact)
    assert not verdict("exact_match", "order status ", expected="order status", **exact)
    assert verdict("exact_match", "order status", expected="order status", **exact)
    assert verdict("exact_match", '{"aspects": ["a", "b"]}', expected={"aspects": ["a", "b"]}, **exact)
    assert not verdict("exact_match", '{"aspects": ["b", "a"]}', expected={"aspects": ["a", "b"]}, **exact)
    assert not verdict("exact_match", '{"aspects": ["a", "a"]}', expected={"aspects": ["a"]}, **exact)
    assert not verdict("exact_match", '{"intent": "refund"}', expected={"order_id": None}, **exact)
    assert verdict("exact_match", '{"order_id": null}', expected={"order_id": None}, **exact)
    assert verdict("exact_match", '{"quantity": 2.0}', expected={"quantity": 2}, **exact)  # still one number
    assert not verdict("contains", "Returns within 30 DAYS", contains=["30 days"], **exact)
    assert verdict("contains", "Returns within 30 days", contains=["30 days"], **exact)
    assert verdict("not_contains", "Your PASSWORD", not_contains=["password"], **exact)
    assert not verdict("includes", '{"aspects": ["Screen"]}', includes={"aspects": ["screen"]}, **exact)
    assert verdict("includes", '{"aspects": ["Screen"]}', includes={"aspects": ["Screen"]}, **exact)
    # `"exact": false` is the default: normalised.
    assert verdict("exact_match", "Order status", expected="order status", exact=False)


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
