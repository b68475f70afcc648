"""`drift`'s error rates, measured: how often it cries wolf on production that looks like the golden set,
and how often it sees production that has moved.

The baked project's own `drift.verdict.judge`, its example app and its golden set (the default bake; the
settings of its params.yaml: alpha 0.01, 2000 permutations, min_records 100). Synthetic captures of
300 answers are drawn from the golden set's own distribution: the message of a random example the
flow accepts, the category of a random labelled one, the reply of a random main result (the seven
end-to-end examples, as the eval writes them). Measured on this machine (seeds 0..199 and 0..49),
on the 70-example golden set:

- false alarms: 0 of 200 samples drifted (the bar: alpha = 1%, allowing for chance 7 of 200);
- half the traffic moved to one queue: 50 of 50 detected (category mix). The reference is 50
  labelled examples and five tests share alpha, so a smaller move is seen less often (30% moved: 8
  of 50; with the 23 labelled examples the set had before, 45 and 0 of 50): the golden set's size,
  not the captures', bounds what drift can see;
- messages twice as long: 50 of 50 (request length);
- 5% of answers from a new `system_fingerprint`: 50 of 50 (provider).

The permutation p-values themselves are checked apart, on samples that share one distribution by
construction (a test of any level must reject at most that often: at p <= 0.05, measured 17, 11 and
6 of 300 for length, category mix and share), and the statistics against scipy.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy import stats

from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]
SEEDS, SHIFTED_SEEDS, ANSWERS = 200, 50, 300
# Chance alone: X ~ Binomial(200, 0.01) has P(X >= 8) ~ 0.001, so more than 7 false alarms is a bug.
MAX_FALSE_ALARMS = 7

RATES = r"""
import json, sys
from pathlib import Path
import numpy as np
from {package}.app.loader import load_app
from {package}.evaluation import golden
from {package}.evaluation.results import Result
from {package}.production import records
from {package}.production.drift import samples, verdict
from {package}.settings import load

config = load("params.yaml")
app = load_app(config.app.entry)
(name, flow), = app.flows.items()
examples = golden.load(Path("eval/golden.jsonl"))
fp = "fake-model fingerprint=fake-1"
main = [
    Result(e.id, 0, e.target, "v", json.dumps({{**e.expectations["expected"], "reply": f"About {{e.id}}: see policy."}}),
           True, provider=fp)
    for e in examples if e.flow == name
]
accepted = samples.accepts(flow)
messages = [e.input for e in examples if e.flow == name or (e.flow is None and accepted(e.input))]
labels = [c for e in examples if e.flow == name or (e.flow is None and accepted(e.input))
          if (c := samples.category_of(flow, e.expectations.get("expected"))) is not None]

def captures(seed, shift):
    rng = np.random.default_rng(seed)
    out = records.Captures(files=1)
    for i in range(int(sys.argv[1])):
        request = dict(messages[rng.integers(len(messages))])
        category = labels[rng.integers(len(labels))]
        reply = json.loads(main[rng.integers(len(main))].output)
        provider = fp
        if shift == "mix" and rng.random() < 0.5:
            category = "refund"
        if shift == "longer":
            request = {{k: f"{{v}} {{v}}" for k, v in request.items()}}
        if shift == "fingerprint" and rng.random() < 0.05:
            provider = "fake-model fingerprint=fake-2"
        line = {{"kind": "answer", "request_id": f"r{{i}}", "target": f"flow:{{name}}", "status": 200,
                 "request": request, "reply": reply, "category": category, "provider": provider}}
        out.answers.append(records.Answer(line, f"c.jsonl:{{i + 1}}"))
    return out

rates = {{}}
for shift, seeds in (("none", int(sys.argv[2])), ("mix", int(sys.argv[3])), ("longer", int(sys.argv[3])),
                     ("fingerprint", int(sys.argv[3]))):
    drifted, judged, names = 0, set(), {{}}
    for seed in range(seeds):
        outcome = verdict.judge(examples, main, captures(seed, shift), app, config.drift)
        drifted += bool(outcome.drifted)
        judged |= {{s.name for s in outcome.signals}}
        for s in outcome.drifted:
            names[s.name] = names.get(s.name, 0) + 1
    rates[shift] = {{"drifted": drifted, "seeds": seeds, "by": names, "judged": sorted(judged)}}
print(json.dumps(rates))
"""


@pytest.mark.slow
def test_false_alarms_stay_under_alpha_and_real_shifts_are_seen(ready):
    project = ready()
    package = next(p.name for p in (project / "src").iterdir() if (p / "cli.py").exists())
    out = run(project, "python", "-c", RATES.format(package=package), str(ANSWERS), str(SEEDS), str(SHIFTED_SEEDS))
    rates = json.loads(out.stdout)
    every = ["category_mix", "fallback_share", "provider", "refusal_rate", "reply_length", "request_length"]
    assert rates["none"]["judged"] == every, "each signal must have been judged, or its rate says nothing"
    assert rates["none"]["drifted"] <= MAX_FALSE_ALARMS, rates["none"]
    for shift, signal in (("mix", "category_mix"), ("longer", "request_length"), ("fingerprint", "provider")):
        seen = rates[shift]["by"].get(signal, 0)
        assert seen >= 0.8 * SHIFTED_SEEDS, (shift, rates[shift])


def divergence() -> ModuleType:
    """The template's production/drift/divergence.py (numpy only), loaded by path."""
    path = next((ROOT / "{{cookiecutter.project}}" / "src").glob("*/production/drift/divergence.py"))
    if "_divergence" not in sys.modules:
        spec = importlib.util.spec_from_file_location("_divergence", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["_divergence"] = module  # dataclasses look their module up while building a class
        spec.loader.exec_module(module)
    return sys.modules["_divergence"]


def test_permutation_p_values_reject_a_true_null_at_most_at_their_level():
    """Both samples from one distribution, 300 times per test: the share of p <= 0.05 is at most 5%
    (allowing 3 standard deviations of chance: 0.05 + 3 x sqrt(0.05 x 0.95 / 300) ~ 0.088)."""
    d = divergence()
    rng = np.random.default_rng(7)
    trials, level = 300, 0.05
    allowed = level + 3 * (level * (1 - level) / trials) ** 0.5
    queues = np.array(["a", "b", "c", "d"])
    draws = {
        "ks": lambda: (list(rng.lognormal(3, 0.6, 25).round()), list(rng.lognormal(3, 0.6, 200).round())),
        "category_mix": lambda: (list(rng.choice(queues, 20, p=[0.4, 0.3, 0.2, 0.1])),
                                 list(rng.choice(queues, 200, p=[0.4, 0.3, 0.2, 0.1]))),
        "share_increase": lambda: (list(rng.random(30) < 0.2), list(rng.random(200) < 0.2)),
    }  # fmt: skip
    for name, draw in draws.items():
        test = getattr(d, name)
        rejected = sum(test(*draw(), permutations=300, seed=i).p_value <= level for i in range(trials))
        assert rejected / trials <= allowed, (name, rejected)


def test_the_statistics_are_scipys():
    d = divergence()
    rng = np.random.default_rng(3)
    for n, m in ((5, 40), (31, 300), (200, 50)):
        a, b = rng.integers(1, 80, n), rng.integers(1, 100, m)
        assert d.ks(list(a), list(b), permutations=10, seed=0).statistic == pytest.approx(
            stats.ks_2samp(a, b).statistic
        )
        x, y = list(rng.choice(list("abcde"), n)), list(rng.choice(list("abcdef"), m))
        table = [[x.count(c) for c in "abcdef"], [y.count(c) for c in "abcdef"]]
        table = [[row[i] for i in range(6) if table[0][i] + table[1][i]] for row in table]
        assert d.chi_square(x, y) == pytest.approx(stats.chi2_contingency(table, correction=False).statistic)
        assert d.category_mix(x, y, permutations=10, seed=0).more["chi_square"] == pytest.approx(d.chi_square(x, y))
    # The p-value is (1 + #>=) / (1 + B): never 0, 1 when nothing differs.
    assert d.share_increase([False] * 5, [False] * 50, permutations=99, seed=0).p_value == 1.0
    extreme = d.ks([1] * 30, [100] * 300, permutations=99, seed=0)
    assert extreme.statistic == 1.0 and extreme.p_value == pytest.approx(1 / 100)
