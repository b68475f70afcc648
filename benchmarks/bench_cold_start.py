"""Benchmark: `make demo` on a fresh machine: a clean copy of the template, no venv, empty caches.

    .venv/bin/python benchmarks/bench_cold_start.py [--no-baseline]

What a new user pays before the first report: create the venv, download and install every
dependency, bake, run `dvc repro` on the embedded model. "No caches" means an empty uv cache, pip
without a cache and no compiled-wheel cache (they all point into a temporary directory); the package
index itself is whatever this machine uses. The baseline is the same copy at BASELINE_REF (the last
commit on the compiled llama-cpp-python), measured in the same run right after ours. Target: <= 3
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REF = "677b08dce4afbc0fdb937a786ba1ee99bfdb126e"  # the last commit on llama-cpp-python 0.3.36
TARGET_S = 180.0


def working_tree(dest: Path) -> Path:
    """This checkout as a fresh clone would have it (tracked and new files, nothing ignored)."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, names):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def at_ref(ref: str, dest: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def cold_demo(tree: Path, caches: Path) -> tuple[float, int, str]:
    # This machine's own settings (index, certificates) stay; every cache is new and empty.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_CACHE", "PYTHON"))}
    env |= {
        "UV_CACHE_DIR": str(caches / "uv"),
        "PIP_NO_CACHE_DIR": "1",
        "XDG_CACHE_HOME": str(caches / "xdg"),
        "WHEELS": str(caches / "wheels"),  # the baseline's compiled llama-cpp-python goes here
    }
    started = time.perf_counter()
    proc = subprocess.run(["make", "demo"], cwd=tree, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, proc.returncode, proc.stdout[-2000:] + proc.stderr[-2000:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline (it compiles for minutes)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    try:
        trees = {"ours": working_tree(tmp / "ours")}
        if not args.no_baseline:
            trees["baseline (llama-cpp-python compiled)"] = at_ref(BASELINE_REF, tmp / "baseline")
        walls: dict[str, float] = {}
        for name, tree in trees.items():
            wall, code, tail = cold_demo(tree, tmp / f"caches-{len(walls)}")
            if code != 0:
                print(f"{name}: `make demo` failed ({code}):\n{tail}")
                return 1
            walls[name] = wall
            print(f"{name}: cold `make demo` {int(wall // 60)} min {wall % 60:02.0f} s", flush=True)
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}")
        ours = walls["ours"]
        for name, wall in walls.items():
            if name != "ours":
                print(f"ours is {wall / ours:.1f}x faster than the {name}")
        print(f"target: <= {TARGET_S:.0f} s: {'met' if ours <= TARGET_S else 'NOT met'} ({ours:.0f} s)")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
