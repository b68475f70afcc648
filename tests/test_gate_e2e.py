"""The PR gate end to end, in a real git repository baked from the template.

main holds a baseline (`dvc repro` committed: metrics, per-example results, dvc.lock). Branches:
`worse` drops the intent labels from classify_intent (a clearly worse prompt), `readme` only edits
the README. The model is the project's fake model on 127.0.0.1 (params `model.base_url`) answering from the
golden set; it knows an intent only while the prompt names it: the worse prompt produces real pass -> fail flips, deterministically
and in milliseconds. The last test runs the CI workflow's own `run:` steps in a fresh clone.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.baked import fake_model
from tests.conftest import run
from tests.workflow_runner import Event, checkout, run_job

pytestmark = [pytest.mark.slow, pytest.mark.long]
ANSWERS = {"project": "gate-demo"}  # a bake of its own: these tests commit and branch in it
GIT = ["git", "-c", "user.name=gate test", "-c", "user.email=gate@test.invalid"]
# A realistic baseline is not perfect: two intents wrong (one of them a prompt injection that works).
BASELINE_MISTAKES = {"intent-13": '{"intent": "other"}', "intent-17": '{"intent": "refund"}'}


def commit(project: Path, message: str) -> None:
    run(project, "git", "add", "-A")
    run(project, *GIT, "commit", "-q", "-m", message)


def drop_labels(prompt: Path) -> None:
    """The worse prompt: the list of intents removed from the system message (the schema stays)."""
    text = prompt.read_text()
    worse = re.sub(r"(?m)^      (order_status|refund|account|product|other): .*\n", "", text)
    assert worse != text, "classify_intent changed shape: update this test's edit"
    prompt.write_text(worse)


@pytest.fixture(scope="module")
def repo(ready, tmp_path_factory) -> Iterator[Path]:
    """The baked repo: baseline on main; branches `worse`, `readme`, `corrupt-base`."""
    project = ready(**ANSWERS)
    with fake_model(project, wrong=BASELINE_MISTAKES, needs_label=True), pytest.MonkeyPatch.context() as env:
        # `register` may log to MLflow: never into the user's store.
        env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")
        yield build_branches(project)


def build_branches(project: Path) -> Path:
    run(project, "python", "-m", "dvc", "repro")
    commit(project, "Baseline: eval results on main")

    run(project, "git", "checkout", "-q", "-b", "worse")
    drop_labels(project / "prompts" / "classify_intent.yaml")
    # Below the absolute thresholds: `register` refuses, but `evaluate` has recorded everything, so
    # the gate can still report the bad head (CI runs the gate after a failed repro for this reason).
    worse = run(project, "python", "-m", "dvc", "repro", check=False)
    assert worse.returncode != 0 and "register: refused: thresholds missed" in worse.stderr, worse.stderr
    commit(project, "classify_intent: shorter prompt")

    run(project, "git", "checkout", "-q", "-b", "readme", "main")
    with (project / "README.md").open("a") as readme:
        readme.write("\nA line that changes nothing the model sees.\n")
    commit(project, "README: one more line")

    run(project, "git", "checkout", "-q", "-b", "corrupt-base", "main")
    (project / "eval" / "metrics.json").write_text('{"pass_rate": 0.9,')
    commit(project, "a broken metrics file on a base branch")
    return project


def on(repo: Path, branch: str) -> Path:
    run(repo, "git", "checkout", "-q", "-f", branch)
    run(repo, "git", "clean", "-q", "-f", "-d")  # untracked leftovers only; ignored caches stay
    return repo


def gate(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return run(repo, "gate-demo", "gate", *args, check=False, env=env)


def test_worse_prompt_fails_naming_the_metric_and_the_flips(repo: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    proc = gate(on(repo, "worse"), "--base", "main", GITHUB_STEP_SUMMARY=str(summary))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = (repo / "eval" / "gate.md").read_text()
    assert report.startswith("## ❌ Gate failed (base `main`)")
    pass_rate = next(line for line in report.splitlines() if line.startswith("| pass_rate |"))
    assert "❌" in pass_rate and "pass→fail" in pass_rate and "≤ α=0.05" in pass_rate
    # 34 intents lose their label: 33 stable passes now fail, the injected one flips back to pass;
    # so do the 6 end-to-end examples whose queue is not `other` (the flow's first call classifies).
    assert "### Flipped pass → fail (39)" in report and "### Flipped fail → pass (1)" in report
    row = next(line for line in report.splitlines() if line.startswith("| intent-04 |"))
    assert "I want my money back for the broken lamp." in row
    assert row.count('{"intent": "refund"}') == 2 and row.endswith('{"intent": "other"} |')  # expected, old | new
    assert "| pass_rate | 70 | 39 | 1 | 0 |" in report
    # The power from this comparison: 1 fail->pass of 70 is a churn of 2/70, with which 70 examples
    # detect drops of 12 points (gate/power.py; tests/test_power.py checks the figures themselves).
    assert report.splitlines()[2] == "This golden set detects drops ≥ 12 pts (80% power, α = 0.05)."
    e2e = next(line for line in report.splitlines() if line.startswith("| e2e-refund |"))
    expected, old, new = e2e.split(" | ")[2:5]
    assert '"intent": "refund"' in expected and '"intent": "refund"' in old and '"intent": "other"' in new
    assert summary.read_text() == "earlier step\n" + report + "\n"


def test_irrelevant_change_passes(repo: Path) -> None:
    proc = gate(on(repo, "readme"), "--base", "main")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("## ✅ Gate passed (base `main`)")
    assert "| pass_rate | 70 | 0 | 0 | 0 | 1 |" in proc.stdout
    assert "Flipped" not in proc.stdout


def test_first_run_without_base_results_passes_with_a_note(repo: Path) -> None:
    proc = gate(on(repo, "readme"), "--base", "main~1")  # the bake commit: no eval results yet
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "first run?" in proc.stdout and "paired statistics skipped" in proc.stdout
    assert "🆕" in proc.stdout and "❌" not in proc.stdout


def null_pass_rate(project: Path) -> None:
    path = project / "eval" / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "pass_rate": None}))


def stale_prompt(project: Path) -> None:
    with (project / "prompts" / "extract_order.yaml").open("a") as prompt:
        prompt.write("# edited after the last `dvc repro`\n")


UNUSABLE: dict[str, tuple[Callable[[Path], object], list[str], str]] = {
    "corrupt metrics": (
        lambda p: (p / "eval" / "metrics.json").write_text('{"pass_rate": 0.9,'),
        [],
        "eval/metrics.json (head) is not valid JSON",
    ),
    "missing metrics": (lambda p: (p / "eval" / "metrics.json").unlink(), [], "eval/metrics.json is missing"),
    "null required metric": (null_pass_rate, [], "required metric 'pass_rate' is null in eval/metrics.json"),
    "missing results": (lambda p: (p / "eval" / "results.jsonl").unlink(), [], "eval/results.jsonl is missing"),
    "corrupt results": (
        lambda p: (p / "eval" / "results.jsonl").write_text('{"id": "intent-01"\n'),
        [],
        "eval/results.jsonl (head):1: not valid JSON",
    ),
    "stale metrics": (stale_prompt, [], "eval/metrics.json is stale"),
    "unknown base": (lambda p: None, ["--base", "no-such-branch"], "unknown base revision 'no-such-branch'"),
    "corrupt base": (lambda p: None, ["--base", "corrupt-base"], "eval/metrics.json at corrupt-base is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE))
def test_unusable_input_exits_2_naming_the_reason(repo: Path, case: str) -> None:
    break_it, args, reason = UNUSABLE[case]
    break_it(on(repo, "readme"))
    proc = gate(repo, "--base", "main", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert reason in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    report = (repo / "eval" / "gate.md").read_text()
    assert report.startswith("## ⛔ Gate could not judge") and reason.replace("`", "'") in report


# ---- the CI workflow's own steps, run in a fresh clone -------------------------------------


def test_ci_run_steps_work_in_a_fresh_clone(repo: Path, tmp_path: Path) -> None:
    """The `checks`, `plan` and `eval` jobs of a PR from `readme` into main, each on a fresh "runner". The
    `checks` job is the default project's own lint and whole suite (the embedded model's tests
    included, none skipped): the full tier runs that suite here, in a fresh clone."""
    on(repo, "main")
    event = Event("pull_request", "refs/pull/7/merge", base_ref="main")
    outcomes = {}
    for job_id in ("checks", "plan", "eval"):
        clone = checkout(repo, "readme", tmp_path / job_id / "gate-demo")  # origin is the repository
        store = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / job_id / 'mlflow.db'}"}
        result = run_job(clone, job_id, event, tmp_path / job_id, store)
        outcomes[job_id], logs = result.outcomes, result.logs
        event.needs[job_id] = result.outputs
        if job_id == "plan":  # eval.shards 1: no shard job, the eval job evaluates as it always did
            assert result.outputs == {"shards": "1", "matrix": "[0]"}, result.outputs
        if job_id == "checks":
            suite = logs["Unit tests"]
            assert re.search(r"\d+ passed", suite) and " skipped" not in suite and "failed" not in suite, suite
    assert len(outcomes["checks"]) >= 3 and set(outcomes["checks"].values()) == {"success"}, outcomes
    assert outcomes["eval"]["evaluate"] == outcomes["eval"]["release-check"] == "success", outcomes
    assert "skipped" == outcomes["eval"][next(k for k in outcomes["eval"] if "Register" in k)]  # a PR registers nothing
    assert (clone / "eval" / "gate.md").is_file()
    assert "## ✅ Gate passed (base `origin/main`)" in (tmp_path / "eval" / "step-summary.md").read_text()
    assert not (tmp_path / "eval" / "mlflow.db").exists()


def make_gate(repo: Path, base: str = "main", **env: str) -> subprocess.CompletedProcess:
    return run(repo, "make", "--no-print-directory", "gate", f"BASE={base}", check=False, env=env)


def test_make_gate_exits_as_the_gate_does(repo: Path) -> None:
    """0 pass, 1 regression, 2 cannot judge: through make, as CI calls it."""
    passed = make_gate(on(repo, "readme"))
    assert passed.returncode == 0 and "## ✅ Gate passed" in passed.stdout, passed.stdout + passed.stderr
    failed = make_gate(on(repo, "worse"))
    assert failed.returncode == 1 and "## ❌ Gate failed" in failed.stdout, failed.stdout + failed.stderr
    unknown = make_gate(on(repo, "readme"), base="no-such-branch")
    assert unknown.returncode == 2 and "unknown base revision" in unknown.stdout + unknown.stderr


def test_a_golden_set_edited_without_repro_cannot_be_judged(repo: Path) -> None:
    golden = on(repo, "readme") / "eval" / "golden.jsonl"
    lines = golden.read_text().splitlines()
    golden.write_text("\n".join(lines[8:]) + "\n")  # 8 examples deleted, the eval not re-run
    proc = make_gate(repo)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "eval/metrics.json is stale: stage preprocess" in proc.stdout + proc.stderr
    golden.write_text("\n".join(lines) + "\n{broken\n")
    assert make_gate(repo).returncode == 2
