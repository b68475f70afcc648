"""The kubectl steps of a canary rollout: ship an image to the canary, promote it, roll it back.

Each plan is a list of `Step`s that `run_steps` prints (a dry run) or runs, stopping at the first
failure. Namespace and names follow k8s/ (`llm-app`).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import PROJECT
from ..errors import UserError

NAMESPACE = "llm-app"
APP = "llm-app"


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]
    why: str

    def __str__(self) -> str:
        return shlex.join(self.argv)


def _kubectl(*args: str) -> tuple[str, ...]:
    return ("kubectl", "-n", NAMESPACE, *args)


def _weights(stable: int, canary: int) -> tuple[str, ...]:
    patch = json.dumps(
        [
            {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": stable},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": canary},
        ]
    )
    return _kubectl("patch", "httproute", APP, "--type=json", "-p", patch)


def deploy_plan(image: str, weight: int, gateway: bool = True) -> list[Step]:
    steps = [
        Step(_kubectl("set", "image", f"deployment/{APP}-canary", f"app={image}"), "ship the image to the canary only"),
        Step(_kubectl("scale", f"deployment/{APP}-canary", "--replicas=1"), "make sure the canary runs"),
        Step(_kubectl("rollout", "status", f"deployment/{APP}-canary", "--timeout=5m"), "wait until it is ready"),
    ]
    if gateway:
        steps.append(Step(_weights(100 - weight, weight), f"send it {weight}% of traffic"))
    return steps


def promote_plan(image: str, gateway: bool = True) -> list[Step]:
    steps = [
        Step(_kubectl("set", "image", f"deployment/{APP}-stable", f"app={image}"), "stable runs the canary's image"),
        # Also when the image did not change: stable pods resolve the `champion` alias at start-up.
        Step(_kubectl("rollout", "restart", f"deployment/{APP}-stable"), "stable pods load the new champion"),
        Step(_kubectl("rollout", "status", f"deployment/{APP}-stable", "--timeout=5m"), "wait until it is ready"),
    ]
    if gateway:
        steps.append(Step(_weights(100, 0), "all traffic to stable"))
    return steps


def rollback_plan(gateway: bool = True) -> list[Step]:
    steps = [Step(_weights(100, 0), "no traffic to the canary")] if gateway else []
    steps.append(Step(_kubectl("scale", f"deployment/{APP}-canary", "--replicas=0"), "stop the canary"))
    return steps


def canary_image() -> str:
    """The image the canary Deployment runs (what `promote` ships to stable)."""
    argv = _kubectl("get", f"deployment/{APP}-canary", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    out = subprocess.run(resolve(argv), capture_output=True, text=True, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        raise UserError(f"cannot read the canary image: {shlex.join(argv)}: {out.stderr.strip()[:300]}")
    return out.stdout.strip()


def resolve(argv: Sequence[str]) -> list[str]:
    exe = shutil.which(argv[0])
    if exe is None:
        raise UserError(f"{argv[0]} not found on PATH (needed for --apply)")
    return [exe, *argv[1:]]


def run_steps(steps: Sequence[Step], apply: bool) -> int:
    for i, step in enumerate(steps, 1):
        print(f"{i}. {step}    # {step.why}")
        if apply:
            code = subprocess.run(resolve(step.argv), check=False).returncode
            if code != 0:
                print(f"step {i} failed (exit {code}); stopped", file=sys.stderr)
                return 1
    if not apply:
        print("(not applied: run again with --apply)")
    return 0


def move_alias(commit: str, apply: bool, params: Path = Path("params.yaml")) -> None:
    """Step 0 of a promotion: champion -> the version registered from `commit` (as `<project>
    promote --commit` does), so the registry and the cluster never disagree about what is live."""
    print(f"0. {PROJECT} promote --commit {commit}    # move the registry alias to this commit's version")
    if apply:
        from ..registry.lifecycle import move_champion

        print(move_champion("promote", params, commit))
