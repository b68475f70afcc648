"""Bake the template and give each baked project a working venv in about a second.

Every bake links to the one venv this repository's `make setup` built (a `.pth` file adds its
site-packages) and installs only the baked package itself, editable and without dependencies: the
suite bakes many projects and must not reinstall the world for each.

`python -m tests.bakery demo build` is the README's main job: bake the default project into
build/ and run its pipeline (`dvc repro`) on the embedded model.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1"}
# Byte-code of the shared venv and of baked packages, outside every project (DVC and git never see it).
PYCACHE = Path(tempfile.gettempdir()) / f"cookiecutter-llmops-pycache-{os.getuid()}"


def bake(output_dir: Path, **answers: str) -> Path:
    """Bake the template with `answers` into `output_dir`; returns the project directory."""
    from cookiecutter.main import cookiecutter

    return Path(cookiecutter(str(ROOT), no_input=True, extra_context=answers, output_dir=str(output_dir)))


def shared_python(version: str | None = None) -> Path:
    """The interpreter of the shared venv for a python_version choice: `.venv` for the default,
    `.venv-<version>` for the others (`make setup-pythons` builds them)."""
    default = ".".join(map(str, sys.version_info[:2]))
    if version in (None, default):
        return Path(sys.executable)
    python = ROOT / f".venv-{version}" / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"{python} is missing: run `make setup-pythons` (a Python {version} must be installed)")
    return python


def link_venv(project: Path, base: Path | None = None) -> Path:
    """`project/.venv` sharing the packages of the venv of `base` (default: this interpreter), with
    the baked package installed."""
    base = base or Path(sys.executable)
    venv = project / ".venv"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site, shared = (
        subprocess.run([str(py), "-c", where], check=True, capture_output=True, text=True).stdout.strip()
        for py in (python, base)
    )
    (Path(site) / "_shared_venv.pth").write_text(shared + "\n")
    # Tools the baked Makefile runs as `python -m X` that look for their binary next to python.
    shared_bin = Path(sys.executable).parent
    for tool in ("ruff",):
        if (shared_bin / tool).exists():
            (venv / "bin" / tool).symlink_to(shared_bin / tool)
    uv = shutil.which("uv", path=str(shared_bin)) or shutil.which("uv")
    install = [uv, "pip", "install", "-q", "-p", str(python)] if uv else [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*install, "--no-deps", "-e", str(project)], check=True)
    return python


def project_env(project: Path, **extra: str) -> dict[str, str]:
    """The environment a developer of the baked project has after `make setup` (venv first on PATH)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{project / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        # Without byte-code every `python -m <pkg>` recompiles what it imports (mlflow alone takes
        # seconds); a cache prefix keeps the speed without writing .pyc files into the project.
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env.update(QUIET_ENV)
    env.update(extra)
    return env


def demo(output_dir: Path) -> int:
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / "support-bot"
    if target.exists():
        shutil.rmtree(target)
    project = bake(output_dir)
    link_venv(project)
    print(f"baked {project}; running `dvc repro` on the embedded model...", flush=True)
    env = project_env(project)
    steps = [["python", "-m", "dvc", "repro"], ["cat", "eval/report.md"]]
    for step in steps:
        code = subprocess.run(step, cwd=project, env=env, check=False).returncode
        if code != 0:
            return code
    print(f"\nDone. The project is in {project}: `cd {project} && make help`.")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "demo":
        sys.exit("usage: python -m tests.bakery demo OUTPUT_DIR")
    sys.exit(demo(Path(sys.argv[2])))
