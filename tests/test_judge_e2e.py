"""The LLM judge end to end in a baked repository: a calibrated judge gates, an uncalibrated one only reports.

main evaluates the support-bot example with a judge configured (the project's fake model and the
fake judge, both on 127.0.0.1) and the answer_policy prompt's rubric asking for a time in "days" (the fake judge's rule: quoted texts present):
no calibration yet, so its verdicts are in the results and the reports but pass_rate ignores them.
Two branches then run `judge calibrate` on labels and `dvc repro`: on `agrees` the people's labels
agree with the judge (kappa 1): its fails now fail the answers and the gate fails on them; on
`disagrees` they do not (kappa 0.25): nothing gates and the gate passes, saying the verdicts were
reported only. Also: kappa against scikit-learn's `cohen_kappa_score`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.baked import fake_model, fake_model_module, set_param
from tests.conftest import run

pytestmark = [pytest.mark.slow, pytest.mark.long]
ANSWERS = {"project": "judge-demo"}  # a bake of its own: these tests commit and branch in it
GIT = ["git", "-c", "user.name=judge test", "-c", "user.email=judge@test.invalid"]
RUBRIC = 'A good answer gives the time it takes in "days".'


def load(project: Path, name: str):
    """A module of the baked package, loaded by path (stdlib-only modules: fake_judge, kappa)."""
    path = next((project / "src").glob(f"*/{name}.py"))
    key = f"_judge_e2e_{path.stem}_{abs(hash(str(path)))}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def commit(project: Path, message: str) -> None:
    run(project, "git", "add", "-A")
    run(project, *GIT, "commit", "-q", "-m", message)


def labels(agree: bool) -> str:
    """Eight labelled answers: the people's verdict is the judge's rule (`agree`), or unrelated to it."""
    outputs = [
        "Refunds arrive within 5 business days.", "Express takes 1 business day.", "Deletion takes 14 days.",
        "Returns are accepted for 30 days.", "We ship to the UK and Ireland only.", "Sale items cannot be returned.",
        "Express shipping costs $12.", "Reset links last 24 hours.",
    ]  # fmt: skip
    people = [("days" in o) if agree else (i % 2 == 0) for i, o in enumerate(outputs)]
    lines = [
        {"prompt": "answer_policy", "input": {"policy": "p", "question": "q"}, "output": json.dumps({"answer": o}),
         "label": "pass" if good else "fail"}
        for o, good in zip(outputs, people, strict=True)
    ]  # fmt: skip
    return "".join(json.dumps(line) + "\n" for line in lines)


@pytest.fixture(scope="module")
def repo(ready, tmp_path_factory) -> Iterator[Path]:
    project = ready(**ANSWERS)
    judge_module = load(project, "testing/fake_judge")
    fake = fake_model_module(project)
    with (
        fake_model(project, needs_label=True),
        fake.FakeModel(judge_module.rubric_judge()) as judge,
        pytest.MonkeyPatch.context() as env,
    ):
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")
        params = project / "params.yaml"
        text = re.sub(r'(?m)^  base_url: ""  .*$', f"  base_url: {judge.base_url}", params.read_text())
        params.write_text(re.sub(r'(?m)^  name: ""  .*$', "  name: fake-judge", text))
        prompt = project / "prompts" / "answer_policy.yaml"
        prompt.write_text(re.sub(r"(?ms)^judge: \|\n(  .*?\n)+", f"judge: '{RUBRIC}'\n", prompt.read_text()))
        assert RUBRIC in prompt.read_text()
        run(project, "python", "-m", "dvc", "repro", "evaluate")
        commit(project, "Baseline with an LLM judge, not calibrated")
        for branch, agree in (("agrees", True), ("disagrees", False)):
            run(project, "git", "checkout", "-q", "-b", branch, "main")
            (project / "eval" / "judge_labels.jsonl").write_text(labels(agree))
            calibrated = run(project, "judge-demo", "judge", "calibrate")
            said = "kappa 1.000 (95% CI 1.000 to 1.000)" if agree else "kappa 0.250"
            assert said in calibrated.stdout and ("gates" in calibrated.stdout) == agree, calibrated.stdout
            run(project, "python", "-m", "dvc", "repro", "evaluate")
            commit(project, f"Judge calibrated: people {branch}")
        # From `agrees`: the calibration dropped (main's empty file back) and the eval re-run, so the
        # judge's verdicts stop counting and the answers it failed pass.
        run(project, "git", "checkout", "-q", "-b", "uncounted", "agrees")
        run(project, "git", "checkout", "main", "--", "eval/judge_calibration.json")
        run(project, "python", "-m", "dvc", "repro", "evaluate")
        commit(project, "The judge's calibration dropped")
        build_pairwise_branches(project, judge_module)
        yield project


def build_pairwise_branches(project: Path, judge_module) -> None:
    """`pairwise-worse` and `pairwise-uncalibrated`: answers that still pass every string check but
    drop the "days" the rubric asks for; calibrated with preferences that agree with the judge, or not."""
    run(project, "git", "checkout", "-q", "main")
    results = [json.loads(line) for line in (project / "eval" / "results.jsonl").read_text().splitlines()]
    golden = {e["id"]: e for e in map(json.loads, (project / "eval" / "golden.jsonl").read_text().splitlines())}
    said = {r["id"]: " ".join(golden[r["id"]].get("contains", [])) for r in results if "days" in (r["output"] or "")}
    wrong = {i: json.dumps({"answer": text}) for i, text in said.items() if text and "days" not in text}
    assert len(wrong) >= 5, wrong  # enough lost pairs for the sign test: P(5 of 5) = 1/32
    pairs = [("Within 30 days.", "Soon."), ("Soon.", "In 14 days."), ("Soon.", "Later."), ("5 days.", "In 5 days.")]
    rule = [judge_module.verdict(RUBRIC, a) - judge_module.verdict(RUBRIC, b) for a, b in pairs]
    with fake_model(project, needs_label=True, wrong=wrong) as model:
        for branch, agree in (("pairwise-worse", True), ("pairwise-uncalibrated", False)):
            run(project, "git", "checkout", "-q", "-f", "-b", branch, "main")
            set_param(project, "base_url", model.base_url)  # this branch's answers: `wrong`
            preferred = [{1: "first", -1: "second", 0: "tie"}[r] if agree else "first" for r in rule]
            lines = [
                {"prompt": "answer_policy", "input": {}, "outputs": [json.dumps({"answer": a}), json.dumps({"answer": b})],
                 "preferred": p}
                for (a, b), p in zip(pairs, preferred, strict=True)
            ]  # fmt: skip
            (project / "eval" / "judge_labels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
            run(project, "judge-demo", "judge", "calibrate")
            run(project, "python", "-m", "dvc", "repro", "evaluate")
            # On after the repro: `evaluate` does not depend on it, so the head is still fresh for the gate.
            params = project / "params.yaml"
            params.write_text(re.sub(r"(?m)^  pairwise: false .*$", "  pairwise: true", params.read_text()))
            commit(project, f"answer_policy answers without days; pairwise {branch}")


def gate(repo: Path, branch: str):
    run(repo, "git", "checkout", "-q", "-f", branch)
    return run(repo, "judge-demo", "gate", "--base", "main", check=False)


def test_uncalibrated_verdicts_are_reported_and_never_change_pass_rate(repo: Path) -> None:
    run(repo, "git", "checkout", "-q", "-f", "main")
    results = [json.loads(line) for line in (repo / "eval" / "results.jsonl").read_text().splitlines()]
    judged = [r for r in results if "judge" in r]
    assert judged and all(r["target"] == "answer_policy" and r["judge"]["gating"] is False for r in judged)
    assert any(not r["scores"]["judge"]["passed"] for r in judged)
    for r in judged:  # the answer's own checks alone decide
        assert r["passed"] == all(s["passed"] for name, s in r["scores"].items() if name != "judge")
    assert "reported only: not calibrated" in (repo / "eval" / "report.md").read_text()
    metrics = json.loads((repo / "eval" / "metrics.json").read_text())
    assert {"judge_rate", "judge_error_rate", "judge_tokens", "judge_cost_usd"} <= set(metrics)
    assert metrics["tokens_in"] == sum(r["tokens_in"] for r in results)  # the judge's tokens are apart


def test_a_calibrated_judge_gates(repo: Path) -> None:
    proc = gate(repo, "agrees")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = proc.stdout
    pass_rate = next(line for line in report.splitlines() if line.startswith("| pass_rate |"))
    assert "❌" in pass_rate
    assert "### Flipped pass → fail" in report  # the answers the judge fails
    assert "gates (calibrated)" in report and "reported only: not calibrated" not in report


def test_a_change_that_stops_a_calibrated_judge_counting_needs_approval(repo: Path) -> None:
    """Judged by `agrees`, whose judge gates: the head's own calibration decided what passed, so its
    pass_rate rose, and that is a policy change, not an improvement."""
    run(repo, "git", "checkout", "-q", "-f", "uncounted")
    before, after = (
        json.loads(run(repo, "git", "show", f"{r}:eval/metrics.json").stdout) for r in ("agrees", "uncounted")
    )
    assert after["pass_rate"] > before["pass_rate"]
    proc = run(repo, "judge-demo", "gate", "--base", "agrees", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    policy = proc.stdout.split("### Policy changes", 1)[1].split("| metric |", 1)[0]
    assert "needs approval" in policy
    assert re.search(r"`judge\.rubric\.[0-9a-f]{12}: \"counts\" → none \(loosened\)`", policy), proc.stdout
    approved = run(repo, "judge-demo", "gate", "--base", "agrees", "--policy-approved", check=False)
    assert approved.returncode == 0, approved.stdout + approved.stderr


def test_an_uncalibrated_judge_only_reports(repo: Path) -> None:
    proc = gate(repo, "disagrees")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "### LLM judge" in proc.stdout and "reported only: not calibrated" in proc.stdout
    assert "Flipped" not in proc.stdout


def test_a_calibrated_pairwise_judge_fails_a_head_whose_answers_it_prefers_less(repo: Path) -> None:
    proc = gate(repo, "pairwise-worse")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {line.split(" | ")[0]: line for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert "❌" in rows["| judge_pairwise"] and "the head loses" in rows["| judge_pairwise"]
    assert "❌" not in rows["| pass_rate"]  # every string check still passes: only the judge sees it
    assert "### Pairwise judge" in proc.stdout and "Base preferred: `policy-" in proc.stdout


def test_an_uncalibrated_pairwise_judge_only_reports(repo: Path) -> None:
    proc = gate(repo, "pairwise-uncalibrated")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| judge_pairwise"))
    assert "base wins" in row and "reported only: not calibrated" in row


@pytest.mark.filterwarnings("ignore:.*cohen_kappa_score. is undefined")
def test_kappa_matches_scikit_learn(ready) -> None:
    from sklearn.metrics import cohen_kappa_score  # type: ignore[import-untyped]

    kappa = load(ready(**ANSWERS), "judge/kappa")
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(2, 60)
        human = [rng.random() < rng.random() for _ in range(n)]
        judge = [h if rng.random() < rng.random() else not h for h in human]
        found = kappa.cohen_kappa(list(zip(human, judge, strict=True)))
        expected = cohen_kappa_score(human, judge, labels=[True, False])
        if found.kappa is None:
            assert math.isnan(expected)  # undefined there too
        else:
            assert found.kappa == pytest.approx(expected, abs=1e-12)
    preferences = ["first", "second", "tie"]  # a pairwise label: three categories
    for _ in range(100):
        n = rng.randint(3, 60)
        human3 = [rng.choice(preferences) for _ in range(n)]
        judge3 = [h if rng.random() < 0.6 else rng.choice(preferences) for h in human3]
        found = kappa.cohen_kappa(list(zip(human3, judge3, strict=True)))
        expected = cohen_kappa_score(human3, judge3, labels=preferences)
        assert found.kappa is None if math.isnan(expected) else found.kappa == pytest.approx(expected, abs=1e-12)
