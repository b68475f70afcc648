"""Nothing reaches users that the gate did not pass: the whole path, played on loopback.

A baked project pushes to a bare git repository (its `origin`); a real `mlflow server` (sqlite
backend, local artifacts) is the team's store; CI's own `run:` steps run in fresh clones with the
variables of a pull request or of a push to main (tests/workflow_runner.py); `docker` is a stub that
records its calls, `kubectl` one that plays the rollout controller: it records the Rollout the deploy
patches and, asked for its status, runs the rollout's last step (the promotion Job, its arguments as
k8s/analysis.yaml has them) and reports Healthy, or Degraded when that Job fails. The model is
the project's fake endpoint answering from the golden set, which knows a queue only while the prompt
names it, so prompt changes really flip examples.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.baked import fake_model, free_port, private_project, server
from tests.bakery import project_env
from tests.conftest import run
from tests.workflow_runner import APPROVAL, Event, JobRun, checkout, run_job

pytestmark = [pytest.mark.slow, pytest.mark.long]
NAME = "release-demo"
GIT = ["git", "-c", "user.name=dev", "-c", "user.email=dev@test.invalid"]
BASELINE_MISTAKES = {"intent-13": '{"intent": "other"}', "intent-17": '{"intent": "refund"}'}
PRODUCT_LABEL = "      product: questions about a product, its size, material, stock, gift cards.\n"
KUBECTL = """#!{python}
import json, os, subprocess, sys
from pathlib import Path

import yaml

args = sys.argv[1:]
calls = Path(os.environ["CALLS"])
with calls.open("a") as log:
    log.write("kubectl " + " ".join(args) + "\\n")
shipped = Path(f"{{calls}}.rollout")
if "patch" in args and "rollout/llm-app" in args:
    shipped.write_text(json.dumps({{op["path"]: op["value"] for op in json.loads(args[args.index("-p") + 1])}}))
elif "get" in args and "rollout/llm-app" in args:
    spec = json.loads(shipped.read_text())
    image, commit = spec["/spec/template/spec/containers/0/image"], spec["/spec/template/metadata/labels/commit"]
    docs = yaml.safe_load_all(Path("k8s/analysis.yaml").read_text())
    (job,) = next(d for d in docs if d["metadata"]["name"] == "llm-app-promote")["spec"]["metrics"]
    (container,) = job["provider"]["job"]["spec"]["template"]["spec"]["containers"]
    argv = [a.replace("{{{{args.commit}}}}", commit).replace("/app/params.yaml", "params.yaml") for a in container["args"]]
    code = subprocess.run([".venv/bin/python", "-m", "{package}", *argv], stdout=sys.stderr, check=False).returncode
    phase, message = ("Healthy", "") if code == 0 else ("Degraded", "RolloutAborted: metric promote failed")
    status = {{"phase": phase, "message": message, "observedGeneration": "2"}}
    template = {{"spec": {{"containers": [{{"name": "app", "image": image}}]}}}}
    print(json.dumps({{"metadata": {{"generation": 2}}, "spec": {{"template": template}}, "status": status}}))
"""
DOCKER = '#!/bin/sh\necho "docker $*" >> "$CALLS"\nexit 0\n'


def git(repo: Path, *args: str) -> str:
    return run(repo, *GIT, *args).stdout.strip()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The project on `main` (a baseline whose prompt lacks one queue), its origin, the team store."""
    root = tmp_path_factory.mktemp("release")
    project = private_project(root / "work", project=NAME)
    store_dir = root / "team-store"
    store_dir.mkdir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    mlflow_cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    mlflow_cmd += ["--backend-store-uri", f"sqlite:///{store_dir / 'mlflow.db'}"]
    mlflow_cmd += ["--artifacts-destination", str(store_dir / "artifacts"), "--workers", "1"]
    bin_dir = root / "bin"
    bin_dir.mkdir()
    kubectl = KUBECTL.format(python=sys.executable, package=NAME.replace("-", "_"))
    for tool, script in (("kubectl", kubectl), ("docker", DOCKER)):
        (bin_dir / tool).write_text(script)
        (bin_dir / tool).chmod(0o755)
    with (
        server(mlflow_cmd, f"{uri}/health", cwd=store_dir, project=project),
        fake_model(project, wrong=BASELINE_MISTAKES, needs_label=True),
    ):
        prompt = project / "prompts" / "classify_intent.yaml"
        assert PRODUCT_LABEL in prompt.read_text()
        prompt.write_text(prompt.read_text().replace(PRODUCT_LABEL, ""))
        remote = root / "origin.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
        git(project, "remote", "add", "origin", str(remote))
        world = SimpleNamespace(
            root=root, project=project, remote=remote, uri=uri, bin=bin_dir, calls=root / "calls.log", runs=0,
        )  # fmt: skip
        change(world, "main", "Baseline: the model is the local fake; the prompt lacks the product queue")
        git(project, "push", "-q", "origin", "main")
        yield world


