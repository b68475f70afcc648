"""Benchmark: the eval in 4 shards, one model replica each, against 1 shard on 1 replica.

    .venv/bin/python benchmarks/bench_shards.py [--n 2000] [--latency-ms 100] [--slots 8] [--shards 4]

What runs: the default project is baked into a temp dir (its venv linked to this repo's) and its CLI
runs as CI's jobs run it, each in a fresh process: `evaluate` over N echo examples (1 shard), then
`evaluate --shard I/4` x 4 at once (the CI matrix, or the Indexed Job's pods) followed by `merge`.
A model replica is the baked project's fake model with a fixed latency L that answers at most C
calls at once (`slots`, an inference server's batch): its throughput is C / L. Replicas sit behind
one Service address, as in a cluster (kube-proxy spreads the shards' connections over them), so R
replicas are one endpoint with R x C slots; every shard runs at eval.concurrency C, enough to keep
one replica busy. No response cache is shared: every run answers live.

Ideal: the 4 shards take 1/4 of the single run (0.25x); process start, the shards' own work and the
merge are what keeps it above. Target: <= 0.3x, merge included.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT_YAML = """id: echo
description: Repeat the text (benchmark).
variables: [text]
messages:
  - role: system
    content: Repeat the text.
  - role: user
    content: "{text}"
"""
OUTPUTS = ("metrics.json", "catalogue.json", "results.jsonl", "report.md")


def bake_project(workdir: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.bakery import bake, link_venv

    project = bake(workdir)
    link_venv(project)
    sys.path.insert(0, str(project / "src"))
    return project


def outputs(out: str) -> list[str]:
    return [f"--{Path(name).stem}={out}/{name}" for name in OUTPUTS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--slots", type=int, default=8, help="calls one replica answers at once (C)")
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    try:
        project = bake_project(tmp / "bake")
        FakeModel = importlib.import_module("support_bot.testing.fake_model").FakeModel  # the baked package
        python = str(project / ".venv" / "bin" / "python")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "CI": "1"})
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        work = tmp / "work"
        (work / "prompts").mkdir(parents=True)
        shutil.copy(ROOT / "{{cookiecutter.project}}" / "prompts" / "schema.json", work / "prompts" / "schema.json")
        (work / "prompts" / "echo.yaml").write_text(PROMPT_YAML)
        rows = [{"id": f"ex-{i:05}", "prompt": "echo", "input": {"text": f"sentence {i}"}, "expected": f"sentence {i}"}
                for i in range(args.n)]  # fmt: skip
        (work / "golden.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        base = [python, "-m", "support_bot"]
        common = ["--eval-set", "golden.jsonl", "--prompts", "prompts", "--params", "params.yaml"]

        def params(base_url: str, cache: str) -> None:
            (work / "params.yaml").write_text(
                f"model:\n  base_url: {base_url}\n  name: fake-model\n  max_tokens: 32\n"
                f"eval:\n  concurrency: {args.slots}\n  cache_dir: .cache/{cache}\n"
            )

        latency_s = args.latency_ms / 1000
        subprocess.run([*base, "--help"], cwd=work, env=env, check=True, capture_output=True)  # writes the .pyc files
        with FakeModel(latency_s=latency_s, slots=args.slots) as one:
            params(one.base_url, "single")
            started = time.perf_counter()
            subprocess.run([*base, "evaluate", *common, *outputs("single")], cwd=work, env=env, check=True)
            single = time.perf_counter() - started
            assert one.calls() == args.n, one.calls()
        with FakeModel(latency_s=latency_s, slots=args.slots * args.shards) as service:
            params(service.base_url, "sharded")
            started = time.perf_counter()
            procs = [
                subprocess.Popen([*base, "evaluate", *common, *outputs(f"unused-{i}"),
                                  "--shard", f"{i}/{args.shards}", "--shard-dir", "shards"], cwd=work, env=env)
                for i in range(args.shards)
            ]  # fmt: skip
            assert all(p.wait() == 0 for p in procs), "a shard failed"
            shards_done = time.perf_counter() - started
            subprocess.run([*base, "merge", "--shard-dir", "shards", *common, *outputs("merged")],
                           cwd=work, env=env, check=True)  # fmt: skip
            sharded = time.perf_counter() - started
            assert service.calls() == args.n, service.calls()
        merged = json.loads((work / "merged" / "metrics.json").read_text())
        alone = json.loads((work / "single" / "metrics.json").read_text())
        assert merged["pass_rate"] == alone["pass_rate"] == 1.0 and merged["calls"] == alone["calls"] == args.n
        ratio = sharded / single
        print(
            f"N={args.n} examples, L={args.latency_ms:.0f} ms, C={args.slots} slots a replica; load {os.getloadavg()}"
        )
        print(
            f"1 shard, 1 replica (evaluate):             {single:.3f} s  (C/L bound {args.n * latency_s / args.slots:.3f} s)"
        )
        print(f"{args.shards} shards, {args.shards} replicas (evaluate --shard): {shards_done:.3f} s")
        print(f"  + merge:                                 {sharded:.3f} s")
        print(
            f"sharded / single:                          {ratio:.3f}x  (ideal {1 / args.shards:.2f}x, target <= 0.3x)"
        )
        return 0 if ratio <= 0.3 else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
