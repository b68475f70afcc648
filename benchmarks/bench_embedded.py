"""Benchmark: the whole golden set on the embedded model (SmolLM2-135M via llama.cpp), no cache.

    .venv/bin/python benchmarks/bench_embedded.py

Runs a baked default project's `evaluate --no-cache` as its users run it (server start included)
and prints the wall time against the 60 s target, the model's own time (sum of call latencies
divided by the concurrency: the floor for this endpoint) and the tokens per second it delivered.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.bakery import QUIET_ENV, bake, link_venv

    tmp = Path(tempfile.mkdtemp(prefix="bench-embedded-"))
    try:
        project = bake(tmp)
        link_venv(project)
        env = {**os.environ, **QUIET_ENV, "CI": "1"}
        python = str(project / ".venv" / "bin" / "python")
        steps = [[python, "-m", "support_bot", "preprocess", "--golden", "eval/golden.jsonl", "--raw", "data/raw",
                  "--out", "data/processed/eval_set.jsonl", "--manifest", "data/processed/manifest.json"]]  # fmt: skip
        subprocess.run(steps[0], cwd=project, env=env, check=True, capture_output=True)
        started = time.perf_counter()
        proc = subprocess.run([python, "-m", "support_bot", "evaluate", "--no-cache"], cwd=project, env=env,
                              capture_output=True, text=True, check=False)  # fmt: skip
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr)
            return proc.returncode
        results = [json.loads(line) for line in (project / "eval" / "results.jsonl").read_text().splitlines()]
        metrics = json.loads((project / "eval" / "metrics.json").read_text())
        concurrency = int(next(line.split(":")[1] for line in (project / "params.yaml").read_text().splitlines()
                               if line.strip().startswith("concurrency:")))  # fmt: skip
        model_s = sum(r["latency_ms"] or 0 for r in results) / 1000
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}")
        print(f"golden set: {metrics['examples']} examples, {metrics['calls']} calls, concurrency {concurrency}")
        print(f"wall (server start + all calls + scoring): {wall:.1f} s  (target < 60 s)")
        print(f"model time / concurrency (the endpoint's floor): {model_s / concurrency:.1f} s "
              f"-> harness overhead {wall / (model_s / concurrency):.2f}x")  # fmt: skip
        print(f"tokens: {metrics['tokens_in']} in + {metrics['tokens_out']} out; "
              f"{metrics['tokens_out'] / (model_s / concurrency):.0f} output tok/s delivered")  # fmt: skip
        print(f"pass_rate {metrics['pass_rate']:.3f}, p50 {metrics['latency_p50_ms']:.0f} ms, "
              f"p95 {metrics['latency_p95_ms']:.0f} ms")  # fmt: skip
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
