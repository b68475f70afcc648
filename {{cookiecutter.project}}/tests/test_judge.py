"""The LLM judge against a deterministic fake judge on 127.0.0.1: verdicts, gating only once
calibrated, the cache, its own tokens and cost, bad judge answers as errors, kappa and calibration."""

import json

import numpy as np
import pytest

from {{ cookiecutter.package }}.app.client import ChatClient, RetryPolicy
from {{ cookiecutter.package }}.app.contract import App
from {{ cookiecutter.package }}.app.prompts import Prompt
from {{ cookiecutter.package }}.cli import main as cli
from {{ cookiecutter.package }}.evaluation import metrics, runner
from {{ cookiecutter.package }}.evaluation.cache import ResponseCache
from {{ cookiecutter.package }}.evaluation.golden import GoldenSetError, parse_lines
from {{ cookiecutter.package }}.evaluation.results import parse
from {{ cookiecutter.package }}.judge import calibration, pairwise, summary
from {{ cookiecutter.package }}.judge.kappa import cohen_kappa
from {{ cookiecutter.package }}.judge.rubric import Judge, JudgeAnswerError, parse_verdict, rubric_version
from {{ cookiecutter.package }}.settings import SettingsError
from {{ cookiecutter.package }}.settings import parse as parse_settings
from {{ cookiecutter.package }}.testing.fake_judge import bad_judge, rubric_judge
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

# Braces below are template placeholders, not cookiecutter variables.{% raw %}
ECHO = Prompt(
    id="echo",
    description="repeat the text",
    variables=("text",),
    messages=({"role": "system", "content": "Repeat the text."}, {"role": "user", "content": "{text}"}),
    output_schema=None,
    examples=(),
    source="test",
    judge='The answer says "yes".',
)
# {% endraw %}(end of the template placeholders)
JUDGE_MODEL = "judge-m"
RUBRIC = ECHO.judge
OWN_RUBRIC = 'The answer says "please".'


def golden():
    """Every example passes its string check; the judge's rule passes only answers saying yes/please."""
    rows = [
        {"id": "yes", "prompt": "echo", "input": {"text": "yes indeed"}, "contains": ["indeed"]},
        {"id": "no", "prompt": "echo", "input": {"text": "no indeed"}, "contains": ["indeed"]},
        {"id": "own", "prompt": "echo", "input": {"text": "please yes"}, "contains": ["yes"], "judge": OWN_RUBRIC},
        {"id": "own-no", "prompt": "echo", "input": {"text": "yes sir"}, "contains": ["sir"], "judge": OWN_RUBRIC},
    ]
    return parse_lines([json.dumps(r) for r in rows], "golden.jsonl")


def chat_via(server):
    client = ChatClient(server.base_url, "m", timeout=(1.0, 2.0), retry=RetryPolicy(max_attempts=1))
    return lambda messages, schema: client.chat(messages, schema=schema)


def evaluate(model, judge_server, cache_dir, calibrated=frozenset(), judge=True):
    evaluation = runner.Evaluation(
        runner.app_solver({"echo": ECHO}, App(name="test"), None),
        ResponseCache(cache_dir),
        runner.Keying("fake", "m", {"temperature": 0.0}),
        judge=Judge(JUDGE_MODEL, {"echo": RUBRIC}, calibrated) if judge else None,
        judge_keying=runner.Keying("judge", JUDGE_MODEL, {"temperature": 0.0}) if judge else None,
    )
    outcome = runner.run(
        runner.plan(golden(), 1), evaluation, chat_via(model), concurrency=2, max_error_rate=1.0,
        judge_chat=chat_via(judge_server) if judge else None,
    )  # fmt: skip
    return {r.id: r for r in outcome.results}


def test_verdicts_are_reported_but_count_towards_pass_only_once_their_rubric_is_calibrated(tmp_path):
    with FakeModel() as model, FakeModel(rubric_judge()) as judge:
        reported = evaluate(model, judge, tmp_path / "a")
        calibrated = frozenset({rubric_version(RUBRIC, JUDGE_MODEL)})  # the prompt's rubric only
        gated = evaluate(model, judge, tmp_path / "b", calibrated)
    assert {i: r.verdict("judge") for i, r in reported.items()} == {
        "yes": True,
        "no": False,
        "own": True,
        "own-no": False,
    }
    assert all(r.passed for r in reported.values())  # not calibrated: reported only
    assert all(r.judge["gating"] is False for r in reported.values())
    # Calibrated: the prompt's rubric fails "no"; the examples' own rubric is another version, still reported only.
    assert {i: r.passed for i, r in gated.items()} == {"yes": True, "no": False, "own": True, "own-no": True}
    assert reported["own"].judge["rubric"] == rubric_version(OWN_RUBRIC, JUDGE_MODEL)  # the golden line's wins
    shown = "\n".join(summary.lines(list(gated.values())))
    assert "gates (calibrated)" in shown and summary.NOT_CALIBRATED in shown


