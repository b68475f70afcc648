"""The baked project's GitHub workflows: validators (zizmor, JSON schema) and the security contract.

Workflows are copied without Jinja, so these tests run on what a user really gets after the
post-gen hook (which swaps the eval job's runner line).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

RUNNERS = {"ubuntu-latest": "ubuntu-latest", "self-hosted-gpu": ["self-hosted", "gpu"]}
# Answers for each runner (the pre-gen hook only accepts a GPU runner with a remote model endpoint).
RUNNER_ANSWERS = {
    "ubuntu-latest": {},
    "self-hosted-gpu": {"eval_runner": "self-hosted-gpu", "model_backend": "openai-compatible"},
}
# The only jobs that may write to pull requests / the repository.
PR_WRITERS = {("ci.yml", "report"), ("retrain.yml", "open-pr")}
CONTENT_WRITERS = {("retrain.yml", "open-pr")}
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_./-]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^\s+#\s*v\d+(?:\.\d+){0,2}\b")


def tool(name: str) -> str:
    """A validator installed next to the interpreter running the tests (or on PATH); never skipped."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: install the template's test requirements")
    return found


def workflow_files(project: Path) -> list[Path]:
    files = sorted((project / ".github" / "workflows").glob("*.yml"))
    assert [f.name for f in files] == ["ci.yml", "retrain.yml"]
    return files


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    # PyYAML (YAML 1.1) reads the `on:` key as the boolean True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def run_scripts(project: Path):
    for path in workflow_files(project):
        for job_id, job in load(path)["jobs"].items():
            for step in steps(job):
                if "run" in step:
                    yield path.name, job_id, step.get("name", "?"), step["run"]


@pytest.fixture(scope="module", params=sorted(RUNNERS))
def project(request, bake) -> Path:
    return bake(**RUNNER_ANSWERS[request.param])


@pytest.fixture(scope="module")
def default_project(bake) -> Path:
    return bake()


def test_zizmor_offline_clean(project: Path) -> None:
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", "--color=never", str(project / ".github")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_match_the_github_schema(project: Path) -> None:
    result = subprocess.run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, workflow_files(project)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dependabot_matches_its_schema(default_project: Path) -> None:
    config = default_project / ".github" / "dependabot.yml"
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ecosystems = {u["package-ecosystem"] for u in yaml.safe_load(config.read_text())["updates"]}
    assert {"github-actions", "pip"} <= ecosystems


def test_no_template_syntax_left(project: Path) -> None:
    for path in workflow_files(project):
        text = path.read_text()
        assert "cookiecutter." not in text, path.name
        assert "{%" not in text, path.name
        # Every `{{` is a GitHub expression `${{`, never a Jinja leftover.
        assert text.count("{{") == text.count("${{"), path.name


def test_top_level_permissions_and_concurrency(project: Path) -> None:
    for path in workflow_files(project):
        wf = load(path)
        assert wf.get("permissions") in ({}, {"contents": "read"}), path.name
        assert "concurrency" in wf, path.name
        assert "pull_request_target" not in wf["on"], path.name
        assert "workflow_run" not in wf["on"], path.name


def test_every_job_has_timeout_and_least_privilege(project: Path) -> None:
    for path in workflow_files(project):
        for job_id, job in load(path)["jobs"].items():
            where = f"{path.name}:{job_id}"
            assert isinstance(job.get("timeout-minutes"), int), where
            perms = job.get("permissions")
            assert isinstance(perms, dict), f"{where}: per-job permissions must be explicit"
            if perms.get("pull-requests") == "write":
                assert (path.name, job_id) in PR_WRITERS, where
            if perms.get("contents") == "write":
                assert (path.name, job_id) in CONTENT_WRITERS, where
    ci = load(workflow_files(project)[0])["jobs"]
    assert ci["report"]["permissions"] == {"pull-requests": "write"}
    retrain = load(workflow_files(project)[1])["jobs"]
    assert retrain["open-pr"]["permissions"] == {"contents": "write", "pull-requests": "write"}


def test_every_action_pinned_to_a_commit_with_version_comment(project: Path) -> None:
    for path in workflow_files(project):
        raw = [m for m in map(USES_LINE.match, path.read_text().splitlines()) if m]
        parsed = [s["uses"] for job in load(path)["jobs"].values() for s in steps(job) if "uses" in s]
        assert [m.group(1) for m in raw] == parsed, path.name
        assert parsed, path.name
        for m in raw:
            assert PINNED.match(m.group(1)), f"{path.name}: {m.group(1)} is not pinned to a full SHA"
            assert VERSION_COMMENT.match(m.group(2)), f"{path.name}: {m.group(1)} lacks a '# vX.Y.Z'"


