"""The gate's pure parts: pairing, the McNemar decision, direction-aware tolerances, the report.

The whole command (git, `dvc metrics diff`, exit codes) runs in the template's end-to-end tests
on a real repository; these pin the rules themselves.
"""

import dataclasses
import json

import pytest

from {{ cookiecutter.package }}.evaluation import catalogue
from {{ cookiecutter.package }}.evaluation.results import Result, ResultsError
from {{ cookiecutter.package }}.evaluation.results import parse as parse_results
from {{ cookiecutter.package }}.gate.inputs import GateInputError, GateInputs, with_calibration
from {{ cookiecutter.package }}.gate.paired import Paired, compare, decide, example_rates, mcnemar_p, paired_metrics
from {{ cookiecutter.package }}.gate.policy import bar_changes, golden_changes
from {{ cookiecutter.package }}.gate.report import cell, render, shown_input
from {{ cookiecutter.package }}.gate.verdict import GateResult, Verdict, judge
from {{ cookiecutter.package }}.settings import JudgeSettings, Policy, Thresholds, parse, parse_policy

SETTINGS = parse(
    """
model: {base_url: "http://127.0.0.1:9/v1", name: test}
thresholds: {min: {pass_rate: 0.5}, max: {error_rate: 0.1}}
gate:
  alpha: 0.05
  max_drop: 0.10
  required: [pass_rate, error_rate]
  tolerance: {pass_rate: 0.03, error_rate: 0.02, latency_p95_ms: 100.0, cost_usd: 0.01}
"""
)


NAMES = ["pass_rate", "pass_rate_ci_low", "error_rate", "latency_p95_ms", "cost_usd", "json_schema_rate"]
CATALOGUE = catalogue.build([*NAMES, "tag_intent_pass_rate"], {"json_schema": "schema"}, ["intent"])
PASS_RATE, INTENT, SCHEMA = (CATALOGUE[n] for n in ("pass_rate", "tag_intent_pass_rate", "json_schema_rate"))


def result(example, passed, repeat=0, **extra):
    return Result.from_json(
        {"id": example, "repeat": repeat, "target": "p", "version": "v", "passed": passed, "output": f"out-{example}"}
        | extra
    )


def results(verdicts):
    """{"a": [True, False]} -> one record per repeat."""
    return [result(k, v, repeat=i) for k, vs in verdicts.items() for i, v in enumerate(vs)]


# ---- pairing ------------------------------------------------------------------------------


def test_flips_are_counted_per_example_and_flaky_ones_set_apart():
    base = results({"a": [True], "b": [True], "c": [False], "d": [True, False], "e": [True], "gone": [True]})
    head = results({"a": [True], "b": [False], "c": [True], "d": [False, False], "e": [None], "new": [False]})
    paired = compare(base, head, PASS_RATE)
    assert paired.pass_to_fail == ["b"] and paired.fail_to_pass == ["c"]
    assert paired.flaky == {"d": (0.5, 0.0)}  # flaky on the base: not a flip
    assert paired.examples == 4  # e errored on the head, gone/new exist on one side only


def test_repeats_make_one_unit_per_example():
    """Three repeats of one broken example are one flip, not three independent pairs."""
    paired = compare(results({"a": [True] * 3}), results({"a": [False] * 3}), PASS_RATE)
    assert paired.pass_to_fail == ["a"] and paired.p_value == 0.5


def test_errors_are_not_failures():
    assert example_rates(results({"a": [None, True, None]}), PASS_RATE) == {"a": 1.0}
    assert example_rates(results({"a": [None]}), PASS_RATE) == {}


