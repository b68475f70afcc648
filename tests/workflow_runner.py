"""Run a baked project's GitHub workflow jobs here: each `run:` step, in order, as GitHub's bash does.

`uses:` steps are skipped (they install tools or talk to GitHub), except upload-artifact and
download-artifact, which copy to and from a directory a test gives (what one job hands the next;
a matrix job's values are `Event.matrix`, its list `matrix_values`);
`make setup*` links the shared venv instead of installing it. Expressions and `if:` conditions are
evaluated for one `Event` (a pull request, a push to main, a schedule, a dispatch): a step's `if:`
must be one this module knows, so a new condition in a workflow is taught here before a test relies
on it. A condition without a status function gets GitHub's implicit `success()`. A step with
`continue-on-error` keeps its outcome (`failure`) but lets the job go on, as GitHub's does; each
step's `GITHUB_OUTPUT` is read back into `steps.<id>.outputs`, and the job's `outputs` are evaluated
at the end for the jobs that `need` it (`Event.needs`).

`stub_gh` puts a stand-in for GitHub's CLI on a PATH: it records every call and plays one pull
request per branch (`pr view` answers its state, `pr create` refuses a second one, as gh does).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
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

    name: str  # "pull_request" | "push" | "schedule" | "workflow_dispatch" | "repository_dispatch"
    ref: str  # refs/pull/7/merge | refs/heads/main
    sha: str = ""
    base_ref: str = ""  # a pull request's target branch
    labels: tuple[str, ...] = ()
    secrets: dict[str, str] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)
    needs: dict[str, dict[str, str]] = field(default_factory=dict)  # job -> the outputs of that job's run
    matrix: dict[str, str] = field(default_factory=dict)  # this job's matrix values (one shard: {"shard": "1"})

    @property
    def on_main(self) -> bool:
        return self.name == "push" and self.ref == "refs/heads/main"

    def expression(self, text: str, context: Mapping[str, str] | None = None) -> str:
        """The value of `${{ text }}`; `context` holds the run's own (runner.temp, steps.*)."""
        text = text.strip()
        known = {
            "github.base_ref": self.base_ref,
            "github.event_name": self.name,
            "github.repository": "team/llm-app",
            "github.token": "ghs_stub-token-of-this-run",
            f"contains(github.event.pull_request.labels.*.name, '{APPROVAL}')": str(APPROVAL in self.labels).lower(),
            **{f"matrix.{k}": v for k, v in self.matrix.items()},
            **(context or {}),
        }
        if text in known:
            return known[text]
        scope, _, name = text.partition(".")
        if scope in ("secrets", "vars") and re.fullmatch(r"[A-Z0-9_]+", name):
            return getattr(self, scope).get(name, "")
        need = re.fullmatch(r"needs\.([\w-]+)\.outputs\.([\w-]+)", text)
        if need and need[1] in self.needs:
            return self.needs[need[1]].get(need[2], "")
        step = re.fullmatch(r"steps\.([\w-]+)\.(outcome|outputs\.[\w-]+)", text)
        if step and context is not None:
            return ""  # a step that has not run (or wrote no such output): GitHub gives an empty string
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
    "always()": lambda ev, o: True,
    "needs.plan.outputs.shards != '1'": lambda ev, o: _all_good(o) and ev.needs["plan"]["shards"] != "1",
    "vars.EKS_CLUSTER != ''": lambda ev, o: _all_good(o) and bool(ev.vars.get("EKS_CLUSTER")),
    "vars.CAPTURE_URL != ''": lambda ev, o: _all_good(o) and bool(ev.vars.get("CAPTURE_URL")),
    "vars.AWS_DEPLOY_ROLE_ARN != '' && vars.IMAGE_REPO != ''": (
        lambda ev, o: _all_good(o) and bool(ev.vars.get("AWS_DEPLOY_ROLE_ARN") and ev.vars.get("IMAGE_REPO"))
    ),
}


