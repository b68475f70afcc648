"""Fixtures shared by the template's tests: bake once per answer set, run baked projects' commands."""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bakery import ROOT, link_venv, project_env
from tests.bakery import bake as _bake

COOKIECUTTER = json.loads((ROOT / "cookiecutter.json").read_text())
OPTIONS = {k: v for k, v in COOKIECUTTER.items() if isinstance(v, list) and not k.startswith("_")}


def unsupported(answers: dict[str, str]) -> str | None:
    """The field the pre-gen hook names for a combination it rejects, else None."""
    if answers["model_backend"] == "embedded" and answers["eval_runner"] == "self-hosted-gpu":
        return "eval_runner"
    return None


def all_combinations() -> list[dict[str, str]]:
    names = list(OPTIONS)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*OPTIONS.values())]


SUPPORTED = [c for c in all_combinations() if unsupported(c) is None]
DEFAULTS = {k: v[0] for k, v in OPTIONS.items()}
# The options that change the baked code (the package and its tests); the others change only text
# (params, configs, workflows, docs). The generated suite runs once per distinct code tree.
CODE_OPTIONS = ("model_backend", "example_app")


def code_tree(answers: dict[str, str]) -> tuple[str, ...]:
    return tuple(answers[k] for k in CODE_OPTIONS)


# The first supported combination of each code tree (the defaults come first): its suite stands for all.
TREES = list({code_tree(c): c for c in reversed(SUPPORTED)}.values())[::-1]


def combo_id(answers: dict[str, str]) -> str:
    return "-".join(answers[k] for k in OPTIONS)


@pytest.fixture(scope="session")
def bake(tmp_path_factory) -> Callable[..., Path]:
    """`bake(**answers)` -> the baked project's directory, baked once per answer set per session."""
    baked: dict[tuple, Path] = {}

    def factory(**answers: str) -> Path:
        key = tuple(sorted(answers.items()))
        if key not in baked:
            baked[key] = _bake(tmp_path_factory.mktemp("bake"), **answers)
        return baked[key]

    return factory


@pytest.fixture(scope="session")
def ready(bake) -> Callable[..., Path]:
    """`ready(**answers)` -> a baked project with its .venv linked (the package installed, editable)."""
    linked: set[Path] = set()

    def factory(**answers: str) -> Path:
        project = bake(**answers)
        if project not in linked:
            link_venv(project)
            linked.add(project)
        return project

    return factory


def run(project: Path, *cmd: str, check: bool = True, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """Run a command in a baked project as its developer would (its venv first on PATH)."""
    proc = subprocess.run(
        cmd, cwd=project, env=project_env(project, **env), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc
