"""How long `drift`'s permutation tests take: each test with `drift.permutations` (2000) random splits,
a reference the size of a golden set against a week of captured answers.

The template's production/drift/divergence.py (numpy only), loaded by path; lengths drawn like message
lengths, five categories, a yes/no outcome. Target: well under a second a test at thousands of
answers, so a report of a dozen tests stays interactive.

    .venv/bin/python benchmarks/bench_drift.py [--permutations 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((31, 300), (31, 3000), (200, 3000), (31, 30000), (2000, 30000))


def divergence():
    path = next((ROOT / "{{cookiecutter.project}}" / "src").glob("*/production/drift/divergence.py"))
    spec = importlib.util.spec_from_file_location("_divergence", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_divergence"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--permutations", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    d = divergence()
    rng = np.random.default_rng(0)
    queues = np.array(["a", "b", "c", "d", "e"])
    print(f"{'reference':>9} {'current':>8} {'ks ms':>8} {'mix ms':>8} {'share ms':>9}  (best of {args.repeats})")
    for n_ref, n_cur in SIZES:
        samples = {
            "ks": (list(rng.lognormal(3.5, 0.6, n_ref).round()), list(rng.lognormal(3.6, 0.6, n_cur).round())),
            "category_mix": (list(rng.choice(queues, n_ref)), list(rng.choice(queues, n_cur))),
            "share_increase": (list(rng.random(n_ref) < 0.1), list(rng.random(n_cur) < 0.12)),
        }
        best = {}
        for name, (reference, current) in samples.items():
            test = getattr(d, name)
            times = []
            for repeat in range(args.repeats):
                start = time.perf_counter()
                test(reference, current, permutations=args.permutations, seed=repeat)
                times.append(time.perf_counter() - start)
            best[name] = 1000 * min(times)
        print(f"{n_ref:>9} {n_cur:>8} {best['ks']:>8.1f} {best['category_mix']:>8.1f} {best['share_increase']:>9.1f}")


if __name__ == "__main__":
    main()
