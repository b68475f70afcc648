"""The template's own tooling holds to the standard it sets for the projects it generates."""

import subprocess
import sys

from tests.bakery import ROOT


def test_template_tooling_is_lint_clean():
    for args in (
        ["ruff", "check", "tests", "benchmarks"],
        ["ruff", "format", "--check", "tests", "benchmarks"],
        ["mypy"],
    ):
        proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_benchmarks_document_how_to_run_them():
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=False)
        assert proc.returncode == 0 and "usage:" in proc.stdout, (script.name, proc.stderr)
