"""The retrain loop's workflow, played on loopback for each of its triggers.

A baked project pushes `main` to a bare git repository (its `origin`); capture files sit in a
directory that stands for the capture bucket (`vars.CAPTURE_URL`: `capture fetch` reads any fsspec
URL, a local path included); the model is the project's fake endpoint answering from the golden set;
`gh` is a stub that records its calls and plays one pull request per branch. Both jobs of
retrain.yml run their `run:` steps in fresh clones (tests/workflow_runner.py), the patch and the PR's
body travelling between them as the artifact does. Proven: one PR is opened, then updated (never a
second), on top of the labels a person pushed to its branch; its body holds the candidates, the drift
and the gate sections; nothing is merged and the registry is never touched.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest

from tests.baked import fake_model, private_project
from tests.bakery import project_env
from tests.conftest import run
from tests.workflow_runner import Event, JobRun, checkout, gh_calls, run_job, stub_gh

pytestmark = [pytest.mark.slow, pytest.mark.long]
GIT = ["git", "-c", "user.name=dev", "-c", "user.email=dev@test.invalid"]
BRANCH = "retrain/loop"
TODAY = dt.datetime.now(dt.UTC).date().isoformat()


def answer(request_id: str, message: str, status: int = 200, alias: str = "champion") -> dict:
    """An `answer` capture line of the example's flow, as production/records.py documents it."""
    return {
        "schema": 1, "kind": "answer", "at": f"{TODAY}T08:00:00Z", "request_id": request_id,
        "target": "flow:answer", "route": "/v1/answer", "status": status, "request": {"message": message},
        "reply": None if status >= 500 else {"intent": "other", "answer": "Let me check."},
        "category": "other", "fallback": True, "fields": {}, "mirror_of": None,
        "version": {"id": "1", "alias": alias, "prompt_version": "p", "prompts": {}, "model": "fake"},
        "provider": "fake fingerprint=fake-1", "latency_ms": 20.0, "model_ms": 15.0,
        "tokens_in": 12, "tokens_out": 6, "error": "model_error" if status >= 500 else None,
    }  # fmt: skip


def rating(request_id: str, value: str) -> dict:
    return {"schema": 1, "kind": "feedback", "at": f"{TODAY}T09:00:00Z", "request_id": request_id, "rating": value}