def client(world):
    from mlflow import MlflowClient

    return MlflowClient(world.uri, registry_uri=world.uri)


def registry_state(world) -> tuple:
    """What a change to the team store would change: versions, their tags, aliases, runs."""
    mlflow = client(world)
    versions = sorted((int(v.version), v.tags.get("git_sha")) for v in mlflow.search_model_versions(f"name='{NAME}'"))
    from mlflow.exceptions import MlflowException

    try:
        aliases = {k: int(v) for k, v in mlflow.get_registered_model(NAME).aliases.items()}
    except MlflowException:  # not registered yet
        aliases = {}
    experiments = mlflow.search_experiments()
    runs = len(mlflow.search_runs([e.experiment_id for e in experiments])) if experiments else 0
    return versions, aliases, runs


def change(world, branch: str, message: str, edit=None) -> str:
    """On `branch` (made from main when new): edit, evaluate as a developer does, commit, push."""
    project = world.project
    if branch != "main":
        git(project, "checkout", "-q", "-B", branch, "main")
    if edit is not None:
        edit(project)
    run(project, "make", "--no-print-directory", "evaluate")  # the developer's eval, committed with the change
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", message)
    git(project, "push", "-q", "-f", "origin", branch)
    return git(project, "rev-parse", "HEAD")


def merge(world, branch: str) -> str:
    project = world.project
    git(project, "checkout", "-q", "main")
    git(project, "merge", "-q", "--no-ff", branch, "-m", f"Merge {branch}")
    git(project, "push", "-q", "origin", "main")
    return git(project, "rev-parse", "HEAD")


def ci(world, job: str, event: Event, ref: str, check: bool = False, **env: str) -> tuple[JobRun, Path]:
    """One job of ci.yml on a fresh runner: a checkout of `ref` from origin."""
    world.runs += 1
    tmp = world.root / f"run-{world.runs}-{job}"
    clone = checkout(world.remote, ref, tmp / NAME)
    extra = {"PATH": f"{world.bin}:{project_env(clone)['PATH']}", "CALLS": str(world.calls)}
    if job == "eval":  # the eval job needs the plan job's outputs: plan runs on a runner of its own
        if not getattr(world, "plan", None):  # once: no commit here changes eval.shards
            planner = checkout(world.remote, ref, tmp / "plan" / NAME)
            world.plan = run_job(planner, "plan", event, tmp / "plan", {**extra, **env}).outputs
        event = dataclasses.replace(event, needs={**event.needs, "plan": world.plan})
    return run_job(clone, job, event, tmp, {**extra, **env}, check=check), clone


def pull_request(world, branch: str, labels: tuple[str, ...] = ()) -> tuple[JobRun, Path]:
    event = Event("pull_request", "refs/pull/7/merge", base_ref="main", labels=labels)
    return ci(world, "eval", event, f"origin/{branch}")


def push_to_main(world, sha: str) -> JobRun:
    event = Event("push", "refs/heads/main", sha=sha, secrets={"MLFLOW_TRACKING_URI": world.uri})
    result, _ = ci(world, "eval", event, sha, check=True)
    return result


def deploy(world, sha: str) -> JobRun:
    event = Event(
        "push", "refs/heads/main", sha=sha, secrets={"MLFLOW_TRACKING_URI": world.uri},
        vars={"IMAGE_REPO": "registry.example/llm-app"},
    )  # fmt: skip
    world.calls.write_text("")
    result, _ = ci(world, "deploy", event, sha)
    return result


def champion(world) -> int | None:
    return registry_state(world)[1].get("champion")


def version_of(world, sha: str) -> int:
    (number,) = [v for v, commit in registry_state(world)[0] if commit == sha]
    return number


def gate_report(clone: Path) -> str:
    return (clone / "eval" / "gate.md").read_text()


