"""The template repository's own workflow (.github/workflows/template.yml): validators and contract.

Pull requests run the fast tier, pushes to main the full one, the schedule the nightly one; the
workflow is hardened like the generated project's (tests/test_workflows.py checks those).
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.bakery import ROOT
from tests.conftest import COOKIECUTTER
from tests.test_workflows import (
    PINNED,
    USES_LINE,
    VERSION_COMMENT,
    load,
    make_calls,
    makefile_targets,
    steps,
    tool,
)

WORKFLOW = ROOT / ".github" / "workflows" / "template.yml"
GENERATED_CI = ROOT / "{{cookiecutter.project}}" / ".github" / "workflows" / "ci.yml"
# The pieces a job's `if:` may use, so the conditions below can be evaluated here.
CONDITION_TOKEN = re.compile(r"\s*(github\.event_name|inputs\.tier|'[a-z_]*'|==|!=|\|\||&&|\(|\))\s*")


@pytest.fixture(scope="module")
def workflow() -> dict:
    return load(WORKFLOW)


def runs(job: dict, event: str, tier: str | None = None) -> bool:
    """Whether GitHub runs `job` (or one of its steps) for `event` (and a workflow_dispatch `tier` input)."""
    if "if" not in job:
        return True
    condition = str(job["if"]).strip().removeprefix("${{").removesuffix("}}")
    tokens = [m.group(1) for m in CONDITION_TOKEN.finditer(condition)]
    assert sum(len(m.group(0)) for m in CONDITION_TOKEN.finditer(condition)) == len(condition), (
        f"this test cannot read the condition {condition!r}: teach it the new expression"
    )
    python = {"github.event_name": repr(event), "inputs.tier": repr(tier), "||": "or", "&&": "and"}
    # Only the tokens above reach eval: names replaced by string literals, operators, parentheses.
    return eval(" ".join(python.get(t, t) for t in tokens), {"__builtins__": {}})


def targets(workflow: dict, event: str, tier: str | None = None) -> set[str]:
    """The make targets the jobs started for `event` run (the steps' own conditions applied too)."""
    return {
        target
        for job in workflow["jobs"].values()
        if runs(job, event, tier)
        for step in steps(job)
        if runs(step, event, tier)
        for target in make_calls(step.get("run", ""))
    }


def test_zizmor_offline_clean() -> None:
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", "--color=never", str(ROOT / ".github")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_matches_the_github_schema() -> None:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_triggers(workflow: dict) -> None:
    on = workflow["on"]
    assert set(on) == {"pull_request", "push", "schedule", "workflow_dispatch"}
    assert on["push"]["branches"] == ["main"]
    assert on["schedule"] and all("cron" in entry for entry in on["schedule"])


def test_pull_requests_run_the_fast_tier_main_the_full_one_and_the_schedule_the_nightly_one(workflow: dict) -> None:
    assert targets(workflow, "pull_request") == {"setup", "test-fast"}
    assert targets(workflow, "push") == targets(workflow, "workflow_dispatch", "full") == {"setup", "test"}
    assert (
        targets(workflow, "schedule") == targets(workflow, "workflow_dispatch", "nightly") == {"setup", "test-nightly"}
    )
    assert targets(workflow, "workflow_dispatch", "fast") == {"setup", "test-fast"}
    assert {"setup", "test", "test-fast", "test-nightly"} <= makefile_targets(ROOT / "Makefile")


def test_permissions_concurrency_and_timeouts(workflow: dict) -> None:
    assert workflow["permissions"] == {}
    concurrency = workflow["concurrency"]
    # Superseded PR runs are cancelled; runs on main never are.
    assert concurrency["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
    assert "github.event.pull_request.number || github.ref" in concurrency["group"]
    for job_id, job in workflow["jobs"].items():
        assert job["permissions"] == {"contents": "read"}, job_id
        assert isinstance(job.get("timeout-minutes"), int), job_id
    assert workflow["jobs"]["full"]["timeout-minutes"] == 90


def test_every_action_pinned_to_a_commit_with_version_comment() -> None:
    raw = [m for m in map(USES_LINE.match, WORKFLOW.read_text().splitlines()) if m]
    parsed = [s["uses"] for job in load(WORKFLOW)["jobs"].values() for s in steps(job) if "uses" in s]
    assert raw and [m.group(1) for m in raw] == parsed
    for m in raw:
        assert PINNED.match(m.group(1)), f"{m.group(1)} is not pinned to a full SHA"
        assert VERSION_COMMENT.match(m.group(2)), f"{m.group(1)} lacks a '# vX.Y.Z'"
    # The same pins as the generated project's CI: one set to keep fresh.
    generated = {
        m.group(1).split("@")[0]: m.group(1) for m in map(USES_LINE.match, GENERATED_CI.read_text().splitlines()) if m
    }
    for m in raw:
        action = m.group(1).split("@")[0]
        assert generated.get(action, m.group(1)) == m.group(1), f"{action}: pinned differently from ci.yml"


def test_checkouts_do_not_persist_credentials_and_run_has_no_expressions(workflow: dict) -> None:
    for job_id, job in workflow["jobs"].items():
        for step in steps(job):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, job_id
            assert "${{" not in step.get("run", ""), f"{job_id}: {step.get('name')} interpolates an expression"


def test_caches_hold_uv_keyed_on_the_platform(workflow: dict) -> None:
    for job_id, job in workflow["jobs"].items():
        (cache,) = [s for s in steps(job) if s.get("uses", "").startswith("actions/cache@")]
        assert cache["with"]["path"].split() == ["~/.cache/uv"], job_id  # prebuilt wheels only: nothing compiled
        for part in ("runner.os", "runner.arch"):
            assert part in cache["with"]["key"], (job_id, part)
            assert all(part in key for key in cache["with"]["restore-keys"].splitlines()), (job_id, part)


def test_full_tier_has_every_python_version_choice_with_the_default_last(workflow: dict) -> None:
    (setup,) = [s for s in steps(workflow["jobs"]["full"]) if s.get("uses", "").startswith("actions/setup-python@")]
    versions = setup["with"]["python-version"].split()
    choices = COOKIECUTTER["python_version"]
    assert sorted(versions) == sorted(choices)
    # The last one listed is the runner's `python3`: `make setup` builds the default venv with it.
    assert versions[-1] == choices[0]
