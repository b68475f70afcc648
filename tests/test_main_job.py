"""The main job, end to end: bake the defaults and run the pipeline on the real embedded model."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import run

pytestmark = [pytest.mark.slow, pytest.mark.long]


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


def test_a_prompt_without_its_labels_misses_the_thresholds(repro):
    project, _ = repro
    prompt = project / "prompts" / "classify_intent.yaml"
    good = prompt.read_text()
    broken = re.sub(r"      (order_status|refund|account|product|other): .*\n", "", good)
    broken = broken.replace("      enum: [order_status, refund, account, product, other]\n", "")
    assert broken != good
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
