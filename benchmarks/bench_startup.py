"""Benchmark: how fast a bake is and how fast the generated CLI starts.

    .venv/bin/python benchmarks/bench_startup.py [--runs 5]

Bake: `cookiecutter --no-input` of this template (hooks included: prune, git init, baseline
commit), against the same bake with hooks disabled (rendering alone: the floor this template's
files impose) and against a bare interpreter start. Target: under 3 s.

CLI: `<project> --help` of a baked project, against a bare `python -c pass` (the physical limit of
a Python CLI) and against the CLIs of the tools the project drives, measured in the same run:
`dvc --help` and `mlflow --help`. Target: under 0.5 s (no heavy imports at start-up).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best_and_median(cmd: list[str], runs: int, cwd: Path, env: dict[str, str], before=None) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        if before:
            before()
        started = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    from tests.bakery import QUIET_ENV, bake, link_venv

    env = {**os.environ, **QUIET_ENV}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # installed tools run from .pyc files
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    bin_dir = Path(sys.executable).parent
    try:
        out = tmp / "out"

        def clean() -> None:
            shutil.rmtree(out, ignore_errors=True)

        bake_cmd = [str(bin_dir / "cookiecutter"), "--no-input", "-o", str(out), str(ROOT)]
        baked = best_and_median(bake_cmd, args.runs, tmp, env, before=clean)
        no_hooks = best_and_median(
            [*bake_cmd[:2], "--accept-hooks", "no", *bake_cmd[2:]], args.runs, tmp, env, before=clean
        )
        print(f"load average {os.getloadavg()}, {args.runs} runs each (best / median)")
        print(f"cookiecutter --no-input (hooks):   {baked[0]:.3f} / {baked[1]:.3f} s  (target < 3 s)")
        print(f"cookiecutter, hooks disabled:      {no_hooks[0]:.3f} / {no_hooks[1]:.3f} s  "
              f"(hooks cost {baked[1] - no_hooks[1]:.3f} s: git init + baseline commit)")  # fmt: skip

        project = bake(tmp / "cli")
        link_venv(project)
        venv_bin = project / ".venv" / "bin"
        # The floor: the same interpreter and site set-up as the CLI, doing nothing.
        start = best_and_median([str(venv_bin / "python"), "-c", "pass"], args.runs, project, env)
        print(f"python -c pass (project venv):     {start[0]:.3f} / {start[1]:.3f} s")
        ours = best_and_median([str(venv_bin / "support-bot"), "--help"], args.runs, project, env)
        print(f"support-bot --help:                {ours[0]:.3f} / {ours[1]:.3f} s  (target < 0.5 s; "
              f"{ours[1] / start[1]:.1f}x the bare interpreter)")  # fmt: skip
        for tool in ("dvc", "mlflow"):
            peer = best_and_median([str(bin_dir / tool), "--help"], args.runs, project, env)
            print(f"{tool + ' --help:':<34} {peer[0]:.3f} / {peer[1]:.3f} s  ({peer[1] / ours[1]:.1f}x ours)")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
