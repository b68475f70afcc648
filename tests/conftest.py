"""Fixtures shared by the template's tests: bake once per answer set, run baked projects' commands.

Three tiers (`--tier`, see CONTRIBUTING.md): `fast` (`make test-fast`, the change loop) bakes the
defaults and every answer one option away from them and runs the default project's suite; `full`
(`make test`, CI) runs everything else too: every combination, every code tree's suite, a smoke run
on every other Python, the pipelines end to end (`slow`); `nightly` (`make test-nightly`) is the full
tier plus every other Python's whole suite. Tests marked `full` or `slow` are only in the full and
nightly tiers, `nightly` only in the nightly one, `fast_only` only in the fast one (the others
cover them another way).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.bakery import ROOT, link_venv, project_env
from tests.bakery import bake as _bake

COOKIECUTTER = json.loads((ROOT / "cookiecutter.json").read_text())
OPTIONS = {k: v for k, v in COOKIECUTTER.items() if isinstance(v, list) and not k.startswith("_")}


RULES = COOKIECUTTER["_rules"]  # the same rules hooks/pre_gen_project.py applies


def unsupported(answers: dict[str, str]) -> str | None:
    """The field the pre-gen hook names for a combination it rejects, else None."""
    for rule in RULES["unsupported"]:
        if all(answers[k] == v for k, v in rule["when"].items()):
            return rule["field"]
    return None


def all_combinations() -> list[dict[str, str]]:
    names = list(OPTIONS)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*OPTIONS.values())]


SUPPORTED = [c for c in all_combinations() if unsupported(c) is None]
DEFAULTS = {k: v[0] for k, v in OPTIONS.items()}


def near_defaults(answers: dict[str, str]) -> bool:
    """The defaults, or the defaults with one option changed: what the fast tier bakes."""
    return sum(answers[k] != DEFAULTS[k] for k in OPTIONS) <= 1


def tiered(combos: list[dict[str, str]]) -> list:
    """`combos` as parameters, those far from the defaults marked for the full tier only."""
    return [pytest.param(c, marks=() if near_defaults(c) else pytest.mark.full) for c in combos]


# The options that change the baked code (the package and its tests); the others change only text
# (params, configs, workflows, docs). The generated suite runs once per distinct code tree.
CODE_OPTIONS = ("model_backend", "example_app")


def code_tree(answers: dict[str, str]) -> tuple[str, ...]:
    return tuple(answers[k] for k in CODE_OPTIONS)


# The first supported combination of each code tree (the defaults come first): its suite stands for all.
TREES = list({code_tree(c): c for c in reversed(SUPPORTED)}.values())[::-1]


def combo_id(answers: dict[str, str]) -> str:
    return "-".join(answers[k] for k in OPTIONS)


# Modules whose tests share an expensive module fixture (a pipeline run on the embedded model, a
# repository with branches, a browser): xdist must send each whole to one worker, or every worker builds it.
SHARED_FIXTURE_MODULES = {
    f"tests/{name}.py" for name in ("test_main_job", "test_gate_e2e", "test_pipeline", "test_mlflow", "test_viewer")
}


TIERS = ("fast", "full", "nightly")


def in_tier(tier: str, markers: set[str]) -> bool:
    """Whether a test with these markers runs in `tier` (each tier but fast holds the one before it)."""
    if tier == "fast":
        return not markers & {"slow", "full", "nightly"}
    return "fast_only" not in markers and (tier == "nightly" or "nightly" not in markers)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's load scheduling, keeping the modules above whole (xdist's own `--dist loadgroup`
    marks groups by editing `item._nodeid`, which pytest 9 no longer reads: measured, the groups
    were split and the embedded pipeline ran twice)."""
    from xdist.scheduler import LoadScopeScheduling

    class KeepSharedModulesWhole(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in SHARED_FIXTURE_MODULES else nodeid

    return KeepSharedModulesWhole(config, log)


def pytest_configure(config: pytest.Config) -> None:
    # The suite runs embedded models beside other work on every core. llama.cpp's threads spin while
    # they wait, and a spinning thread whose partner is descheduled burns its core for nothing:
    # measured, two evaluations side by side on 2 cores took 136 s spinning and 26 s passive (alone,
    # 16 s and 32 s). Same answers either way; only the waiting changes.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--tier",
        choices=TIERS,
        default="full",
        help="fast: the change loop; full: CI; nightly: full plus every other Python's whole suite",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the tier's tests, the longest first (xdist hands them out in this order, so the two
    workers finish together instead of one waiting on a long test that started last)."""
    tier = config.getoption("--tier")
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (keep if in_tier(tier, {m.name for m in item.iter_markers()}) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    keep.sort(key=lambda item: 0 if item.get_closest_marker("long") else 1)
    items[:] = keep


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


def run(
    project: Path,
    *cmd: str,
    check: bool = True,
    timeout: float = 600,
    env: Mapping[str, str] | None = None,
    **more: str,
) -> subprocess.CompletedProcess:
    """Run a command in a baked project as its developer would (its venv first on PATH), with the
    variables of `env` and `more` set."""
    full = project_env(project, **{**(env or {}), **more})
    proc = subprocess.run(cmd, cwd=project, env=full, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc
