"""Synthetic eval and gate pages, written by a baked project's own viewer, and a browser to open them.

The browser test (tests/test_viewer.py) and the benchmark (benchmarks/bench_viewer.py) share these:
`write_pages` runs SCRIPT in the project's venv (the package's functions, no model), which writes
report.html, gate.html and expected.json - what the filters must show, counted here in Python.
`browser` starts Debian's Chromium through Playwright (never a downloaded browser) with networking
and every background service off.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import run

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE_OUTPUT = "<img src=x onerror=alert(1)>"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
]  # fmt: skip

# Run by the project's Python: __PACKAGE__, __N__ and __HOSTILE__ are filled in.
SCRIPT = r"""
import json, sys
from pathlib import Path
from __PACKAGE__.app.prompts import Prompt
from __PACKAGE__.evaluation import catalogue
from __PACKAGE__.evaluation.golden import Example
from __PACKAGE__.evaluation.metrics import compute, missed_thresholds
from __PACKAGE__.evaluation.results import Result
from __PACKAGE__.gate.inputs import GateInputs
from __PACKAGE__.gate.paired import compare
from __PACKAGE__.gate.verdict import GateResult, Verdict
from __PACKAGE__.settings import Policy, parse
from __PACKAGE__.viewer import eval_page, gate_page

out, n = Path(sys.argv[1]), __N__
TAGS, TARGETS = ["billing", "refund", "account"], ["echo", "summarise"]
prompts = {
    t: Prompt(t, "", ("text",), ({"role": "system", "content": f"You {t} support messages. " * 20},
              {"role": "user", "content": "{text}"}), None, (), f"{t}.yaml")
    for t in TARGETS
}
examples, results = [], []
for i in range(n):
    eid, target, tags = f"ex-{i:05d}", TARGETS[i % 2], [TAGS[i % 3]] + (["vip"] if i % 10 == 0 else [])
    text = f"Customer {i} writes about order {i * 7} and a refund of {i % 90} dollars."
    if i == 3:
        eid, text = "hostile", "<script>alert(2)</script> " + "very long line " * 700 + "x" * 3000
    examples.append(Example(eid, target, {"text": text}, {"expected": f"answer {i}"}, tuple(tags)))
    output = __HOSTILE__ if eid == "hostile" else f"Answer {i}: the order {i * 7} ships in {i % 5 + 1} days."
    common = dict(id=eid, target=target, version="v1", tags=tags, tokens_in=120, tokens_out=20)
    if i % 13 == 5:
        results.append(Result(**common, repeat=0, output=None, passed=None, error="HTTP 500: upstream down"))
        continue
    passed = i % 7 != 1
    score = {"exact": {"passed": passed, "value": float(passed), "detail": "" if passed else "expected answer"}}
    latency = 40.0 + (i * 37) % 400
    results.append(Result(**common, repeat=0, output=output, passed=passed, scores=score, latency_ms=latency))
    if i % 11 == 2:  # a second repeat that disagrees: flaky
        flipped = {"exact": {"passed": not passed, "value": 0.0, "detail": ""}}
        results.append(Result(**common, repeat=1, output=output + " (again)", passed=not passed, scores=flipped,
                              latency_ms=latency))
values = compute(results, {"input": 0.15, "output": 0.6})
settings = parse('model: {base_url: "http://127.0.0.1:9/v1", name: test}\nthresholds: {min: {pass_rate: 0.8}}\n')
missed = missed_thresholds(values, {"pass_rate": 0.8}, {"error_rate": 0.1})
page = eval_page.render(values, results, examples, prompts, minimum={"pass_rate": 0.8}, maximum={"error_rate": 0.1},
                        missed=missed, model="synthetic")
(out / "report.html").write_text(page)

# The gate: head = these results; base = the same with every 9th example's verdict the other way.
base = []
for r in results:
    if r.passed is not None and int(r.id[3:] if r.id.startswith("ex-") else 3) % 9 == 4:
        r = Result(**{**r.to_json(), "passed": not r.passed, "output": (r.output or "") + " in the old words"})
    base.append(r)
names = ["pass_rate", *[f"tag_{t}_pass_rate" for t in TAGS]]
known = catalogue.build(names, {}, TAGS)
paired = compare(base, results, known["pass_rate"])
old = compute(base, {})
verdicts = [Verdict(m, old[m], values[m], "ok", "within tolerance") for m in names]
result = GateResult(verdicts=verdicts, paired={"pass_rate": paired})
golden = {e.id: e.to_json() for e in examples}
inputs = GateInputs("main", Policy(settings.thresholds, settings.gate), {}, {}, known, results, base, golden)
(out / "gate.html").write_text(gate_page.render(result, inputs))

rows = eval_page.data(results, examples, prompts)["rows"]
def search(term):
    return sum(any(term in (r[k] or "").lower() for k in ("id", "input", "output", "expected", "error", "target"))
               or term in " ".join(r["tags"]).lower() for r in rows)
expected = {
    "calls": len(rows),
    "status": {s: sum(r["status"] == s for r in rows) for s in ("pass", "fail", "error")},
    "flaky": sum(r["flaky"] for r in rows),
    "tag": {t: sum(t in r["tags"] for r in rows) for t in [*TAGS, "vip"]},
    "target": {t: sum(r["target"] == t for r in rows) for t in TARGETS},
    "fail_vip": sum(r["status"] == "fail" and "vip" in r["tags"] for r in rows),
    "search": {"order 77 and": search("order 77 and"), "upstream": search("upstream")},
    "examples": len({r["id"] for r in rows}),
    "pass_to_fail": paired.pass_to_fail,
    "fail_to_pass": paired.fail_to_pass,
}
(out / "expected.json").write_text(json.dumps(expected))
"""


def write_pages(project: Path, out: Path, examples: int) -> dict[str, Any]:
    """report.html and gate.html of `examples` synthetic examples in `out`; returns expected.json."""
    package = next(p.parent.name for p in (project / "src").glob("*/__init__.py"))
    out.mkdir(parents=True, exist_ok=True)
    script = SCRIPT.replace("__PACKAGE__", package).replace("__N__", str(examples))
    script = script.replace("__HOSTILE__", repr(HOSTILE_OUTPUT))
    (out / "make_pages.py").write_text(script)
    run(project, "python", str(out / "make_pages.py"), str(out))
    return json.loads((out / "expected.json").read_text())


@contextlib.contextmanager
def browser(profile: Path) -> Iterator[Any]:
    """Debian's Chromium, headless, under Playwright, with a fresh profile and no network."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        raise RuntimeError("no /usr/bin/chromium: `make tools` installs Debian's chromium")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=FLAGS, offline=True,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()
