"""`<project> <command>`: one entry point, commands imported only when run.

Start-up must stay fast (`--help` in well under 0.5 s), so this module imports nothing heavy: each
command lives in its own module and is imported after the command name is known.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from . import PACKAGE, PROJECT, envfile
from .errors import UserError

PROG = PROJECT

# name -> (module with `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "params": ("settings", "validate params.yaml and print the resolved settings"),
    "prompts": ("app.prompts", "prompt templates: `check` validates all, `list` shows versions"),
    "new": ("app.scaffold", "`new prompt NAME`: a prompt template, golden-example stubs and their test"),
    "preprocess": ("stages.preprocess", "DVC stage: validate, normalise and hash the eval set"),
    "evaluate": ("stages.evaluate", "DVC stage: run the golden set through the app and score it"),
    "merge": ("stages.merge", "merge `evaluate --shard I/N` outputs into the single run's eval/ files"),
    "register": ("stages.register", "DVC stage: register the evaluated version in MLflow as `candidate`"),
    "export": (
        "registry.versions",
        "write the served version (params.yaml, prompts/, the app's files) into a directory",
    ),
    "plots": ("stages.plots", "DVC: latency and per-tag pass-rate plot data from eval/results.jsonl"),
    "promote": ("registry.lifecycle", "MLflow: move the `champion` alias to the `candidate` version"),
    "rollback": ("registry.lifecycle", "MLflow: move the `champion` alias back to the previous champion"),
    "release": ("registry.release", "`release resolve --commit SHA`: the version a deploy of that commit ships"),
    "judge": ("judge.command", "`judge calibrate`: the LLM judge vs human labels (Cohen's kappa); what may gate"),
    "gate": (
        "gate.command",
        "PR gate: compare eval metrics with a base revision; `gate plan`: the drop the golden set detects",
    ),
    "serve": ("serving.server", "HTTP service: the app's flows, /healthz, /readyz, /metrics (needs the `serve` extra)"),
    "canary": ("serving.canary", "`canary analyze`: is the canary worse than stable? (exit 0 promote, 1 rollback)"),
    "rollout": ("serving.rollout", "the in-cluster rollout: `render` k8s/ from params.yaml, `ship` an image, `wait`"),
    "capture": (
        "production.shipping",
        "`capture ship|fetch`: capture files between the service's volume and object storage",
    ),
    "drift": ("production.drift.command", "captured answers vs the eval set: has production moved? (exit 1 on drift)"),
    "harvest": ("production.harvest", "captured answers -> data/raw/candidates-<date>.jsonl, golden lines to label"),
    "loadgen": ("serving.loadgen", "golden-set requests at a steady rate to service URLs (the rollout's load Job)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", f"Run `{PROG} <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] == "--version":
        from . import __version__

        print(f"{PROG} {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"{PROG}: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        envfile.load()  # .env: the model key and other local settings; the real environment wins
        module = importlib.import_module(f"{PACKAGE}.{COMMANDS[name][0]}")
        return module.main(rest, prog=f"{PROG} {name}")
    except UserError as exc:
        print(f"{PROG} {name}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path given that cannot be read or written (a directory, no permission, disk full)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG} {name}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {name}: interrupted", file=sys.stderr)
        return 130