def test_a_rerun_asks_the_judge_nothing_and_gives_the_same_results(tmp_path):
    with FakeModel() as model, FakeModel(rubric_judge()) as judge:
        first = evaluate(model, judge, tmp_path)
        calls = judge.calls()
        again = evaluate(model, judge, tmp_path)
        assert judge.calls() == calls == 4
    assert all(r.cached for r in again.values())
    assert {i: (r.scores, r.judge) for i, r in again.items()} == {i: (r.scores, r.judge) for i, r in first.items()}


def test_judge_tokens_and_cost_are_counted_apart_from_the_apps(tmp_path):
    with FakeModel() as model, FakeModel(rubric_judge()) as judge:
        with_judge = list(evaluate(model, judge, tmp_path / "a").values())
        without = list(evaluate(model, judge, tmp_path / "b", judge=False).values())
    prices = {"input": 1.0, "output": 2.0}
    judged, plain = (
        metrics.compute(with_judge, prices, {"input": 10.0, "output": 20.0}),
        metrics.compute(without, prices),
    )
    for name in ("tokens_in", "tokens_out", "cost_usd", "pass_rate"):
        assert judged[name] == plain[name], name
    tokens_in = sum(r.judge["tokens_in"] for r in with_judge)
    tokens_out = sum(r.judge["tokens_out"] for r in with_judge)
    assert tokens_in > 0 and tokens_out > 0
    assert judged["judge_tokens"] == tokens_in + tokens_out
    assert judged["judge_cost_usd"] == pytest.approx((tokens_in * 10 + tokens_out * 20) / 1e6)
    assert judged["judge_rate"] == 0.5 and judged["judge_error_rate"] == 0.0
    # No judge: no judge metric, no `judge` key in results.jsonl (what a project without one always wrote).
    assert not [name for name in plain if name.startswith("judge")]
    assert all("judge" not in r.to_json() for r in without)


@pytest.mark.parametrize("kind", ["json", "schema", "refusal"])
def test_a_judge_that_answers_badly_is_an_error_never_a_pass_nor_the_answers_failure(tmp_path, kind):
    calibrated = frozenset({rubric_version(RUBRIC, JUDGE_MODEL), rubric_version(OWN_RUBRIC, JUDGE_MODEL)})
    with FakeModel() as model, FakeModel(bad_judge(kind)) as judge:
        results = evaluate(model, judge, tmp_path, calibrated)
        judge_calls = judge.calls()
        again = evaluate(model, judge, tmp_path, calibrated)
        assert judge.calls() == 2 * judge_calls  # an error is never cached: the next run asks again
    assert all(r.passed is True and r.error is None and "judge" not in r.scores for r in results.values())
    assert all(r.judge["error"] for r in again.values())
    values = metrics.compute(list(results.values()), {})
    assert values["judge_error_rate"] == 1.0 and "judge_rate" not in values


def test_parse_verdict_is_strict():
    assert parse_verdict('{"pass": true, "score": 0.5, "reason": "ok"}').passed is True
    for text in ('{"pass": 1, "score": 0.5, "reason": ""}', '{"pass": true, "score": 1.5, "reason": ""}',
                 '{"pass": true, "score": 0.5}', '{"pass": true, "score": NaN, "reason": ""}', "yes", "[]",
                 '{"pass": true, "score": 0.5, "reason": "", "extra": 1}'):  # fmt: skip
        with pytest.raises(JudgeAnswerError):
            parse_verdict(text)


def test_rubric_version_changes_with_the_rubric_and_the_judge_model_only():
    version = rubric_version(RUBRIC, JUDGE_MODEL)
    assert rubric_version(RUBRIC + "\n", JUDGE_MODEL) == version
    assert rubric_version(RUBRIC + " Politely.", JUDGE_MODEL) != version
    assert rubric_version(RUBRIC, "another-judge") != version


