import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline_and_quiet(monkeypatch, tmp_path):
    # Tests never touch the user's MLflow store and never phone home.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")


def project_files() -> list[str]:
    """The project's own data files: params, prompts, golden set, and the files its app declares."""
    from {{ cookiecutter.package }}.app.loader import load_app
    from {{ cookiecutter.package }}.settings import load

    app = load_app(load(ROOT / "params.yaml").app.entry)
    return ["params.yaml", "prompts", "eval/golden.jsonl", *app.files]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A scratch copy of the project's data files (params, prompts, golden set, app files) to break at will."""
    for name in project_files():
        src, dst = ROOT / name, tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)
    old = Path.cwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(old)


@pytest.fixture
def toy_project(tmp_path: Path) -> Path:
    """A scratch project of the framework's toy app (testing/toy.py), the working directory meanwhile.
    Its model points nowhere until a test starts a fake one and writes the version again."""
    from {{ cookiecutter.package }}.testing.toy import write_version

    root = write_version(ROOT, tmp_path / "toy", "http://127.0.0.1:9/v1")
    old = Path.cwd()
    os.chdir(root)
    yield root
    os.chdir(old)
