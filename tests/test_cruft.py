"""Generated projects can take template updates: `cruft check` and `cruft update` work on a bake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bakery import ROOT

GIT = ["git", "-c", "user.name=template dev", "-c", "user.email=dev@template.invalid"]


def sh(cwd: Path, *cmd: str, code: int = 0) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == code, f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_cruft_check_and_update_follow_the_template(tmp_path):
    # A template checkout of our own (committed HEAD), given as a *relative* path, as users type it.
    sh(tmp_path, "git", "clone", "-q", str(ROOT), "template")
    cookiecutter = str(Path(sys.executable).parent / "cookiecutter")
    cruft = str(Path(sys.executable).parent / "cruft")
    sh(tmp_path, cookiecutter, "--no-input", "-o", "out", "template")
    project = tmp_path / "out" / "support-bot"
    answers = json.loads((project / ".cruft.json").read_text())
    assert answers["template"] == str(tmp_path / "template")
    assert answers["commit"] == sh(tmp_path / "template", "git", "rev-parse", "HEAD").strip()
    assert "up to date" in sh(project, cruft, "check")

    readme = tmp_path / "template" / "{{cookiecutter.project}}" / "README.md"
    readme.write_text(readme.read_text() + "\nA line from a template update.\n")
    sh(tmp_path / "template", *GIT, "commit", "-q", "-am", "Template update")
    assert "out of date" in sh(project, cruft, "check", code=1)
    sh(project, cruft, "update", "-y")
    assert (project / "README.md").read_text().endswith("A line from a template update.\n")
    assert "up to date" in sh(project, cruft, "check")