# -- kappa -----------------------------------------------------------------------------------------


def _pairs(n, seed, base=0.6, agree=0.8):
    rng = np.random.default_rng(seed)
    human = rng.random(n) < base
    judge = np.where(rng.random(n) < agree, human, ~human)
    return [(bool(h), bool(j)) for h, j in zip(human, judge, strict=True)]


def _kappas(h, j):
    """Cohen's kappa of each row of two boolean matrices (vectorised, for the bootstrap)."""
    po = (h == j).mean(axis=1)
    ph, pj = h.mean(axis=1), j.mean(axis=1)
    pe = ph * pj + (1 - ph) * (1 - pj)
    return (po - pe) / (1 - pe)


def test_kappa_of_a_textbook_table():
    # 50 answers: both pass 20, human pass / judge fail 5, human fail / judge pass 10, both fail 15:
    # observed 0.7, chance 0.5 x 0.6 + 0.5 x 0.4 = 0.5, kappa (0.7 - 0.5) / (1 - 0.5) = 0.4.
    pairs = [(True, True)] * 20 + [(True, False)] * 5 + [(False, True)] * 10 + [(False, False)] * 15
    found = cohen_kappa(pairs)
    assert found.kappa == pytest.approx(0.4) and found.agreement == pytest.approx(0.7)
    assert found.confusion == {
        "human pass / judge pass": 20, "human pass / judge fail": 5,
        "human fail / judge pass": 10, "human fail / judge fail": 15,
    }  # fmt: skip


@pytest.mark.parametrize("n,seed,agree", [(40, 1, 0.8), (120, 2, 0.7)])
def test_the_kappa_interval_matches_a_bootstrap(n, seed, agree):
    """The analytic standard error against the spread of kappa over 2,000 resamples of the answers
    (scikit-learn's kappa itself: the template's tests/test_judge_e2e.py)."""
    pairs = _pairs(n, seed, agree=agree)
    found = cohen_kappa(pairs)
    human, judge = (np.array(side) for side in zip(*pairs, strict=True))
    rows = np.random.default_rng(seed).integers(0, n, size=(2000, n))
    boot = _kappas(human[rows], judge[rows])
    assert found.se == pytest.approx(np.nanstd(boot), rel=0.15)
    assert found.ci_low < found.kappa < found.ci_high


def test_kappa_is_undefined_when_both_sides_give_one_label_throughout():
    found = cohen_kappa([(True, True)] * 5)
    assert found.kappa is None and found.agreement == 1.0


# -- calibration -----------------------------------------------------------------------------------


def test_bad_label_lines_are_each_named_by_file_and_line():
    lines = [
        json.dumps({"rubric": "r", "input": {}, "output": "x", "label": "pass"}),
        json.dumps({"rubric": "r", "input": {}, "output": "x", "label": "maybe"}),
        "{not json",
        json.dumps({"prompt": "nope", "input": {}, "output": "x", "label": "fail"}),
        json.dumps({"input": {}, "output": "x", "label": "fail"}),
    ]
    with pytest.raises(calibration.CalibrationError) as caught:
        calibration.parse_labels("\n".join(lines), "labels.jsonl", {"echo": RUBRIC})
    message = str(caught.value)
    assert "4 problem(s)" in message
    for number, words in ((2, "label"), (3, "not valid JSON"), (4, "'nope'"), (5, "exactly one of")):
        assert f"labels.jsonl:{number}: " in message and words in message


def test_a_judge_rubric_in_the_golden_set_must_not_be_blank():
    with pytest.raises(GoldenSetError, match=r"golden.jsonl:1: judge"):
        parse_lines([json.dumps({"id": "a", "prompt": "echo", "input": {"text": "t"}, "contains": ["t"], "judge": " "})],
                    "golden.jsonl")  # fmt: skip


def test_an_uncalibrated_judge_never_reaches_the_bars_on_its_own():
    base = "model:\n  base_url: http://127.0.0.1:9/v1\n  name: m\n"
    with pytest.raises(SettingsError, match=r"params.yaml:6: thresholds.min.judge_rate: .*pass_rate"):
        parse_settings(base + "thresholds:\n  min:\n    judge_rate: 0.9\n")
    with pytest.raises(SettingsError, match=r"params.yaml:4: judge.name: must name the judge model"):
        parse_settings(base + "judge:\n  base_url: http://127.0.0.1:9/v1\n")


