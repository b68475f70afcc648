"""Sharded evaluation at scale: a generated 5,000-example set against the baked project's fake
endpoint (`python -m <package>.testing.fake_model`, a process of its own), through the project's
own CLI (`evaluate --shard I/N`, `merge`), run in one process of the baked venv.

1. Four shards, each on its own "machine" (an empty local cache), answer live and share their
   answers through `eval.cache_url` (a local directory): `merge` writes the metrics.
2. A fifth machine with an empty local cache runs the whole set once: the shared cache answers
   everything but the errors (never cached), and its metrics.json is the merge's, to the byte.
3. From that cache, N in {2, 4, 7} shards merged are that single run's four files, byte for byte.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import run

EXAMPLES = 5000

SCRIPT = r"""
import hashlib, json, os, shutil, subprocess, sys, time
from pathlib import Path

package, root, schema = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
cli = __import__(f"{package}.cli", fromlist=["main"]).main
os.chdir(root)
(root / "prompts").mkdir()
shutil.copy(schema, root / "prompts" / "schema.json")
(root / "prompts" / "echo.yaml").write_text(
    "id: echo\ndescription: scale\nvariables: [text]\nmessages:\n"
    "  - {role: system, content: Repeat.}\n  - {role: user, content: '{text}'}\n"
)
rows = []
for i in range(int(sys.argv[4])):
    text = f"!500 down {i}" if i % 250 == 7 else f"message number {i}"  # 20 always answer HTTP 500
    expected = text if i % 10 else "something else"  # a tenth fail
    rows.append({"id": f"ex-{i:05d}", "prompt": "echo", "input": {"text": text}, "expected": expected,
                 "tags": ["odd" if i % 2 else "even"]})
(root / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
fake = subprocess.Popen([sys.executable, "-m", f"{package}.testing.fake_model"], stdout=subprocess.PIPE, text=True)
url = fake.stdout.readline().strip()

def params(machine):
    (root / "params.yaml").write_text(
        f"model:\n  base_url: {url}\n  name: fake-model\n  max_tokens: 32\n"
        f"eval:\n  concurrency: 16\n  repeats: 1\n  max_error_rate: 0.2\n  max_attempts: 1\n"
        f"  cache_dir: .cache/{machine}\n  cache_url: {root / 'shared'}\n"
        "thresholds:\n  min:\n    pass_rate: 0.5\n"
    )

def outputs(out):
    return [f"--metrics={out}/metrics.json", f"--catalogue={out}/catalogue.json",
            f"--results={out}/results.jsonl", f"--report={out}/report.md"]

def files(out):
    return {n: (root / out / n).read_bytes() for n in ("metrics.json", "catalogue.json", "results.jsonl", "report.md")}

def shards(n, shard_dir, machine=None):
    for i in range(n):
        params(machine or f"shard-{i}")
        assert cli(["evaluate", "--eval-set=eval.jsonl", f"--shard={i}/{n}", f"--shard-dir={shard_dir}"]) == 0

report = {}
try:
    t = time.perf_counter()
    shards(4, "live")
    assert cli(["merge", "--shard-dir=live", "--eval-set=eval.jsonl", *outputs("live-merged")]) == 0
    report["live_4_shards_s"] = round(time.perf_counter() - t, 2)
    report["shared_objects"] = len(list((root / "shared").glob("*.jsonl")))
    params("fifth")
    t = time.perf_counter()
    assert cli(["evaluate", "--eval-set=eval.jsonl", *outputs("single")]) == 0
    report["single_from_shared_s"] = round(time.perf_counter() - t, 2)
    single, live = files("single"), files("live-merged")
    report["metrics_equal_live"] = single["metrics.json"] == live["metrics.json"]
    strip = lambda text: [{**json.loads(l), "cached": None} for l in text.decode().splitlines()]
    report["results_equal_live_but_cached"] = strip(single["results.jsonl"]) == strip(live["results.jsonl"])
    report["single_cached"] = sum(json.loads(l)["cached"] for l in single["results.jsonl"].decode().splitlines())
    report["metrics"] = json.loads(single["metrics.json"])
    for n in (2, 4, 7):
        t = time.perf_counter()
        shards(n, f"warm-{n}", machine="fifth")
        assert cli(["merge", f"--shard-dir=warm-{n}", "--eval-set=eval.jsonl", *outputs(f"merged-{n}")]) == 0
        report[f"warm_{n}_shards_s"] = round(time.perf_counter() - t, 2)
        merged = files(f"merged-{n}")
        report[f"identical_{n}"] = [k for k in single if merged[k] != single[k]]
finally:
    fake.terminate()
    fake.wait(timeout=10)
print("REPORT " + json.dumps(report))
"""


@pytest.mark.slow
def test_5000_examples_in_2_4_7_shards_merge_to_one_runs_bytes(ready, tmp_path):
    project = ready()
    package = next(p.name for p in (project / "src").iterdir() if (p / "cli.py").exists())
    schema = project / "prompts" / "schema.json"
    args = [package, str(tmp_path), str(schema), str(EXAMPLES)]
    out = run(project, "python", "-c", SCRIPT, *args, timeout=120)
    report = json.loads(out.stdout.split("REPORT ", 1)[1])
    print(json.dumps({k: v for k, v in report.items() if k != "metrics"}))
    metrics = report["metrics"]
    assert metrics["calls"] == EXAMPLES and metrics["error_rate"] == 20 / EXAMPLES
    assert 0 < metrics["pass_rate"] < 1 and "tag_odd_pass_rate" in metrics
    assert report["shared_objects"] == 4  # one object per writer
    assert report["metrics_equal_live"] and report["results_equal_live_but_cached"]
    assert report["single_cached"] == EXAMPLES - 20  # everything but the errors from the shared cache
    for n in (2, 4, 7):
        assert report[f"identical_{n}"] == [], (n, report[f"identical_{n}"])