def write_captures(project: Path, path: Path, lines: list[dict]) -> None:
    """Capture lines written by the baked package's own `records.dumps` (the writer's form)."""
    package = next(p.name for p in (project / "src").iterdir() if (p / "production").is_dir())
    code = f"import json, sys; from {package}.production import records; "
    code += "sys.stdout.write(''.join(records.dumps(r) for r in json.load(sys.stdin)))"
    proc = subprocess.run(
        ["python", "-c", code], cwd=project, env=project_env(project), input=json.dumps(lines),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(proc.stdout)


def git(repo: Path, *args: str) -> str:
    return run(repo, *GIT, *args).stdout.strip()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """main evaluated on the fake model and pushed; a capture bucket; a stub gh; a registry path."""
    root = tmp_path_factory.mktemp("retrain")
    project = private_project(root / "work")
    with fake_model(project):
        run(project, "make", "--no-print-directory", "evaluate")
        remote = root / "origin.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
        git(project, "remote", "add", "origin", str(remote))
        git(project, "add", "-A")
        git(project, "commit", "-q", "-m", "main: evaluated on the fake model")
        git(project, "push", "-q", "origin", "main")
        gh_state = root / "gh"
        env = stub_gh(root / "bin", gh_state)
        registry = root / "registry.db"
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{registry}"
        yield {"root": root, "project": project, "remote": remote, "bucket": root / "bucket", "gh": gh_state,
               "bin": root / "bin", "env": env, "registry": registry, "runs": 0}  # fmt: skip


def retrain(world: dict, trigger: str, bucket: Path | None = None) -> tuple[JobRun, JobRun | None]:
    """Both jobs of retrain.yml for `trigger`, each on a fresh runner; open-pr only when it would run."""
    world["runs"] += 1
    tmp = world["root"] / f"run-{world['runs']}-{trigger}"
    artifacts = tmp / "artifacts"
    variables = {"CAPTURE_URL": str(bucket or world["bucket"])}

    def job(name: str, needs: dict) -> JobRun:
        clone = checkout(world["remote"], "main", tmp / name / "support-bot")
        env = {**world["env"], "PATH": f"{world['bin']}:{project_env(clone)['PATH']}"}
        event = Event(trigger, "refs/heads/main", vars=variables, needs=needs)
        return run_job(clone, name, event, tmp / name, env, workflow_file="retrain.yml", artifacts=artifacts)

    first = job("retrain", {})
    if first.outputs["changed"] != "true":
        return first, None
    return first, job("open-pr", {"retrain": first.outputs})


def branch_file(world: dict, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{BRANCH}:{path}"], cwd=world["remote"], capture_output=True, text=True, check=True
    ).stdout


def test_the_loop_opens_one_pr_then_updates_it_for_each_trigger(world):
    candidates = f"data/raw/candidates-{TODAY}.jsonl"
    write_captures(
        world["project"],
        world["bucket"] / TODAY / "pod-a.jsonl",
        [
            answer("r1", "The blender I got is missing its lid, what now?"),
            rating("r1", "down"),
            answer("r2", "Can I change the delivery address after ordering?", status=502, alias="candidate"),
            answer("r3", "Do you deliver on Sundays?"),
            rating("r3", "up"),
        ],
    )
    scheduled, opened = retrain(world, "schedule")
    assert scheduled.ok and opened is not None and opened.ok, (scheduled.outcomes, scheduled.logs)
    assert scheduled.outputs["open"] == "false"
    assert [c[:2] for c in gh_calls(world["gh"])].count(["pr", "create"]) == 1
    body = (world["gh"] / "body-1.md").read_text()
    assert "## Candidates to label" in body and "2 candidate(s) (negative_feedback 1, canary_failure 1)" in body
    assert "## Drift: " in body and "## Gate against main: success" in body, body
    # The captures' provider ("fake") is not the one main's results recorded: a finding, not a failure.
    drift = body.split("## Drift: ", 1)[1].split("## Gate", 1)[0]
    assert drift.startswith("**drift found") and "# Drift report" in drift and "'fake fingerprint=fake-1'" in drift
    assert scheduled.outcomes["drift"] == "failure" and scheduled.conclusions["drift"] == "success"
    lines = [json.loads(line) for line in branch_file(world, candidates).splitlines()]
    assert [c["harvest"]["request_id"] for c in lines] == ["r1", "r2"] and all("todo" in c for c in lines)

    # A person labels the first candidate on the PR's branch.
    person = checkout(world["remote"], f"origin/{BRANCH}", world["root"] / "person")
    labelled = {k: v for k, v in lines[0].items() if k != "todo"} | {"contains": ["lid"]}
    (person / candidates).write_text("\n".join([json.dumps(labelled), json.dumps(lines[1])]) + "\n")
    git(person, "commit", "-q", "-am", "Label the missing-lid candidate")
    git(person, "push", "-q", "origin", f"HEAD:{BRANCH}")
    labelled_commit = git(person, "rev-parse", "HEAD")

    # More production traffic, then a run by hand: the same PR, on top of the person's commit.
    write_captures(
        world["project"],
        world["bucket"] / TODAY / "pod-b.jsonl",
        [answer("r4", "Why was I charged twice for one order?"), rating("r4", "down")],
    )
    by_hand, updated = retrain(world, "workflow_dispatch")
    assert by_hand.ok and by_hand.outputs["open"] == "true" and updated is not None and updated.ok
    assert "1 candidate(s) (negative_feedback 1), 2 duplicate(s) skipped" in (world["gh"] / "body-2.md").read_text()
    history = subprocess.run(
        ["git", "rev-list", BRANCH], cwd=world["remote"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert labelled_commit in history, "the person's labels were overwritten"
    lines = [json.loads(line) for line in branch_file(world, candidates).splitlines()]
    assert lines[0] == labelled and [c["harvest"]["request_id"] for c in lines] == ["r1", "r2", "r4"]
    evaluated = {json.loads(line)["id"] for line in branch_file(world, "eval/results.jsonl").splitlines()}
    assert labelled["id"] in evaluated and lines[1]["id"] not in evaluated, "only labelled candidates are scored"

    # An alert in a week when nothing was captured: nothing to harvest is not a failure, and the PR
    # is updated (or left as it is), never opened a second time.
    (world["root"] / "empty-bucket").mkdir()
    alerted, _ = retrain(world, "repository_dispatch", bucket=world["root"] / "empty-bucket")
    assert alerted.ok, alerted.logs
    assert alerted.outcomes["drift"] == "failure", "nothing captured: drift cannot judge, and says so"
    calls = gh_calls(world["gh"])
    assert [c[:2] for c in calls].count(["pr", "create"]) == 1
    assert not [c for c in calls if "merge" in c], calls
    assert not world["registry"].exists(), "the loop touched the registry"
