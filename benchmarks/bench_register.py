"""How long the `register` stage takes: on a fresh sqlite store and on an existing one (target < 6 s).

Bakes the default project, evaluates it on the fake model (its testing.fake_model, so no model time is
counted), then times `support-bot register` as DVC runs it: a new process each time. Printed next
to the floor every MLflow command pays, `python -c "import mlflow"`, and a bare interpreter start.
Wall time depends on what else the machine runs, so CPU time (user+sys of the child) is printed too.

    .venv/bin/python benchmarks/bench_register.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.baked import fake_model, local_store, private_project
from tests.bakery import project_env

TARGET_S = 6.0


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s) of one child process; raises if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="registers on the existing store")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-register-") as tmp:
        work = Path(tmp)
        project = private_project(work / "bake")
        env = project_env(project, **local_store(project))
        with fake_model(project):
            subprocess.run(["python", "-m", "dvc", "repro", "evaluate"], cwd=project, env=env, check=True,
                           capture_output=True)  # fmt: skip
        register = ["support-bot", "register", "--out", str(work / "version.json")]
        python = str(project / ".venv" / "bin" / "python")
        # Warm the byte-code cache and the page cache, so every sample below starts alike.
        timed([python, "-c", "import mlflow, mlflow.pyfunc"], project, env)

        fresh = timed(register, project, env)
        existing = [timed(register, project, env) for _ in range(args.runs)]
        floor = [timed([python, "-c", "import mlflow"], project, env) for _ in range(3)]
        bare = [timed([python, "-c", "pass"], project, env) for _ in range(3)]

    wall, cpu = median(existing)
    floor_wall, floor_cpu = median(floor)
    bare_wall, _ = median(bare)
    print(f"register stage (sqlite store, default project, {args.runs} runs; load avg {os.getloadavg()[0]:.1f})")
    print(f"  fresh store        {fresh[0]:6.2f} s wall  {fresh[1]:6.2f} s CPU   (creates the schema once)")
    print(f"  existing store     {wall:6.2f} s wall  {cpu:6.2f} s CPU   median; target < {TARGET_S:.0f} s")
    print(f"  import mlflow      {floor_wall:6.2f} s wall  {floor_cpu:6.2f} s CPU   (the floor of any MLflow command)")
    print(f"  python start       {bare_wall:6.2f} s wall")
    print(f"  existing / target      {wall / TARGET_S:5.2f}x  ({'within' if wall < TARGET_S else 'OVER'} target)")
    print(f"  existing / import floor {wall / floor_wall:5.2f}x wall, {cpu / floor_cpu:5.2f}x CPU")
    return 0  # a miss is printed, as the other benchmarks do; `make bench` runs them all


if __name__ == "__main__":
    sys.exit(main())
