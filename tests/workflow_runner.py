"""Run a baked project's GitHub workflow jobs here: each `run:` step, in order, as GitHub's bash does.

`uses:` steps are skipped (they install tools or talk to GitHub); `make setup*` links the shared venv
instead of installing it. Expressions and `if:` conditions are evaluated for one `Event` (a pull
request, a push to main): a step's `if:` must be one this module knows, so a new condition in a
workflow is taught here before a test relies on it. A condition without a status function gets
GitHub's implicit `success()`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.bakery import link_venv, project_env

SETUP_TARGETS = {"setup", "setup-dev"}  # replaced by linking the shared venv (what they would install)
APPROVAL = "gate-policy-approved"


@dataclass
class Event:
    """What a workflow run sees: the event, the ref, the PR's labels, the repository's settings."""

    name: str  # "pull_request" | "push"
    ref: str  # refs/pull/7/merge | refs/heads/main
    sha: str = ""
    base_ref: str = ""  # a pull request's target branch
    labels: tuple[str, ...] = ()
    secrets: dict[str, str] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)

    @property
    def on_main(self) -> bool:
        return self.name == "push" and self.ref == "refs/heads/main"

    def expression(self, text: str) -> str:
        text = text.strip()
        known = {
            "github.base_ref": self.base_ref,
            "github.event_name": self.name,
            f"contains(github.event.pull_request.labels.*.name, '{APPROVAL}')": str(APPROVAL in self.labels).lower(),
        }
        if text in known:
            return known[text]
        scope, _, name = text.partition(".")
        if scope in ("secrets", "vars") and re.fullmatch(r"[A-Z0-9_]+", name):
            return getattr(self, scope).get(name, "")
        pytest.fail(f"the smoke run does not know the expression {text!r}: teach tests/workflow_runner.py")

    def env(self, tmp: Path) -> dict[str, str]:
        """The variables a GitHub runner sets for this event."""
        ref_name = self.ref.removeprefix("refs/heads/").removeprefix("refs/pull/")
        return {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": self.name,
            "GITHUB_REF": self.ref,
            "GITHUB_REF_NAME": ref_name,
            "GITHUB_SHA": self.sha,
            "GITHUB_RUN_ID": "4242",
            "GITHUB_REPOSITORY": "team/llm-app",
            "GITHUB_SERVER_URL": "https://github.example",
            "GITHUB_STEP_SUMMARY": str(tmp / "step-summary.md"),
            "GITHUB_OUTPUT": str(tmp / "github-output"),
            "RUNNER_TEMP": str(tmp),
        }


Condition = Callable[[Event, dict[str, str]], bool]


def _all_good(outcomes: dict[str, str]) -> bool:
    return all(o in ("success", "skipped") for o in outcomes.values())


# Every `if:` of a `run:` step in the baked workflows.
CONDITIONS: dict[str, Condition] = {
    "github.event_name == 'pull_request'": lambda ev, o: _all_good(o) and ev.name == "pull_request",
    "github.event_name == 'push' && github.ref == 'refs/heads/main'": lambda ev, o: _all_good(o) and ev.on_main,
    "${{ !cancelled() && (success() || steps.evaluate.outcome == 'failure' || steps.release-check.outcome == 'failure') }}": (
        lambda ev, o: _all_good(o) or "failure" in (o.get("evaluate"), o.get("release-check"))
    ),
    "vars.EKS_CLUSTER != ''": lambda ev, o: _all_good(o) and bool(ev.vars.get("EKS_CLUSTER")),
    "vars.AWS_DEPLOY_ROLE_ARN != '' && vars.IMAGE_REPO != ''": (
        lambda ev, o: _all_good(o) and bool(ev.vars.get("AWS_DEPLOY_ROLE_ARN") and ev.vars.get("IMAGE_REPO"))
    ),
}


@dataclass
class JobRun:
    outcomes: dict[str, str]  # step id (or name) -> success | failure | skipped
    logs: dict[str, str]  # step id -> stdout + stderr

    @property
    def ok(self) -> bool:
        return all(o != "failure" for o in self.outcomes.values())


def expand(value: object, event: Event) -> str:
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: event.expression(m.group(1)), str(value))


def run_job(
    clone: Path, job_id: str, event: Event, tmp: Path, extra_env: dict[str, str] | None = None, check: bool = True
) -> JobRun:
    """Each `run:` step of the job in `clone`'s ci.yml, for `event`; with `check`, a failed step fails
    the test (else the run goes on as GitHub's would, skipping what success() guards)."""
    workflow = yaml.safe_load((clone / ".github" / "workflows" / "ci.yml").read_text())
    job = workflow["jobs"][job_id]
    tmp.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV", "GITHUB_"))}
    base |= {**event.env(tmp), "PATH": project_env(clone)["PATH"], **(extra_env or {})}
    result = JobRun({}, {})
    for number, step in enumerate(job["steps"]):
        if "run" not in step:
            continue
        name = step.get("id") or step.get("name") or f"step {number}"
        condition = step.get("if")
        if condition is None:
            runs = _all_good(result.outcomes)
        elif condition in CONDITIONS:
            runs = CONDITIONS[condition](event, result.outcomes)
        else:
            pytest.fail(f"{job_id}: the smoke run does not know the condition {condition!r}")
        if not runs:
            result.outcomes[name] = "skipped"
            continue
        script = step["run"]
        words = shlex.split(script) if script.lstrip().startswith("make ") else []
        if words[:1] == ["make"] and len(words) == 2 and words[1] in SETUP_TARGETS:
            link_venv(clone)  # `make setup*` would install these same packages (minutes, network)
            result.outcomes[name] = "success"
            continue
        env = dict(base)
        for scope in (workflow.get("env", {}), job.get("env", {}), step.get("env", {})):
            env.update({k: expand(v, event) for k, v in scope.items()})
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=clone, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        result.outcomes[name] = "success" if proc.returncode == 0 else "failure"
        result.logs[name] = proc.stdout + proc.stderr
        if check:
            assert proc.returncode == 0, f"{job_id}: {name!r} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return result


def checkout(remote: Path | str, ref: str, dest: Path) -> Path:
    """actions/checkout with fetch-depth 0: a clone of `remote` at `ref`, origin/* for every branch."""
    subprocess.run(["git", "clone", "-q", str(remote), str(dest)], check=True)
    subprocess.run(["git", "checkout", "-q", ref], cwd=dest, check=True, capture_output=True)
    return dest