def test_tag_and_scorer_rates_pair_on_their_own_verdicts():
    records = [
        result("a", False, tags=["intent"], scores={"json_schema": {"passed": True}}),
        result("b", True, tags=["extract"], scores={"json_schema": {"passed": False}}),
    ]
    assert example_rates(records, INTENT) == {"a": 0.0}
    assert example_rates(records, SCHEMA) == {"a": 1.0, "b": 0.0}
    names = ["pass_rate", "tag_intent_pass_rate", "json_schema_rate", "error_rate", "latency_p95_ms", "unknown_rate"]
    assert [m.name for m in paired_metrics(names, CATALOGUE)] == [
        "pass_rate",
        "tag_intent_pass_rate",
        "json_schema_rate",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": "a", "repeat": 0, "passed": true}\n{"id": "b",\n', "results.jsonl:2: not valid JSON"),
        ("[1, 2]\n", "results.jsonl:1: expected an object"),
        ('{"id": "a", "repeat": 0, "passed": true, "scores": []}\n', "results.jsonl:1: `scores` must be an object"),
        ('{"id": "a", "repeat": 0, "passed": "yes"}\n', "results.jsonl:1: `repeat` must be an integer"),
    ],
)
def test_unreadable_results_name_file_and_line(text, message):
    with pytest.raises(ResultsError, match=message):
        parse_results(text, "results.jsonl")


# ---- the McNemar decision -------------------------------------------------------------------


def test_exact_mcnemar_p_values():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 0) == pytest.approx(1 / 32)  # the fewest flips that reach p < 0.05
    assert mcnemar_p(4, 0) == pytest.approx(1 / 16)
    assert mcnemar_p(13, 1) == pytest.approx(15 / 2**14)
    assert mcnemar_p(1, 5) > 0.9  # one-sided: improvements are never "significant regressions"
    from scipy.stats import binomtest

    for pass_to_fail in range(0, 41, 3):
        for fail_to_pass in range(0, 41, 4):
            if pass_to_fail + fail_to_pass:
                expected = binomtest(pass_to_fail, pass_to_fail + fail_to_pass, 0.5, alternative="greater").pvalue
                assert mcnemar_p(pass_to_fail, fail_to_pass) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def flips(pass_to_fail, fail_to_pass, examples=38, flaky=0):
    paired = Paired(
        "pass_rate", examples, [f"p{i}" for i in range(pass_to_fail)], [f"f{i}" for i in range(fail_to_pass)]
    )
    paired.flaky = {f"k{i}": (0.5, 0.0) for i in range(flaky)}
    paired.p_value = mcnemar_p(pass_to_fail, fail_to_pass)
    return paired


@pytest.mark.parametrize(
    ("worse_by", "paired", "status"),
    [
        (0.02, flips(1, 0), "ok"),  # within tolerance, whatever the flips
        (0.13, flips(5, 0), "regression"),  # significant: p = 1/32
        (0.08, flips(3, 0, examples=30), "regression"),  # p = 1/8, but 10% of examples flipped
        (0.08, flips(3, 0), "warn"),  # 3 of 38: beyond tolerance, indistinguishable from noise
        (0.20, flips(0, 0, flaky=8), "warn"),  # flaky examples alone never fail the gate
        (0.05, None, "regression"),  # no results on the base: the tolerance alone decides
    ],
)
def test_significance_and_tolerance_combine(worse_by, paired, status):
    assert decide(worse_by, 0.03, paired, alpha=0.05, max_drop=0.10)[0] == status


# ---- judging the diff -----------------------------------------------------------------------

HEAD = {"pass_rate": 0.9, "error_rate": 0.0, "latency_p95_ms": 500.0, "cost_usd": 0.05}


def diff(**changes):
    entries = {name: {"old": value, "new": value} for name, value in HEAD.items()}
    for name, (old, new) in changes.items():
        entries[name] = {"old": old, "new": new}
    return entries


POLICY = Policy(SETTINGS.thresholds, SETTINGS.gate)


def inputs(the_diff, head=HEAD, base_results=None, head_results=(), golden=None, **more):
    return GateInputs("main", POLICY, the_diff, head, CATALOGUE, list(head_results), base_results, golden or {}, **more)


def flip_results(pass_to_fail, fail_to_pass, examples=38):
    """Base and head results with that many flips; the other examples pass on both sides."""
    verdicts = [(True, False)] * pass_to_fail + [(False, True)] * fail_to_pass
    verdicts += [(True, True)] * (examples - len(verdicts))
    base = [result(f"e{i}", old) for i, (old, _) in enumerate(verdicts)]
    head = [result(f"e{i}", new) for i, (_, new) in enumerate(verdicts)]
    return base, head


