"""`promote` and `rollback`: move the MLflow `champion` alias (one command each).

    promote                 champion -> the `candidate` version; the replaced champion is kept in a tag
    promote --commit SHA    champion -> the version registered from that commit (what a deploy ships;
                            refused unless there is one that clears the bars: release.py)
    rollback                champion -> the version it replaced (repeat to walk further back)

Both refuse with one line and exit 2 when there is nothing to do (no candidate, the candidate is
already champion, no earlier champion). The command is the last word of `prog` (`<project> promote`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import settings as settings_mod
from . import faults, release, store

ACTIONS = ("promote", "rollback")


def move_champion(action: str, params: Path = Path("params.yaml"), commit: str | None = None) -> str:
    """Run `action` on the registry named in `params`; returns the line that says what moved.
    With `commit`, promote exactly the version registered from it."""
    if action not in ACTIONS:
        raise ValueError(f"move_champion: action must be one of {ACTIONS}, got {action!r}")
    config = settings_mod.load(params)
    name = config.registry.model_name
    uri = config.registry.resolved_tracking_uri()
    with faults.reported(store.redact(uri)):
        client = store.connect(uri)
        if action == "promote":
            version = None if commit is None else str(release.resolve(client, name, commit, config.thresholds).version)
            new, previous = store.promote(client, name, version)
            return f"{name}: champion -> version {new} (was {previous or 'none'})"
        new, left = store.rollback(client, name)
        return f"{name}: champion -> version {new} (rolled back from {left})"


def main(argv: list[str] | None = None, prog: str = "promote") -> int:
    action = prog.rsplit(" ", 1)[-1]
    if action not in ACTIONS:
        raise ValueError(f"lifecycle.main: prog must end with one of {ACTIONS}, got {prog!r}")
    what = "move champion to the candidate version" if action == "promote" else "move champion back"
    parser = argparse.ArgumentParser(prog=prog, description=f"MLflow registry: {what}.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    if action == "promote":
        parser.add_argument("--commit", help="promote the version registered from this commit (not the candidate)")
    args = parser.parse_args(argv)
    print(move_champion(action, args.params, getattr(args, "commit", None)))
    return 0
