"""The one version a deploy may ship: the version registered from the very commit being deployed.

    <project> release resolve [--commit SHA]   print that version's number, or refuse (exit 2)

`register` tags every version with the git commit it was evaluated at (CI registers only on the
protected branch). A deploy resolves the commit it ships to its version and promotes exactly that
one - never "whatever `candidate` is now" - so two merges in a row cannot ship each other's
version. It refuses, with one line and nothing moved, when:
- the registry is not a team store (no MLFLOW_TRACKING_URI, or a sqlite file: CI's is thrown away
  with the runner);
- no version was registered from that commit (its eval failed, or it never ran);
- the version's metrics miss a bar of the deployed commit's params.yaml.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from .. import settings as settings_mod
from ..evaluation.metrics import missed_thresholds
from . import faults, store

COMMIT_TAG = "git_sha"


def team_store(uri: str) -> str:
    """The tracking URI, if it is a store a team keeps; else a RegistryError saying what is needed."""
    if store.sqlite_path(uri) is not None:
        raise store.RegistryError(
            f"deploy needs the team's MLflow store, not the sqlite file {store.redact(uri)} "
            "(CI's is deleted with the runner): set MLFLOW_TRACKING_URI to your MLflow server"
        )
    return uri


def head_commit(cwd: Path = Path(".")) -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise store.RegistryError("--commit: not in a git checkout; give the commit to deploy")
    return proc.stdout.strip()


def resolve(client: Any, model_name: str, commit: str, thresholds: settings_mod.Thresholds) -> Any:
    """The newest version registered from `commit` whose metrics clear `thresholds`."""
    versions = store.versions_tagged(client, model_name, COMMIT_TAG, commit)
    if not versions:
        raise store.RegistryError(
            f"no version of {model_name} was registered from commit {commit[:12]}: its eval on the protected "
            "branch failed or never ran; nothing deployed"
        )
    newest = max(versions, key=lambda v: int(v.version))
    metrics = client.get_run(newest.run_id).data.metrics
    missed = missed_thresholds(metrics, thresholds.min, thresholds.max)
    if missed:
        raise store.RegistryError(
            f"{model_name} version {newest.version} (commit {commit[:12]}) misses "
            + "; ".join(map(str, missed))
            + ": nothing deployed"
        )
    return newest


def main(argv: list[str] | None = None, prog: str = "release") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    find = sub.add_parser("resolve", help="print the number of the version registered from a commit")
    find.add_argument("--commit", help="the commit being deployed (default: HEAD)")
    find.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    config = settings_mod.load(args.params)
    uri = team_store(config.registry.resolved_tracking_uri())
    with faults.reported(store.redact(uri)):
        client = store.connect(uri)
        version = resolve(client, config.registry.model_name, args.commit or head_commit(), config.thresholds)
    print(version.version)
    return 0