def judged(the_diff, head=HEAD, flips_=None):
    """judge() on a diff, with base and head results holding `flips_` = (pass->fail, fail->pass)."""
    base_results, head_results = flip_results(*flips_) if flips_ else (None, ())
    return judge(inputs(the_diff, head, base_results, head_results))


def statuses(result: GateResult) -> dict[str, str]:
    return {v.metric: v.status for v in result.verdicts}


def test_direction_comes_from_the_catalogue():
    assert (
        CATALOGUE["latency_p95_ms"].better == CATALOGUE["cost_usd"].better == CATALOGUE["error_rate"].better == "lower"
    )
    assert CATALOGUE["pass_rate"].better == CATALOGUE["tag_intent_pass_rate"].better == "higher"
    faster = judged(diff(latency_p95_ms=(900.0, 500.0)))
    assert statuses(faster)["latency_p95_ms"] == "ok"
    slower = judged(diff(latency_p95_ms=(300.0, 500.0)))
    assert statuses(slower)["latency_p95_ms"] == "regression" and slower.failed
    pricier = judged(diff(cost_usd=(0.03, 0.05)))
    assert statuses(pricier)["cost_usd"] == "regression"
    # A metric the catalogue does not know has no direction: reported, never judged by its name.
    unknown = judge(GateInputs("main", POLICY, diff(cost_usd=(0.03, 0.05)), HEAD, {}, [], None))
    assert statuses(unknown)["cost_usd"] == "info" and not unknown.failed


def test_a_rate_drop_is_judged_by_the_paired_test_when_there_is_one():
    change = diff(pass_rate=(0.98, 0.9))
    assert statuses(judged(change))["pass_rate"] == "regression"  # no pairs: tolerance
    noisy = judged(change, flips_=(3, 0))
    assert statuses(noisy)["pass_rate"] == "warn" and not noisy.failed and noisy.status == "warn"
    assert noisy.paired["pass_rate"].pass_to_fail == ["e0", "e1", "e2"]
    real = judged(change, flips_=(6, 0))
    assert statuses(real)["pass_rate"] == "regression"


def test_absolute_thresholds_and_first_run():
    low = {**HEAD, "pass_rate": 0.4}
    result = judged({"pass_rate": {"old": None, "new": 0.4}, "error_rate": {"old": None, "new": 0.0}}, low)
    assert [(v.metric, v.status) for v in result.verdicts] == [
        ("error_rate", "new"),
        ("pass_rate", "new"),
        ("pass_rate", "regression"),
    ]
    assert "absolute threshold 0.5" in result.verdicts[-1].why


def test_interval_bounds_are_not_judged_twice():
    change = diff(pass_rate_ci_low=(0.9, 0.5))
    assert "pass_rate_ci_low" not in statuses(judged(change))


@pytest.mark.parametrize(
    ("the_diff", "head", "message"),
    [
        ({}, HEAD, "returned nothing although the metrics file is declared"),
        (diff(), {**HEAD, "pass_rate": None}, "'pass_rate' is null"),
        (diff(), {"error_rate": 0.0}, "'pass_rate' is missing"),
        (diff(), {**HEAD, "error_rate": "0"}, "'error_rate' is \"0\""),
        ({**diff(), "pass_rate": {"old": 0.9, "new": None}}, HEAD, "'pass_rate' is null on the head"),
    ],
)
def test_unusable_input_is_named(the_diff, head, message):
    with pytest.raises(GateInputError, match=message):
        judged(the_diff, head)


# ---- the report -----------------------------------------------------------------------------


def test_cells_are_one_line_truncated_and_escaped():
    assert cell("a | b\nc") == "a \\| b c"
    assert cell("<!-- hidden -->") == "&lt;!-- hidden -->"
    assert cell({"intent": "refund"}) == '{"intent": "refund"}'
    assert cell(None) == "—"
    long = cell("x" * 500)
    assert len(long) == 120 and long.endswith("…")
    assert shown_input({"message": "hi"}) == "hi"
    assert shown_input({"policy": "P", "question": "Q"}) == "question: Q; policy: P"