def test_only_what_the_gate_passed_reaches_users(world):
    baseline = git(world.project, "rev-parse", "main")
    push_to_main(world, baseline)
    assert [c for _, c in registry_state(world)[0]] == [baseline]

    # A pull request with a better prompt: the gate passes, and the team store is untouched.
    before = registry_state(world)
    better = lambda p: (p / "prompts" / "classify_intent.yaml").write_text(
        (p / "prompts" / "classify_intent.yaml").read_text().replace("      other:", PRODUCT_LABEL + "      other:")
    )
    change(world, "better", "classify_intent: the product queue", better)
    pr, clone = pull_request(world, "better")
    assert pr.ok, pr.logs
    assert gate_report(clone).startswith("## ✅ Gate passed") and "Flipped fail → pass" in gate_report(clone)
    assert registry_state(world) == before, "a pull request must not write the team store"

    # Its merge registers version N, tagged with the merge commit; the deploy ships exactly N.
    merged = merge(world, "better")
    push_to_main(world, merged)
    version = version_of(world, merged)
    shipped = deploy(world, merged)
    assert shipped.ok, shipped.logs
    assert champion(world) == version
    calls = world.calls.read_text()
    image = f"registry.example/llm-app:{merged[:12]}"
    assert f"--label org.opencontainers.image.revision={merged}" in calls
    assert f"--label org.opencontainers.image.version={version}" in calls and f"-t {image}" in calls
    assert f"docker push {image}" in calls
    # The job only sets the version (image and commit, one patch) and reads the controller's verdict.
    kubectl = [line.split()[1:] for line in calls.splitlines() if line.startswith("kubectl ")]
    assert [c[:4] for c in kubectl if c[0] != "version"] == [
        ["-n", "llm-app", "patch", "rollout/llm-app"], ["-n", "llm-app", "get", "rollout/llm-app"],
    ]  # fmt: skip
    assert f'"value": "{image}"' in calls and f'"value": "{merged}"' in calls

    # A pull request that loosens the bars and worsens the prompt: the base's bars judge it.
    def loosen(project: Path) -> None:
        params = project / "params.yaml"
        text = params.read_text()
        for key, value in (
            ("pass_rate", "0.1"),
            ("tag_intent_pass_rate", "0.1"),
            ("alpha", "0.000001"),
            ("max_drop", "1.0"),
        ):
            text, n = re.subn(rf"(?m)^(\s+{key}:) [0-9.]+", rf"\g<1> {value}", text, count=1)
            assert n == 1, key
        params.write_text(text)
        prompt = project / "prompts" / "classify_intent.yaml"
        prompt.write_text(
            re.sub(r"(?m)^      (order_status|refund|account|product|other): .*\n", "", prompt.read_text())
        )

    change(world, "loosen", "Looser bars, shorter prompt", loosen)
    pr, clone = pull_request(world, "loosen")
    assert pr.outcomes["release-check"] == "success"  # the head's own bars would let it through
    report = gate_report(clone)
    assert not pr.ok and report.startswith("## ❌ Gate failed")
    policy = report.split("### Policy changes", 1)[1].split("| metric |", 1)[0]
    for bar in ("thresholds.min.pass_rate: 0.35 → 0.1", "thresholds.min.tag_intent_pass_rate: 0.4 → 0.1",
                "gate.alpha: 0.05 → 1e-06", "gate.max_drop: 0.1 → 1.0"):  # fmt: skip
        assert f"`{bar} (loosened)`" in policy, policy
    assert "needs approval" in policy
    approved = run(clone, "make", "--no-print-directory", "gate", "BASE=origin/main", check=False,
                   GATE_POLICY_APPROVED="true")  # fmt: skip
    assert approved.returncode == 1, "approved, the base's bars still judge the change"
    report = gate_report(clone)
    assert f"approved ({APPROVAL})" in report
    assert re.search(r"\| pass_rate \| .*❌ .*≤ α=0.05", report), report

    # A pull request that deletes the golden examples main fails: named, and only with approval.
    def drop_failing(project: Path) -> None:
        golden = project / "eval" / "golden.jsonl"
        lines = golden.read_text().splitlines(keepends=True)
        golden.write_text("".join(x for x in lines if json.loads(x)["id"] not in BASELINE_MISTAKES))

    change(world, "easier", "Drop two examples", drop_failing)
    pr, clone = pull_request(world, "easier")
    assert not pr.ok and "golden examples removed (2): `intent-13`, `intent-17`" in gate_report(clone)
    pr, clone = pull_request(world, "easier", labels=(APPROVAL,))
    assert pr.ok and "Gate passed" in gate_report(clone).splitlines()[0], pr.logs
    assert f"approved ({APPROVAL})" in gate_report(clone)

    # Merges A then B; the deploy of A, after B registered, ships A's version, not B's.
    notes = lambda text: lambda p: (p / "README.md").write_text((p / "README.md").read_text() + text)
    change(world, "a", "Docs A", notes("\nA\n"))
    first = merge(world, "a")
    push_to_main(world, first)
    change(world, "b", "Docs B", notes("\nB\n"))
    second = merge(world, "b")
    push_to_main(world, second)
    assert registry_state(world)[1]["candidate"] == version_of(world, second)
    shipped = deploy(world, first)
    assert shipped.ok, shipped.logs
    assert champion(world) == version_of(world, first) != version_of(world, second)

    # A commit that no eval registered: the deploy refuses, nothing moves.
    untested = change(world, "main", "A commit CI never evaluated", notes("\nC\n"))
    before = registry_state(world)
    refused = deploy(world, untested)
    assert not refused.ok
    log = next(iter(v for v in refused.logs.values() if "was registered from commit" in v), "")
    assert f"no version of {NAME} was registered from commit {untested[:12]}" in log, refused.logs
    assert registry_state(world) == before and "docker" not in world.calls.read_text()
