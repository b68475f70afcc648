"""`<project> rollout render|ship|wait`: the in-cluster rollout (Argo Rollouts, see k8s/README.md).

    render [--check]        write k8s/analysis.yaml, the strategy of k8s/rollout.yaml and k8s/eval-job.yaml
                            (the eval's shards as an Indexed Job) from params.yaml
                            (--check: write nothing, exit 1 when they differ from a fresh render)
    ship --image I --commit C   set the Rollout's image and `commit` label: the controller does the rest
    wait [--timeout 2h]     poll the Rollout until the controller decides; exit 0 promoted (Healthy),
                            1 aborted or degraded (its message printed), 3 paused (inconclusive analysis:
                            a person promotes or aborts), 2 no verdict (no kubectl, no Rollout, timeout)

The deploy job ships and waits; it never moves traffic itself, so a cancelled job leaves the
controller in charge, and nothing half-done.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError, clip
from ..settings import load as load_settings
from ..settings import seconds
from . import eval_job, manifests

NAMESPACE, APP = manifests.NAMESPACE, manifests.APP
PROMOTED, ABORTED, PAUSED, PENDING = "promoted", "aborted", "paused", "pending"
EXIT = {PROMOTED: 0, ABORTED: 1, PAUSED: 3}
READ_ATTEMPTS = 3
_COMMIT = re.compile(r"[0-9a-f]{7,40}")


@dataclass(frozen=True)
class Verdict:
    state: str  # promoted | aborted | paused | pending
    message: str


def verdict(rollout: Mapping[str, Any], image: str | None = None) -> Verdict:
    """What the controller has decided about `rollout` (`kubectl get rollout -o json`) for `image`."""
    status = rollout.get("status") or {}
    phase, message = status.get("phase", ""), status.get("message", "")
    # The status must be about this spec (the controller writes the generation it has seen).
    generation = str(rollout.get("metadata", {}).get("generation", ""))
    if str(status.get("observedGeneration", "")) != generation:
        return Verdict(PENDING, "the controller has not seen this version yet")
    if status.get("abort") or phase == "Degraded":
        return Verdict(ABORTED, message or phase)
    if phase == "Paused":
        return Verdict(PAUSED, message or "paused")
    served = _image(rollout)
    if phase == "Healthy" and (image is None or served == image):
        return Verdict(PROMOTED, f"{served} is stable")
    return Verdict(PENDING, f"{phase or 'no phase yet'}: {message}".rstrip(": "))


def _image(rollout: Mapping[str, Any]) -> str:
    containers = rollout.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [{}]
    return str(containers[0].get("image", ""))


def ship_patch(image: str, commit: str, pod: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The JSON patch that asks the controller for a new version: image and commit label together.
    Every container of `pod` (the Rollout's pod template spec in k8s/rollout.yaml) that runs the
    app's image gets the new one: the app, and sidecars built from it (`capture-ship`)."""
    if not _COMMIT.fullmatch(commit):
        raise UserError(f"--commit: expected a git commit (7-40 hex digits), got {clip(commit, 50)!r}")
    paths = ["/spec/template/spec/containers/0/image"]
    if pod:
        app_image = (pod.get("containers") or [{}])[0].get("image")
        paths = [
            f"/spec/template/spec/{kind}/{i}/image"
            for kind in ("containers", "initContainers")
            for i, container in enumerate(pod.get(kind) or [])
            if container.get("image") == app_image
        ]
    return [
        *({"op": "replace", "path": path, "value": image} for path in paths),
        {"op": "replace", "path": "/spec/template/metadata/labels/commit", "value": commit},
    ]


def pod_template(k8s: Path) -> dict[str, Any] | None:
    """The Rollout's pod template spec from `<k8s>/rollout.yaml`; None when there is no such file."""
    import yaml

    path = k8s / "rollout.yaml"
    if not path.is_file():
        return None
    spec = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("spec", {})
    return spec.get("template", {}).get("spec") or None


def kubectl(*args: str) -> list[str]:
    exe = shutil.which("kubectl")
    if exe is None:
        raise UserError("kubectl not found on PATH")
    return [exe, "-n", NAMESPACE, *args]


