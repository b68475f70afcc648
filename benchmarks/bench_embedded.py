"""Benchmark: the whole golden set on the embedded model, server start included, no cache, against
the runtime it replaced (llama-cpp-python's compiled server) measured in the same run.

    .venv/bin/python benchmarks/bench_embedded.py [--runs 2] [--baseline-wheel PATH | --no-baseline]

Ours: a default project baked from this tree runs `evaluate --no-cache` `--runs` times, as its users
run it. The answers of the runs are compared: temperature 0, a fixed seed and one slot must give the
same answers every time (the gate pairs examples across runs). The same project with two slots
(`model.embedded_slots: 2`, `eval.concurrency: 2`) shows what batching buys and what it costs.

Baseline: the default project baked from BASELINE_REF (the last commit on llama-cpp-python) with the
compiled llama-cpp-python wheel added to its venv. That commit's `make setup` compiled the wheel into
~/.cache/cookiecutter-llmops/wheels; elsewhere build one with `pip wheel --no-deps
llama-cpp-python==0.3.36` (minutes) and pass it. The runs alternate, ours first, so both see the same
background load.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REF = "677b08dce4afbc0fdb937a786ba1ee99bfdb126e"  # the last commit on llama-cpp-python 0.3.36
WHEELS = Path.home() / ".cache" / "cookiecutter-llmops" / "wheels"
TARGET_S = 20.0
PREPROCESS = ["preprocess", "--golden", "eval/golden.jsonl", "--raw", "data/raw",
              "--out", "data/processed/eval_set.jsonl", "--manifest", "data/processed/manifest.json"]  # fmt: skip


@dataclass
class Run:
    wall_s: float
    p50_ms: float
    pass_rate: float
    examples: int
    outputs: list[str | None]


def baked(template: Path, output: Path) -> Path:
    from cookiecutter.main import cookiecutter

    from tests.bakery import link_venv

    project = Path(cookiecutter(str(template), no_input=True, output_dir=str(output)))
    link_venv(project)
    return project


def evaluate(project: Path, env: dict[str, str]) -> Run:
    python = str(project / ".venv" / "bin" / "python")
    started = time.perf_counter()
    proc = subprocess.run([python, "-m", "support_bot", "evaluate", "--no-cache"], cwd=project, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"evaluate failed in {project}:\n{proc.stdout}{proc.stderr}")
    results = [json.loads(line) for line in (project / "eval" / "results.jsonl").read_text().splitlines()]
    metrics = json.loads((project / "eval" / "metrics.json").read_text())
    return Run(wall, metrics["latency_p50_ms"], metrics["pass_rate"], metrics["examples"],
               [r["output"] for r in sorted(results, key=lambda r: r["id"])])  # fmt: skip


def baseline_project(tmp: Path, wheel: Path) -> Path:
    """The default project of BASELINE_REF, with the compiled llama-cpp-python in its own venv."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE_REF], capture_output=True, check=True).stdout
    template = tmp / "baseline-template"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(template, filter="data")
    project = baked(template, tmp / "baseline")
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    # Its server's other dependencies (fastapi, uvicorn, sse-starlette, ...) come from the shared venv.
    subprocess.run([uv, "pip", "install", "-q", "-p", str(project / ".venv" / "bin" / "python"), "--no-deps",
                    str(wheel), "sse-starlette", "starlette-context", "pydantic-settings", "diskcache"],
                   check=True)  # fmt: skip
    return project


def summary(name: str, runs: list[Run]) -> str:
    walls = [r.wall_s for r in runs]
    return (f"| {name} | {min(walls):.1f}–{max(walls):.1f} s | {statistics.median(r.p50_ms for r in runs) / 1000:.2f} s "
            f"| {runs[0].pass_rate:.3f} | {differing(runs)} of {runs[0].examples} |")  # fmt: skip


def differing(runs: list[Run]) -> int:
    return sum(len({r.outputs[i] for r in runs}) > 1 for i in range(len(runs[0].outputs)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="runs of each runtime (alternated)")
    parser.add_argument("--baseline-wheel", type=Path, help="a compiled llama_cpp_python-0.3.36 wheel")
    parser.add_argument("--no-baseline", action="store_true", help="measure only the current runtime")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.bakery import QUIET_ENV

    wheel = args.baseline_wheel or next(iter(sorted(WHEELS.glob("llama_cpp_python-0.3.36-*.whl"))), None)
    if not args.no_baseline and wheel is None:
        print(f"baseline skipped: no compiled llama-cpp-python wheel in {WHEELS} (see --baseline-wheel)")
    env = {**os.environ, **QUIET_ENV, "CI": "1"}
    tmp = Path(tempfile.mkdtemp(prefix="bench-embedded-"))
    try:
        projects = {"ours": baked(ROOT, tmp / "ours"), "ours, 2 slots": baked(ROOT, tmp / "slots")}
        params = projects["ours, 2 slots"] / "params.yaml"
        text = params.read_text().replace("embedded_slots: 1", "embedded_slots: 2")
        params.write_text(re.sub(r"(?m)^(  concurrency:) 1\b", r"\1 2", text))
        if wheel is not None and not args.no_baseline:
            projects["baseline"] = baseline_project(tmp, wheel)
        for project in projects.values():
            python = str(project / ".venv" / "bin" / "python")
            subprocess.run([python, "-m", "support_bot", *PREPROCESS], cwd=project, env=env, check=True,
                           capture_output=True)  # fmt: skip
        runs: dict[str, list[Run]] = {name: [] for name in projects}
        for _ in range(args.runs):
            for name, project in projects.items():
                runs[name].append(evaluate(project, env))
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}")
        print(
            "| runtime | wall (server start + golden set) | p50 per call | pass rate | answers that differ between runs |"
        )
        print("| --- | --- | --- | --- | --- |")
        print(summary("xllamacpp 1 slot, concurrency 1 (ours)", runs["ours"]))
        print(summary("xllamacpp 2 slots, concurrency 2 (model.embedded_slots: 2)", runs["ours, 2 slots"]))
        if "baseline" in runs:
            print(summary("llama-cpp-python 0.3.36 compiled, concurrency 2 (baseline)", runs["baseline"]))
            ours, base = runs["ours"], runs["baseline"]
            answers = sum(a != b for a, b in zip(ours[0].outputs, base[0].outputs, strict=True))
            ratio = statistics.median(r.wall_s for r in base) / statistics.median(r.wall_s for r in ours)
            print(f"ours is {ratio:.2f}x faster; the two runtimes answer {answers} of {ours[0].examples} differently")
        best = min(r.wall_s for r in runs["ours"])
        print(f"target: golden set <= {TARGET_S:.0f} s: {'met' if best <= TARGET_S else 'NOT met'} ({best:.1f} s); "
              f"identical answers on every run: {'yes' if differing(runs['ours']) == 0 else 'NO'}")  # fmt: skip
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
