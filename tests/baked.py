"""Helpers for tests that run a baked project's pipeline: a private bake, the fake model, servers.

Pipeline tests change the project (params, prompts, dvc.lock, an MLflow store), so each bakes
its own copy instead of sharing the session's bakes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import requests

from tests.bakery import bake, link_venv, project_env


def private_project(output_dir: Path, **answers: str) -> Path:
    project = bake(output_dir, **answers)
    link_venv(project)
    return project


def local_store(project: Path) -> dict[str, str]:
    """Env for `run`: the MLflow store is a sqlite file in the project's tmp dir, never the user's."""
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}


def set_param(project: Path, key: str, value: str) -> None:
    """Replace the value of the first `  key:` line in params.yaml (a test's own settings)."""
    params = project / "params.yaml"
    text, count = re.subn(rf"(?m)^(\s+{key}:) [^\n#]*", rf"\g<1> {value}  ", params.read_text(), count=1)
    assert count == 1, f"no {key} in params.yaml"
    params.write_text(text)


def fake_model_module(project: Path) -> ModuleType:
    """The baked project's `src/<pkg>/testing/fake_model.py`, loaded by path: these tests run
    outside the baked venv, and bakes of one package name would collide in `sys.modules`."""
    path = next((project / "src").glob("*/testing/fake_model.py"))
    name = f"_fake_model_{abs(hash(str(path)))}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while building a class
        spec.loader.exec_module(module)
    return sys.modules[name]


@contextlib.contextmanager
def fake_model(project: Path, **golden: Any) -> Iterator[Any]:
    """The project's fake model answering from its golden set (`golden`: options of `golden_answers`),
    running meanwhile, with params.yaml pointed at it; yields the `FakeModel` (its `calls()`)."""
    fake = fake_model_module(project)
    with fake.FakeModel(fake.golden_answers(project / "eval" / "golden.jsonl", **golden)) as model:
        set_param(project, "base_url", model.base_url)
        set_param(project, "api_key_env", '""')
        yield model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(
    cmd: list[str], ready_url: str, cwd: Path, project: Path, timeout: float = 90, env: dict[str, str] | None = None
) -> Iterator[None]:
    """A server process on loopback (started with the project's env, plus `env`), stopped afterwards."""
    log = cwd / f"{Path(cmd[0]).name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=project_env(project, **(env or {})), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"{cmd[0]} exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if requests.get(ready_url, timeout=1).status_code < 500:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"{cmd[0]} not ready in {timeout} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield
    finally:
        # The whole process group: `mlflow server` runs its workers as children.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