@dataclass
class JobRun:
    outcomes: dict[str, str]  # step id (or name) -> success | failure | skipped
    logs: dict[str, str]  # step id -> stdout + stderr
    conclusions: dict[str, str] = field(default_factory=dict)  # as outcomes, but continue-on-error succeeds
    step_outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # step id -> its GITHUB_OUTPUT
    outputs: dict[str, str] = field(default_factory=dict)  # the job's `outputs`, for `Event.needs`
    seconds: dict[str, float] = field(default_factory=dict)  # step id -> how long its script ran

    @property
    def ok(self) -> bool:
        return all(o != "failure" for o in self.conclusions.values())

    def context(self, tmp: Path) -> dict[str, str]:
        values = {"runner.temp": str(tmp)}
        for step, outcome in self.outcomes.items():
            values[f"steps.{step}.outcome"] = outcome
        for step, outputs in self.step_outputs.items():
            values |= {f"steps.{step}.outputs.{k}": v for k, v in outputs.items()}
        return values


def expand(value: object, event: Event, context: Mapping[str, str] | None = None) -> str:
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: event.expression(m.group(1), context), str(value))


def read_outputs(path: Path) -> dict[str, str]:
    """A step's GITHUB_OUTPUT file: `name=value` lines and `name<<DELIMITER` blocks."""
    lines = path.read_text().splitlines() if path.exists() else []
    outputs: dict[str, str] = {}
    while lines:
        line = lines.pop(0)
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter)
            outputs[name], lines = "\n".join(lines[:end]), lines[end + 1 :]
        elif "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


ARTIFACT_ACTIONS = ("actions/upload-artifact", "actions/download-artifact")


def _artifact(step: dict, event: Event, context: Mapping[str, str], artifacts: Path, clone: Path) -> bool:
    """upload-artifact / download-artifact as a copy to / from `artifacts/<name>`; paths are relative
    to the checkout, as on a runner. An upload of several paths (one a line) keeps the files that
    exist, each at its path; a download by `pattern` merges every match (`merge-multiple`) and fails
    when none matches. False when the step failed."""
    action = step["uses"].split("@")[0]
    options = {k: expand(v, event, context) for k, v in step.get("with", {}).items()}
    if "pattern" in options:
        assert options.get("merge-multiple") == "True", f"{action}: a pattern without merge-multiple"
        found = sorted(artifacts.glob(options["pattern"]))
        for stored in found:
            shutil.copytree(stored, clone / options["path"], dirs_exist_ok=True)
        return bool(found)
    stored, paths = artifacts / options["name"], options["path"].split()
    if len(paths) > 1:
        assert action == "actions/upload-artifact", f"{action}: several paths"
        for name in paths:
            if (clone / name).is_file():
                (stored / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(clone / name, stored / name)
        return True
    path = clone / paths[0]
    source, dest = (path, stored) if action == "actions/upload-artifact" else (stored, path)
    assert source.is_dir() and any(source.iterdir()), f"{action}: nothing at {source}"
    shutil.copytree(source, dest, dirs_exist_ok=True)
    return True


def run_job(
    clone: Path,
    job_id: str,
    event: Event,
    tmp: Path,
    extra_env: dict[str, str] | None = None,
    check: bool = True,
    workflow_file: str = "ci.yml",
    artifacts: Path | None = None,
) -> JobRun:
    """Each `run:` step of the job in `clone`'s `workflow_file`, for `event`; with `check`, a failed
    step fails the test (else the run goes on as GitHub's would, skipping what success() guards).
    With `artifacts`, the job's upload-artifact and download-artifact steps copy to and from there."""
    workflow = yaml.safe_load((clone / ".github" / "workflows" / workflow_file).read_text())
    job = workflow["jobs"][job_id]
    tmp.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV", "GITHUB_"))}
    base |= {**event.env(tmp), "PATH": project_env(clone)["PATH"], **(extra_env or {})}
    result = JobRun({}, {})
    for number, step in enumerate(job["steps"]):
        if "run" not in step and (artifacts is None or step["uses"].split("@")[0] not in ARTIFACT_ACTIONS):
            continue
        name = step.get("id") or step.get("name") or f"step {number}"
        condition = step.get("if")
        if condition is None:
            runs = _all_good(result.conclusions)
        elif condition in CONDITIONS:
            runs = CONDITIONS[condition](event, result.conclusions)
        else:
            pytest.fail(f"{job_id}: the smoke run does not know the condition {condition!r}")
        if "run" not in step:
            if not runs:
                result.outcomes[name] = result.conclusions[name] = "skipped"
                continue
            assert artifacts is not None
            done = _artifact(step, event, result.context(tmp), artifacts, clone)
            result.outcomes[name] = "success" if done else "failure"
            result.conclusions[name] = "success" if done or step.get("continue-on-error") else "failure"
            continue
        if not runs:
            result.outcomes[name] = result.conclusions[name] = "skipped"
            continue
        script = step["run"]
        words = shlex.split(script) if script.lstrip().startswith("make ") else []
        if words[:1] == ["make"] and len(words) == 2 and words[1] in SETUP_TARGETS:
            link_venv(clone)  # `make setup*` would install these same packages (minutes, network)
            result.outcomes[name] = result.conclusions[name] = "success"
            continue
        env = dict(base)
        context = result.context(tmp)
        for scope in (workflow.get("env", {}), job.get("env", {}), step.get("env", {})):
            env.update({k: expand(v, event, context) for k, v in scope.items()})
        outputs = tmp / "step-outputs" / str(number)
        outputs.parent.mkdir(exist_ok=True)
        env["GITHUB_OUTPUT"] = str(outputs)
        started = time.monotonic()
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=clone, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        result.seconds[name] = round(time.monotonic() - started, 2)
        tolerated = bool(step.get("continue-on-error"))
        result.outcomes[name] = "success" if proc.returncode == 0 else "failure"
        result.conclusions[name] = "success" if proc.returncode == 0 or tolerated else "failure"
        result.logs[name] = proc.stdout + proc.stderr
        result.step_outputs[name] = read_outputs(outputs)
        if check and not tolerated:
            assert proc.returncode == 0, f"{job_id}: {name!r} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    context = result.context(tmp)
    result.outputs = {k: expand(v, event, context) for k, v in job.get("outputs", {}).items()}
    return result


def matrix_values(job: dict, key: str, event: Event) -> list[str]:
    """The values of a job's `strategy.matrix.<key>`: a list, or `${{ fromJSON(needs.J.outputs.O) }}`."""
    value = job["strategy"]["matrix"][key]
    if isinstance(value, str):
        inner = re.fullmatch(r"\$\{\{\s*fromJSON\((.*)\)\s*\}\}", value)
        assert inner, f"the smoke run does not know the matrix {value!r}: teach tests/workflow_runner.py"
        value = json.loads(event.expression(inner[1]))
    return [str(v) for v in value]


GH = """#!{python}
# A stand-in for GitHub's CLI: records each call; one pull request per branch, kept in $GH_STUB.
import json, os, shutil, sys
from pathlib import Path

stub, args = Path(os.environ["GH_STUB"]), sys.argv[1:]
with (stub / "calls.log").open("a") as log:
    log.write(json.dumps(args) + "\\n")
prs = json.loads((stub / "prs.json").read_text()) if (stub / "prs.json").exists() else {{}}
if args[:2] == ["auth", "setup-git"]:
    sys.exit(0)
if args[:2] in (["pr", "view"], ["pr", "edit"], ["pr", "create"]):
    branch = args[args.index("--head") + 1] if "--head" in args else args[2]
    state = prs.get(branch)
    if args[1] == "view":
        if state is None:
            sys.exit(f"no pull requests found for branch {{branch!r}}")
        print(state)
        sys.exit(0)
    if (args[1] == "create") == (state == "OPEN"):
        sys.exit(f"gh pr {{args[1]}}: a pull request for {{branch!r}} is {{state or 'not there'}}")
    bodies = sorted(stub.glob("body-*.md"))
    shutil.copy(args[args.index("--body-file") + 1], stub / f"body-{{len(bodies) + 1}}.md")
    prs[branch] = "OPEN"
    (stub / "prs.json").write_text(json.dumps(prs))
    sys.exit(0)
sys.exit(f"gh stub: no answer for {{args}}")
"""


def stub_gh(bin_dir: Path, state: Path) -> dict[str, str]:
    """`gh` in `bin_dir`, keeping its calls (`calls.log`, one JSON argv a line), pull requests
    (`prs.json`: branch -> state) and the bodies it was given (`body-<n>.md`) in `state`; the env to run it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    (bin_dir / "gh").write_text(GH.format(python=sys.executable))
    (bin_dir / "gh").chmod(0o755)
    return {"GH_STUB": str(state)}


def gh_calls(state: Path) -> list[list[str]]:
    log = state / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def checkout(remote: Path | str, ref: str, dest: Path) -> Path:
    """actions/checkout with fetch-depth 0: a clone of `remote` at `ref`, origin/* for every branch."""
    subprocess.run(["git", "clone", "-q", str(remote), str(dest)], check=True)
    subprocess.run(["git", "checkout", "-q", ref], cwd=dest, check=True, capture_output=True)
    return dest