def get_rollout() -> dict[str, Any]:
    argv = kubectl("get", f"rollout/{APP}", "-o", "json")
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise UserError(f"{shlex.join(argv[1:])}: {clip(out.stderr.strip(), 300)}")
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise UserError(f"{shlex.join(argv[1:])}: not JSON") from None


def wait(
    timeout_s: float,
    image: str | None = None,
    read: Callable[[], Mapping[str, Any]] = get_rollout,
    poll_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Verdict:
    """Poll until the controller decides (promoted, aborted, paused) or `timeout_s` passes. A read
    that fails (the API server blinks) is retried; READ_ATTEMPTS failures in a row end the wait."""
    deadline, last, failures = clock() + timeout_s, "", 0
    while True:
        try:
            found = verdict(read(), image)
            failures = 0
        except UserError as exc:
            failures += 1
            if failures >= READ_ATTEMPTS:
                raise
            print(f"rollout: {exc} (retrying)", flush=True)
            sleep(poll_s)
            continue
        if found.state != PENDING:
            return found
        if found.message != last:
            print(f"rollout: {found.message}", flush=True)
            last = found.message
        if clock() >= deadline:
            raise UserError(f"no verdict within {timeout_s:g} s (last: {found.message}); the controller goes on")
        sleep(poll_s)


def render(params: Path, k8s: Path) -> dict[Path, str]:
    """Every rendered file, path -> its text (a function of params.yaml and the hand-written Rollout)."""
    settings = load_settings(params)
    target = k8s / "rollout.yaml"
    try:
        current = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{target}: not found (give --k8s, the folder with rollout.yaml)") from None
    return {
        k8s / "analysis.yaml": manifests.render_analysis(settings),
        target: manifests.render_rollout(settings, current, str(target)),
        k8s / "eval-job.yaml": eval_job.render(settings),
    }


def main(argv: Sequence[str] | None = None, prog: str = "rollout") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("render", help="write the rollout's steps and analysis into k8s/ from params.yaml")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--k8s", type=Path, default=Path("k8s"))
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if k8s/ differs from a render")
    p = sub.add_parser("ship", help="set the Rollout's image and commit (the controller rolls it out)")
    p.add_argument("--image", required=True, help="<repo>:<commit>")
    p.add_argument("--commit", required=True, help="the commit the image was built from")
    p.add_argument("--k8s", type=Path, default=Path("k8s"), help="where rollout.yaml names the app's containers")
    p = sub.add_parser("wait", help="wait for the controller's verdict: exit 0 promoted, 1 aborted, 3 paused")
    p.add_argument("--image", help="the image being rolled out (promoted only once it is stable)")
    p.add_argument("--timeout", default="2h", help="e.g. 90m (default 2h)")
    args = parser.parse_args(argv)

    if args.action == "render":
        stale = []
        for path, text in render(args.params, args.k8s).items():
            old = path.read_text(encoding="utf-8") if path.exists() else None
            if old != text:
                stale.append(path)
                if not args.check:
                    path.write_text(text, encoding="utf-8")
        for path in stale:
            print(f"{path}: {f'differs from params.yaml (run `{prog} render`)' if args.check else 'written'}")
        return 1 if stale and args.check else 0
    if args.action == "ship":
        patch = json.dumps(ship_patch(args.image, args.commit, pod_template(args.k8s)))
        argv = kubectl("patch", f"rollout/{APP}", "--type=json", "-p", patch)
        if subprocess.run(argv, check=False).returncode != 0:
            raise UserError(f"{shlex.join(argv[1:4])}: the patch was refused (see above)")
        print(f"rollout/{APP}: {args.image} (commit {args.commit}) handed to the controller")
        return 0
    try:
        timeout_s = seconds(args.timeout)
    except ValueError:
        raise UserError(f"--timeout: expected e.g. 90m or 2h, got {clip(args.timeout, 20)!r}") from None
    found = wait(timeout_s, args.image)
    print(f"rollout: {found.state}: {found.message}")
    if found.state == PAUSED:
        print(f"  a person decides: kubectl argo rollouts -n {NAMESPACE} promote {APP}  (or: abort {APP})")
    return EXIT[found.state]
