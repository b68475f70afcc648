"""The gate's inputs: the base revision, files at the base (through git), the head's files, and
what DVC says (`dvc metrics diff --json`, `dvc status`). Every failure is a `GateInputError` naming
what is unusable and what to do: the gate exits 2 with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .errors import UserError

QUIET = {"DVC_NO_ANALYTICS": "1"}


class GateInputError(UserError):
    """The gate cannot judge (no metrics, null metrics, stale metrics, unknown base): exit 2."""


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=False)


def check_base(base: str) -> None:
    if git("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}").returncode != 0:
        raise GateInputError(f"unknown base revision {base!r}: fetch it first (in CI: `make fetch-base BASE=<branch>`)")


def at_base(base: str, path: str) -> str | None:
    """The file's text at `base` (through git: metrics and results are committed), None if absent."""
    proc = git("show", f"{base}:./{path}")
    return proc.stdout if proc.returncode == 0 else None


def load_json(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise GateInputError(f"{source} is not valid JSON ({exc}); re-run `dvc repro`") from None
    if not isinstance(data, dict):
        raise GateInputError(f"{source} must hold a JSON object of metrics, not {type(data).__name__}")
    return data


def read_head(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        raise GateInputError(f"{path} is missing on the head side: run `dvc repro` first") from None


def dvc_json(*args: str) -> Any:
    """Run `dvc <args>` (this interpreter's DVC, analytics off) and parse what it prints as JSON."""
    what = f"`dvc {' '.join(a for a in args if a != '--json')}`"
    cmd = [sys.executable, "-m", "dvc", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **QUIET}, check=False)
    if proc.returncode != 0:
        raise GateInputError(f"{what} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    try:
        return json.loads(proc.stdout or "{}")
    except ValueError:
        raise GateInputError(f"{what} printed no JSON: {proc.stdout[:200]!r}") from None


def check_fresh(metrics_file: str) -> None:
    """Fail when the stage producing the metrics changed since it ran (`dvc status`): stale numbers."""
    changed = dvc_json("status", "--json", metrics_file)
    if changed:
        what = "; ".join(f"{stage}: {json.dumps(items)[:300]}" for stage, items in changed.items())
        raise GateInputError(f"{metrics_file} is stale, the pipeline changed since it ran ({what}): run `dvc repro`")


def read_diff(base: str, metrics_file: str) -> dict[str, dict[str, Any]]:
    """`dvc metrics diff <base> --json --all` for our metrics file: {metric: {old, new, diff}}."""
    data = dvc_json("metrics", "diff", base, "--all", "--json", "--targets", metrics_file)
    # Keys are paths as DVC prints them; match ours regardless of ./ or platform separators.
    for path, metrics in data.items():
        if Path(path) == Path(metrics_file):
            return metrics
    return {}


def read_golden(path: Path) -> dict[str, dict[str, Any]]:
    """id -> example, for the report only: an unreadable golden set costs the report its inputs."""
    examples = {}
    try:
        for line in path.read_text().splitlines():
            if line.strip():
                example = json.loads(line)
                examples[str(example.get("id"))] = example
    except (OSError, ValueError, AttributeError):
        return {}
    return examples