def test_report_lists_flipped_examples_with_input_expected_and_outputs():
    base = [result("a", True), result("b", False)]
    head = [result("a", False, output="wrong | <b>"), result("b", True)]
    golden = {"a": {"id": "a", "input": {"message": "where is it"}, "expected": {"intent": "order_status"}}}
    loaded = inputs(diff(pass_rate=(1.0, 0.5)), {**HEAD, "pass_rate": 0.5}, base, head, golden)
    text = render(judge(loaded), loaded)
    assert text.startswith("## ⚠️ Gate passed with warnings (base `main`)")  # 1 vs 1 flip: noise
    assert "| pass_rate | 2 | 1 | 1 | 0 | 0.75 |" in text
    assert '| a | where is it | {"intent": "order_status"} | out-a | wrong \\| &lt;b> |' in text
    assert "### Flipped fail → pass (1)" in text and "| b | — | — | out-b | out-b |" in text


def test_report_puts_regressions_first():
    outcome = GateResult([Verdict("a_rate", 1.0, 1.0, "info"), Verdict("pass_rate", 0.9, 0.5, "regression", "down")])
    text = render(outcome, inputs(diff()))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[0].startswith("| pass_rate | 0.9000 | 0.5000 | -0.4000 | ❌ down |")
    assert text.startswith("## ❌ Gate failed")


# ---- the policy: the base's bars, and what the head does to them ------------------------------------

HEAD_PARAMS = """
thresholds: {min: {pass_rate: 0.1, tag_intent_pass_rate: 0.5, json_schema_rate: 0.99}, max: {}}
gate:
  alpha: 0.001
  max_drop: 1.0
  required: [pass_rate]
  tolerance: {pass_rate: 0.03, error_rate: 0.05, latency_p95_ms: 50.0}
"""


def test_bars_moved_by_the_head_are_listed_with_their_direction():
    changes = bar_changes(POLICY, parse_policy(HEAD_PARAMS, "head"))
    assert [str(c) for c in changes] == [
        "thresholds.min.json_schema_rate: none → 0.99 (tightened)",
        "thresholds.min.pass_rate: 0.5 → 0.1 (loosened)",
        "thresholds.min.tag_intent_pass_rate: none → 0.5 (tightened)",
        "thresholds.max.error_rate: 0.1 → none (loosened)",
        "gate.tolerance.cost_usd: 0.01 → none (loosened)",
        "gate.tolerance.error_rate: 0.02 → 0.05 (loosened)",
        "gate.tolerance.latency_p95_ms: 100.0 → 50.0 (tightened)",
        "gate.alpha: 0.05 → 0.001 (loosened)",
        "gate.max_drop: 0.1 → 1.0 (loosened)",
        'gate.required.error_rate: "required" → none (loosened)',
    ]
    assert not bar_changes(POLICY, POLICY)


def test_a_calibrated_rubric_that_stops_counting_is_a_loosened_bar():
    """The head's evaluation let its own calibration decide what passed: a rubric version the base's
    judge counted and the head's does not is a bar removed."""
    judge_on = JudgeSettings(base_url="http://127.0.0.1:9/v1", name="judge")
    base = dataclasses.replace(POLICY, judge=judge_on, calibrated=frozenset({"aaaaaaaaaaaa", "bbbbbbbbbbbb"}))
    head = dataclasses.replace(base, calibrated=frozenset({"bbbbbbbbbbbb", "cccccccccccc"}))
    assert [str(c) for c in bar_changes(base, head)] == [
        'judge.rubric.aaaaaaaaaaaa: "counts" → none (loosened)',
        'judge.rubric.cccccccccccc: none → "counts" (tightened)',
    ]
    judge_off = dataclasses.replace(base, judge=JudgeSettings())  # its calibration file unchanged
    assert [c.loosened for c in bar_changes(base, judge_off)] == [True, True]
    assert not bar_changes(judge_off, dataclasses.replace(judge_off, calibrated=frozenset()))


