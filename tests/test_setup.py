"""`make setup` in a baked project installs everything into its own venv from prebuilt wheels: the
embedded model's runtime (xllamacpp) and weights included, nothing compiled."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bakery import QUIET_ENV, bake

pytestmark = pytest.mark.slow


def test_make_setup_installs_the_project_and_the_embedded_model(tmp_path):
    project = bake(tmp_path)
    uv = Path(sys.executable).parent / "uv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTEST_"))} | QUIET_ENV
    setup = subprocess.run(
        ["make", "setup", f"UV={uv}"], cwd=project, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert not re.search(r"(?i)building wheel|cmake|compiling", setup.stdout + setup.stderr), "prebuilt wheels only"
    python = project / ".venv" / "bin" / "python"
    probe = (
        "import dvc, mlflow, pandas, jsonschema, requests, uvicorn, aiohttp, xllamacpp;"
        "from support_bot.app.embedded import model_path; print(model_path().name)"
    )
    out = subprocess.run([python, "-c", probe], cwd=project, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "SmolLM2-135M-Instruct.Q4_1.gguf", out.stderr
    cli = subprocess.run(
        [project / ".venv" / "bin" / "support-bot", "--help"], env=env, capture_output=True, text=True, check=False
    )
    assert cli.returncode == 0 and "usage: support-bot" in cli.stdout
