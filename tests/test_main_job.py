"""The main job, end to end: bake the defaults and run the pipeline on the real embedded model."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import run

pytestmark = [pytest.mark.slow, pytest.mark.long]
GIT = ["git", "-c", "user.name=power test", "-c", "user.email=power@test.invalid"]


def llama_servers_in(project: Path) -> list[int]:
    """PIDs of embedded model servers whose working directory is the project (ours, not other tests')."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if "support_bot.app.embedded" in cmdline and Path(cwd) == project:
            found.append(int(proc.name))
    return found


@pytest.fixture(scope="module")
def repro(ready):
    project = ready()
    first = run(project, "make", "repro", timeout=900)
    return project, first


def test_dvc_repro_writes_every_output_and_registers(repro):
    project, first = repro
    for stage in ("preprocess", "evaluate", "register"):
        assert f"Running stage '{stage}'" in first.stdout
    golden = [line for line in (project / "eval" / "golden.jsonl").read_text().splitlines() if line.strip()]
    metrics = json.loads((project / "eval" / "metrics.json").read_text())
    assert metrics["examples"] == len(golden) and metrics["error_rate"] == 0.0
    results = (project / "eval" / "results.jsonl").read_text().splitlines()
    assert len(results) == len(golden) and all(json.loads(line)["output"] for line in results)
    assert {json.loads(line)["target"] for line in results} >= {"classify_intent", "flow:answer"}
    assert "# Evaluation report" in (project / "eval" / "report.md").read_text()
    version = json.loads((project / "models" / "version.json").read_text())
    assert set(version["prompts"]) == {"answer_policy", "classify_intent", "extract_order"}
    assert llama_servers_in(project) == [], "the embedded model server must be stopped"


def test_second_repro_is_a_no_op(repro):
    project, _ = repro
    again = run(project, "make", "repro")
    assert "Data and pipelines are up to date." in again.stdout
    assert "Running stage" not in again.stdout


def without_labels(prompt: str) -> str:
    """classify_intent without its labels: the queues' descriptions and the schema's enum removed."""
    broken = re.sub(r"      (order_status|refund|account|product|other): .*\n", "", prompt)
    broken = broken.replace("      enum: [order_status, refund, account, product, other]\n", "")
    assert broken != prompt, "classify_intent changed shape: update this edit"
    return broken


def test_the_paired_test_itself_catches_a_prompt_without_its_labels(repro, tmp_path):
    """The golden set is sized for this (gate/power.py, the README's "Sizing the golden set"): on the
    embedded model, classify_intent without its labels is a regression by the exact McNemar test
    (p <= alpha), not only by the absolute bars or `gate.max_drop`. The base is the pipeline run
    above, committed; the head re-runs only the changed prompt's examples (the rest are cached)."""
    project, _ = repro
    repo = tmp_path / "repo"  # a copy to commit and branch in: the default bake is shared with other tests
    shutil.copytree(project, repo, symlinks=True, ignore=shutil.ignore_patterns(".cache"))
    (repo / ".cache").mkdir()
    (repo / ".cache" / "eval").symlink_to(project / ".cache" / "eval")  # the answers, shared with the next test
    run(repo, "git", "add", "-A")
    run(repo, *GIT, "commit", "-q", "-m", "base: the embedded model's results")
    run(repo, "git", "checkout", "-q", "-b", "no-labels")
    prompt = repo / "prompts" / "classify_intent.yaml"
    prompt.write_text(without_labels(prompt.read_text()))
    head = run(repo, "make", "repro", check=False, timeout=900)
    assert "register: refused: thresholds missed" in head.stdout + head.stderr  # evaluate recorded everything
    gate = run(repo, "python", "-m", "support_bot", "gate", "--base", "main", check=False)
    assert gate.returncode == 1, gate.stdout + gate.stderr
    report = (repo / "eval" / "gate.md").read_text()
    verdict = next(line for line in report.splitlines() if line.startswith("| pass_rate |"))
    assert "❌" in verdict and "≤ α=0.05" in verdict and "not significant" not in verdict, verdict
    flips = next(line for line in report.splitlines() if re.match(r"\| pass_rate \| \d+ \| \d+ \| \d+ \|", line))
    examples, to_fail, to_pass, flaky, p_value = (float(cell) for cell in flips.strip("| ").split(" | ")[1:])
    golden = (repo / "eval" / "golden.jsonl").read_text().splitlines()
    assert examples == len(golden) and flaky == 0 and to_fail > to_pass and p_value <= 0.05, flips
    assert "This golden set detects drops ≥" in report and "### Power" in report


def test_a_prompt_without_its_labels_misses_the_thresholds(repro):
    project, _ = repro
    prompt = project / "prompts" / "classify_intent.yaml"
    good = prompt.read_text()
    broken = without_labels(good)
    try:
        prompt.write_text(broken)
        check = run(project, "python", "-m", "support_bot", "evaluate", "--check", check=False, timeout=900)
        assert check.returncode == 1, check.stdout + check.stderr
        assert "threshold missed: tag_intent_pass_rate" in check.stderr
        repro = run(project, "python", "-m", "dvc", "repro", check=False, timeout=900)
        assert repro.returncode != 0
        assert "register: refused: thresholds missed" in repro.stdout + repro.stderr
        # The bad head is still fully recorded, so the gate can report it.
        metrics = json.loads((project / "eval" / "metrics.json").read_text())
        assert metrics["tag_intent_pass_rate"] < 0.5
    finally:
        prompt.write_text(good)