def test_checkouts_do_not_persist_credentials(project: Path) -> None:
    for path in workflow_files(project):
        for job_id, job in load(path)["jobs"].items():
            for step in steps(job):
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step.get("with", {}).get("persist-credentials") is False, f"{path.name}:{job_id}"


def test_no_expressions_inside_run(project: Path) -> None:
    for name, job_id, step, script in run_scripts(project):
        assert "${{" not in script, f"{name}:{job_id}:{step} interpolates an expression into a shell"


def test_eval_job_runner_follows_the_answer(bake) -> None:
    for answer, expected in RUNNERS.items():
        ci = bake(**RUNNER_ANSWERS[answer]) / ".github" / "workflows" / "ci.yml"
        jobs = load(ci)["jobs"]
        assert jobs["eval"]["runs-on"] == jobs["shard"]["runs-on"] == expected, answer
        assert "# eval_runner" in ci.read_text()
        # Only the jobs that call the model move to the GPU runner.
        others = {j: job["runs-on"] for j, job in jobs.items() if j not in ("eval", "shard")}
        assert set(map(str, others.values())) == {"ubuntu-latest"}, others


def test_eval_job_contract(default_project: Path) -> None:
    jobs = load(default_project / ".github" / "workflows" / "ci.yml")["jobs"]
    ev = jobs["eval"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in ev["if"]
    checkout = next(s for s in steps(ev) if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    uses = [s.get("uses", "").split("@")[0] for s in steps(ev)]
    assert "actions/cache" in uses and "actions/upload-artifact" in uses
    cache = next(s for s in steps(ev) if s.get("uses", "").startswith("actions/cache@"))
    for part in ("runner.os", "runner.arch", "hashFiles('pyproject.toml')"):
        assert part in cache["with"]["key"]
    # Prebuilt wheels only: no compiled llama.cpp wheel to cache, so nothing keyed on the CPU.
    text = (default_project / ".github" / "workflows" / "ci.yml").read_text()
    assert "cpuinfo" not in text and "wheels" not in cache["with"]["path"]
    scripts = "\n".join(s.get("run", "") for s in steps(ev))
    for target in ("setup", "pull", "evaluate", "release-check", "gate", "register", "fetch-base"):
        assert re.search(rf"\bmake {target}\b", scripts), target
    # A PR evaluates and gates but never registers; only a push to main does, with the team store's secret.
    (register,) = [s for s in steps(ev) if "make register" in s.get("run", "")]
    assert register["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert register["env"] == {"MLFLOW_TRACKING_URI": "${{ secrets.MLFLOW_TRACKING_URI }}"}
    assert all("MLFLOW_TRACKING_URI" not in s.get("env", {}) for s in steps(ev) if s is not register)
    (check,) = [s for s in steps(ev) if "make release-check" in s.get("run", "")]
    assert check["if"] == "github.event_name == 'pull_request'"
    # The approval label reaches the gate, and adding or removing it re-runs it.
    (gate_step,) = [s for s in steps(ev) if "make gate" in s.get("run", "")]
    assert "gate-policy-approved" in gate_step["env"]["GATE_POLICY_APPROVED"]
    on = load(default_project / ".github" / "workflows" / "ci.yml")["on"]
    assert {"labeled", "unlabeled", "synchronize"} <= set(on["pull_request"]["types"])
    report = jobs["report"]
    assert report["needs"] in ("eval", ["eval"])
    assert "always()" in report["if"] and "pull_request" in report["if"]


def test_sharded_eval_contract(default_project: Path) -> None:
    """eval.shards > 1: a matrix of shard jobs from the plan job's output, merged and gated by the
    eval job (which runs whatever the shards' result, so a missing shard is reported, not hidden);
    with 1 shard the shard job is skipped and the eval job evaluates as it always did."""
    jobs = load(default_project / ".github" / "workflows" / "ci.yml")["jobs"]
    plan, shard, ev = jobs["plan"], jobs["shard"], jobs["eval"]
    assert plan["permissions"] == {"contents": "read"} and set(plan["outputs"]) == {"shards", "matrix"}
    assert "github.event.pull_request.head.repo.full_name == github.repository" in plan["if"]
    assert shard["needs"] == "plan" and shard["if"] == "needs.plan.outputs.shards != '1'"
    assert shard["strategy"]["matrix"]["shard"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert shard["strategy"]["fail-fast"] is False
    run = next(s for s in steps(shard) if "make evaluate-shard" in s.get("run", ""))
    assert run["env"]["SHARD"] == "${{ matrix.shard }}" and "secrets.MODEL_API_KEY" in run["env"]["MODEL_API_KEY"]
    upload = next(s for s in steps(shard) if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["name"] == "eval-shard-${{ matrix.shard }}"
    assert ev["needs"] == ["plan", "shard"]
    assert "!cancelled()" in ev["if"] and "needs.plan.result == 'success'" in ev["if"]
    (evaluate,) = [s for s in steps(ev) if s.get("id") == "evaluate"]
    assert "make evaluate\n" in evaluate["run"] and "make merge-shards" in evaluate["run"]
    download = next(s for s in steps(ev) if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"]["pattern"] == "eval-shard-*" and download["if"] == "needs.plan.outputs.shards != '1'"


def test_deploy_job_contract(default_project: Path) -> None:
    deploy = load(default_project / ".github" / "workflows" / "ci.yml")["jobs"]["deploy"]
    assert set(deploy["needs"]) >= {"checks", "eval"}
    assert deploy["environment"] == "production"
    assert deploy["permissions"] == {"contents": "read", "id-token": "write"}
    assert "push" in deploy["if"] and "refs/heads/main" in deploy["if"]
    uses = [s.get("uses", "").split("@")[0] for s in steps(deploy)]
    assert "aws-actions/configure-aws-credentials" in uses
    assert any('make canary-deploy COMMIT="${GITHUB_SHA}"' in s.get("run", "") for s in steps(deploy))
    # Least privilege: the deploy role is not the one every PR's eval assumes.
    text = (default_project / ".github" / "workflows" / "ci.yml").read_text()
    deploy_text = text.split("\n  deploy:", 1)[1]
    assert "AWS_DEPLOY_ROLE_ARN" in deploy_text and "AWS_ROLE_ARN" not in deploy_text.replace("AWS_DEPLOY_ROLE_ARN", "")
    assert "AWS_DEPLOY_ROLE_ARN" not in text.split("\n  deploy:", 1)[0]


def _canary_deploy(project: Path, tmp_path: Path, kubectl_exit: int, **env: str) -> subprocess.CompletedProcess:
    """The deploy job's `make canary-deploy`, with stub kubectl and docker that log their calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool_name, code in (("kubectl", kubectl_exit), ("docker", 0)):
        stub = bin_dir / tool_name
        stub.write_text(f'#!/bin/sh\necho "{tool_name} $*" >> "{tmp_path}/calls.log"\nexit {code}\n')
        stub.chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    return subprocess.run(
        ["make", "--no-print-directory", "canary-deploy"], cwd=project, check=False, capture_output=True,
        text=True, timeout=60, env={**os.environ, "PATH": path, "IMAGE_REPO": "", **env},
    )  # fmt: skip


def test_canary_deploy_without_a_cluster_deploys_nothing_and_stays_green(default_project: Path, tmp_path: Path):
    result = _canary_deploy(default_project, tmp_path, kubectl_exit=1)
    assert result.returncode == 0, result.stderr
    assert "no Kubernetes cluster reachable" in result.stdout
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls == ["kubectl version --request-timeout=5s"]  # no build, no push, no apply


def test_canary_deploy_with_a_cluster_but_no_image_repo_stops_before_building(default_project: Path, tmp_path: Path):
    result = _canary_deploy(default_project, tmp_path, kubectl_exit=0)
    assert result.returncode != 0 and "set IMAGE_REPO" in result.stderr
    assert not any(c.startswith("docker") for c in (tmp_path / "calls.log").read_text().splitlines())


def test_retrain_opens_a_pr_and_never_merges(default_project: Path) -> None:
    path = default_project / ".github" / "workflows" / "retrain.yml"
    wf = load(path)
    assert {"schedule", "workflow_dispatch", "repository_dispatch"} <= set(wf["on"])
    assert wf["on"]["repository_dispatch"] == {"types": ["drift-alert"]}
    text = path.read_text()
    assert "gh pr create" in text or "peter-evans/create-pull-request@" in text
    assert "gh pr merge" not in text and "--auto" not in text and "automerge" not in text
    # A dispatch's payload is whatever its caller sent: nothing of the event reaches a step.
    assert "github.event." not in json.dumps(wf), "retrain.yml reads the triggering event's payload"
    # It re-evaluates and gates; registering or moving an alias is for main's CI and for people.
    called = {target for job in wf["jobs"].values() for s in steps(job) for target in make_calls(s.get("run", ""))}
    assert not called & {"register", "repro", "repro-force", "promote", "rollback", "canary-deploy"}, called
    assert {"harvest", "drift", "reevaluate", "gate"} <= called, called
    assert wf["jobs"]["retrain"]["permissions"] == {"contents": "read", "pull-requests": "read", "id-token": "write"}


def test_python_version_files_exist(project: Path) -> None:
    for path in workflow_files(project):
        for job in load(path)["jobs"].values():
            for step in steps(job):
                version_file = step.get("with", {}).get("python-version-file")
                if version_file:
                    assert (project / version_file).is_file(), f"{path.name} needs {version_file}"


def makefile_targets(makefile: Path) -> set[str]:
    targets: set[str] = set()
    for line in makefile.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.%/-]+(?:[ \t]+[A-Za-z0-9_.%/-]+)*)[ \t]*::?(?!=)", line)
        if m:
            targets.update(m.group(1).split())
    return targets


def make_calls(script: str) -> list[str]:
    """The target of every `make ...` in a shell script (options and VAR=value skipped)."""
    found = []
    for m in re.finditer(r"(?:^|[\s;&|(])make((?:[ \t]+[^\s;&|)]+)+)", script):
        for word in m.group(1).split():
            if word.startswith("-") or "=" in word:
                continue
            found.append(word.strip("\"'"))
            break
    return found


def test_every_make_target_exists(default_project: Path) -> None:
    targets = makefile_targets(default_project / "Makefile")
    called = {
        (name, job_id, target)
        for name, job_id, _, script in run_scripts(default_project)
        for target in make_calls(script)
    }
    assert called, "the workflows call no make target"
    missing = sorted(c for c in called if c[2] not in targets)
    assert not missing, f"make targets missing from the Makefile: {missing}"


def test_gate_runs_after_the_pipeline_and_its_report_is_what_gets_posted(default_project: Path) -> None:
    jobs = load(default_project / ".github" / "workflows" / "ci.yml")["jobs"]
    ev = steps(jobs["eval"])

    def index(target: str) -> int:
        return next(i for i, s in enumerate(ev) if re.search(rf"\bmake {target}\b", s.get("run", "")))

    fetch, evaluate, check, gate, register = (
        index(t) for t in ("fetch-base", "evaluate", "release-check", "gate", "register")
    )
    assert fetch < evaluate < check < gate < register, "fetch the base, evaluate, check, gate, then register"
    # The release check refuses a head below the bars after `evaluate` wrote fresh metrics: the gate
    # must still run then, so the PR shows why (a failed `evaluate` leaves them stale: exit 2).
    condition = ev[gate]["if"]
    assert "!cancelled()" in condition and f"steps.{ev[check]['id']}.outcome == 'failure'" in condition
    assert f"steps.{ev[evaluate]['id']}.outcome == 'failure'" in condition
    upload = next(s for s in ev if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"
    # The file `make gate` writes is the one uploaded, and the one the report job posts.
    recipe = re.search(r"gate --base \$\(BASE\) .*?--report (\S+)", (default_project / "Makefile").read_text())
    assert recipe, "the Makefile's gate target must write its report with --report"
    report = recipe.group(1)
    assert report in upload["with"]["path"].split()
    script = steps(jobs["report"])[-1]["with"]["script"]
    assert f"'{Path(report).name}'" in script
    # Both HTML pages are in the artifact, and the comment links to it (its URL through env, not run:).
    makefile = (default_project / "Makefile").read_text()
    pages = [m.group(1) for m in re.finditer(r"--html (\S+)", makefile)]
    assert sorted(pages) == ["eval/gate.html", "eval/report.html"]
    assert set(pages) <= set(upload["with"]["path"].split())
    assert jobs["eval"]["outputs"]["artifact-url"] == f"${{{{ steps.{upload['id']}.outputs.artifact-url }}}}"
    post = steps(jobs["report"])[-1]
    assert post["env"]["ARTIFACT_URL"] == "${{ needs.eval.outputs.artifact-url }}"
    assert "process.env.ARTIFACT_URL" in post["with"]["script"]


def test_shard_targets_evaluate_as_the_dvc_stage_does(default_project: Path) -> None:
    """`make evaluate-shard` / `merge-shards` pass the evaluate stage's own paths: a path changed in
    dvc.yaml alone would merge into files the gate and dvc.lock never look at."""
    stage = yaml.safe_load((default_project / "dvc.yaml").read_text())["stages"]["evaluate"]
    args = stage["cmd"][0].split(" evaluate ", 1)[1].split()
    found = re.search(r"^EVAL_ARGS := (.*)$", (default_project / "Makefile").read_text(), re.MULTILINE)
    assert found and found.group(1).split() == args