def test_switching_the_pairwise_judge_off_is_a_loosened_bar():
    pairwise = dataclasses.replace(
        POLICY, judge=JudgeSettings(base_url="http://127.0.0.1:9/v1", name="j", pairwise=True)
    )
    pointwise = dataclasses.replace(pairwise, judge=dataclasses.replace(pairwise.judge, pairwise=False))
    assert [str(c) for c in bar_changes(pairwise, pointwise)] == ["judge.pairwise: true → false (loosened)"]
    assert [str(c) for c in bar_changes(pointwise, pairwise)] == ["judge.pairwise: false → true (tightened)"]
    off = dataclasses.replace(pairwise, judge=dataclasses.replace(pairwise.judge, base_url=""))  # no judge at all
    assert [c.loosened for c in bar_changes(pairwise, off)] == [True]


def test_each_revision_counts_its_calibration_at_its_own_min_kappa():
    calibration = json.dumps({"rubrics": {"aaaaaaaaaaaa": {"kappa": 0.8}, "bbbbbbbbbbbb": {"kappa": 0.95}}})
    judged = HEAD_PARAMS + "judge: {base_url: 'http://127.0.0.1:9/v1', name: judge, min_kappa: 0.9}\n"
    assert with_calibration(parse_policy(judged, "head"), calibration, "c").judge_gating == {"bbbbbbbbbbbb"}
    assert with_calibration(parse_policy(HEAD_PARAMS, "head"), calibration, "c").judge_gating == frozenset()
    with pytest.raises(GateInputError, match=r"^c at main: not a judge calibration file"):
        with_calibration(parse_policy(judged, "head"), "[]", "c at main")


def test_the_base_bars_judge_and_loosening_them_needs_approval():
    looser = parse_policy(HEAD_PARAMS, "head")
    low = {**HEAD, "pass_rate": 0.3}
    change = diff(pass_rate=(0.9, 0.3))
    refused = judge(inputs(change, low, head_policy=looser))
    # The head's bars would pass a pass_rate of 0.3; the base's (0.5) do not, approved or not.
    assert refused.failed and statuses(refused)["policy"] == "regression"
    approved = judge(inputs(change, low, head_policy=looser), approved=True)
    assert statuses(approved)["policy"] == "warn" and approved.failed
    assert any(v.metric == "pass_rate" and "absolute threshold 0.5" in v.why for v in approved.verdicts)
    text = render(refused, inputs(change, low, head_policy=looser))
    policy = text.split("### Policy changes")[1].split("| metric |")[0]
    assert "needs approval" in policy and "`gate.alpha: 0.05 → 0.001 (loosened)`" in policy
    stricter = {**POLICY.thresholds.min, "pass_rate": 0.6, "json_schema_rate": 0.9}
    tightening = Policy(Thresholds(stricter, POLICY.thresholds.max), POLICY.gate)
    assert "policy" not in statuses(judge(inputs(diff(), head_policy=tightening)))


def test_removed_and_edited_golden_examples_need_approval_added_ones_do_not():
    base = {"a": {"id": "a", "input": {"x": "1"}, "expected": "1"}, "b": {"id": "b", "input": {"x": "2"}}}
    head = {"a": {"id": "a", "input": {"x": "1"}, "expected": "one", "tags": ["t"]}, "c": {"id": "c", "input": {}}}
    assert golden_changes(base, head) == {"removed": ["b"], "edited": ["a"], "added": ["c"]}
    retagged = {"a": {**base["a"], "tags": ["new"]}, "b": base["b"], "c": head["c"]}
    assert golden_changes(base, retagged) == {"removed": [], "edited": [], "added": ["c"]}
    result = judge(inputs(diff(), golden=head, base_golden=base))
    assert statuses(result)["policy"] == "regression"
    assert "removed (1): `b`" in render(result, inputs(diff(), golden=head, base_golden=base))
    assert not judge(inputs(diff(), golden=retagged, base_golden=base)).failed