def test_calibrate_through_the_cli_on_the_toy_app_writes_which_rubric_versions_gate(toy_project, capsys):
    """`judge calibrate` through the CLI: a judge that agrees with the labels gates, one that does not reports."""
    labels = [
        {"rubric": 'Says "good".', "input": {"text": t}, "output": t, "label": "pass" if "good" in t else "fail"}
        for t in ("good one", "so good", "good day", "bad one", "so bad", "bad day", "not bad", "good enough")
    ]
    flipped = [{**line, "rubric": 'Praises: "good".'} for line in labels]
    (toy_project / "eval").mkdir(exist_ok=True)
    (toy_project / "eval" / "judge_labels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in labels + flipped))
    params = toy_project / "params.yaml"
    with FakeModel(rubric_judge(flip=["so "])) as judge:
        # Whatever the human said about "so good"/"so bad", this judge says the opposite: agreement 6 of 8
        # on both rubrics, so kappa 0.5 for each; a min_kappa of 0.4 lets them gate, 0.6 does not.
        for min_kappa, gates in ((0.4, True), (0.6, False)):
            text = params.read_text().split("judge:\n")[0]
            params.write_text(
                text + f"judge:\n  base_url: {judge.base_url}\n  name: {JUDGE_MODEL}\n  min_kappa: {min_kappa}\n"
            )
            assert cli(["judge", "calibrate"]) == 0
            written = json.loads((toy_project / "eval" / "judge_calibration.json").read_text())
            assert [r["gates"] for r in written["rubrics"].values()] == [gates, gates]
            assert [r["kappa"] for r in written["rubrics"].values()] == [0.5, 0.5]
            found = calibration.calibrated(toy_project / "eval" / "judge_calibration.json", min_kappa)
            assert found == (frozenset(written["rubrics"]) if gates else frozenset())
        assert judge.calls() == 16  # the second calibration asked nothing again: the cache answered
    out = capsys.readouterr().out
    assert "kappa 0.500" in out and "human pass / judge fail: 1" in out


def test_calibrate_with_a_judge_that_never_answers_keeps_the_last_calibration(toy_project, capsys):
    (toy_project / "eval").mkdir(exist_ok=True)
    line = {"rubric": 'Says "good".', "input": {"text": "good"}, "output": "good", "label": "pass"}
    (toy_project / "eval" / "judge_labels.jsonl").write_text(json.dumps(line) + "\n")
    last = toy_project / "eval" / "judge_calibration.json"
    last.write_text('{"rubrics": {}}\n')
    params = toy_project / "params.yaml"
    with FakeModel(bad_judge("refusal")) as judge:
        params.write_text(
            params.read_text().split("judge:\n")[0] + f"judge:\n  base_url: {judge.base_url}\n  name: j\n"
        )
        assert cli(["judge", "calibrate"]) == 2
    error = capsys.readouterr().err
    assert "error: the judge gave no usable verdict for rubric" in error and "left as it was" in error
    assert len(error.strip().splitlines()) == 1 and last.read_text() == '{"rubrics": {}}\n'


# -- pairwise --------------------------------------------------------------------------------------


def pair_chat(server, cache_dir):
    """The judge through the cache, as the gate asks it."""
    keying = runner.Keying("judge", JUDGE_MODEL, {"temperature": 0.0})
    return runner.CachedChat(ResponseCache(cache_dir), keying, 0, chat_via(server), usable=pairwise.is_preference)


PAIRS = [
    pairwise.Pair(f"p{n}", RUBRIC, {"text": f"t{n}"}, base, head)  # distinct inputs: no two share a cache key
    for n, (base, head) in enumerate([("yes", "no")] * 6 + [("no", "yes"), ("yes", "yes!"), ("no", "nope")])
]


def test_each_pair_is_judged_twice_with_positions_swapped_and_a_biased_judge_cancels_out(tmp_path):
    with FakeModel(rubric_judge()) as fair, FakeModel(rubric_judge(biased=True)) as biased:
        found = pairwise.compare(PAIRS, JUDGE_MODEL, pair_chat(fair, tmp_path / "a"), frozenset())
        skewed = pairwise.compare(PAIRS, JUDGE_MODEL, pair_chat(biased, tmp_path / "b"), frozenset())
        assert fair.calls() == biased.calls() == 2 * len(PAIRS)
        seen = [r.content for r in biased.seen]
    # Fair: the base says yes where the head does not (6), the head once; both or neither: ties.
    assert (len(found.base_wins), len(found.head_wins), found.ties) == (6, 1, ["p7", "p8"])
    # Always "A": each order prefers a different answer, so every pair is a tie and nothing is decided.
    assert skewed.ties == [p.id for p in PAIRS] and not skewed.base_wins and not skewed.head_wins
    first, swapped = seen[0], seen[1]
    assert first.index("Answer A:\nyes") < first.index("Answer B:\nno")
    assert swapped.index("Answer A:\nno") < swapped.index("Answer B:\nyes")


def test_the_pairwise_verdict_fails_the_gate_only_when_calibrated_and_significant(tmp_path):
    version = pairwise.pairwise_version(RUBRIC, JUDGE_MODEL)
    with FakeModel(rubric_judge()) as judge:
        reported = pairwise.compare(PAIRS, JUDGE_MODEL, pair_chat(judge, tmp_path), frozenset())
        gated = pairwise.compare(PAIRS, JUDGE_MODEL, pair_chat(judge, tmp_path), frozenset({version}))
        assert judge.calls() == 2 * len(PAIRS)  # the second comparison came from the cache
    # 6 losses against 1 win: P(>= 6 of 7 | fair coin) = 8/128.
    assert gated.p_value() == pytest.approx(8 / 128)
    assert (
        pairwise.decide(reported, 0.1)[0] == "info"
        and "reported only: not calibrated" in pairwise.decide(reported, 0.1)[1]
    )
    assert pairwise.decide(gated, 0.1)[0] == "regression"
    assert pairwise.decide(gated, 0.05)[0] == "ok"  # not significant at 0.05


@pytest.mark.parametrize(
    "text", ['{"better": "C", "reason": ""}', '{"better": "A"}', "A", '{"better": "A", "reason": 1}']
)
def test_a_reply_that_is_not_a_preference_is_a_judge_error(tmp_path, text):
    assert pairwise.parse_preference(text) is None
    with FakeModel(lambda request: text) as judge:
        found = pairwise.compare(PAIRS[:2], JUDGE_MODEL, pair_chat(judge, tmp_path), frozenset())
    assert found.errors == ["p0", "p1"]


def test_pairwise_labels_calibrate_the_pairwise_rubric_version(tmp_path):
    rows = [
        {"rubric": RUBRIC, "input": {}, "outputs": ["yes", "no"], "preferred": "first"},
        {"rubric": RUBRIC, "input": {}, "outputs": ["no", "yes"], "preferred": "second"},
        {"rubric": RUBRIC, "input": {}, "outputs": ["no", "nope"], "preferred": "tie"},
        {"rubric": RUBRIC, "input": {}, "outputs": ["yes", "yes!"], "preferred": "first"},
        {"rubric": RUBRIC, "input": {}, "output": "yes", "label": "pass"},
    ]
    labels = calibration.parse_labels("\n".join(map(json.dumps, rows)), "labels.jsonl", {})
    with FakeModel(rubric_judge()) as judge:
        found = calibration.calibrate(labels, Judge(JUDGE_MODEL, {}), pair_chat(judge, tmp_path))
    by_version = {c.version: c for c in found}
    pair = by_version[pairwise.pairwise_version(RUBRIC, JUDGE_MODEL)]
    assert pair.agreement.n == 4 and pair.agreement.agreement == 0.75  # the judge ties the last one
    assert pair.agreement.confusion["human first / judge tie"] == 1
    assert by_version[rubric_version(RUBRIC, JUDGE_MODEL)].agreement.n == 1
    with pytest.raises(calibration.CalibrationError, match=r"labels.jsonl:1: needs `output` and `label`, or"):
        calibration.parse_labels(json.dumps({"rubric": "r", "input": {}, "outputs": ["a", "b"]}), "labels.jsonl", {})


def test_results_with_a_judge_record_read_back_and_a_bad_one_is_named():
    line = {"id": "a", "repeat": 0, "passed": True, "judge": {"rubric": "r", "gating": False, "error": None}}
    assert parse(json.dumps(line), "results.jsonl")[0].judge["rubric"] == "r"
    with pytest.raises(Exception, match=r"results.jsonl:1: `judge`"):
        parse(json.dumps({**line, "judge": [1]}), "results.jsonl")
