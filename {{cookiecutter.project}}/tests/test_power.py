"""The gate's power (gate/power.py): checked against a Monte Carlo simulation of the gate's own exact
McNemar test, at its edges, and as the report and `gate plan` show it."""

import math
from pathlib import Path

import numpy as np
import pytest

from {{ cookiecutter.package }}.cli import main as cli
from {{ cookiecutter.package }}.evaluation import catalogue
from {{ cookiecutter.package }}.evaluation.results import Result, dumps
from {{ cookiecutter.package }}.gate import power
from {{ cookiecutter.package }}.gate.paired import Paired, mcnemar_p
from {{ cookiecutter.package }}.gate.report import power_line, power_section

PASS_RATE = next(m for m in catalogue.FIXED if m.name == "pass_rate")
TRIALS = 20_000  # standard error of a simulated power <= 0.0035: the tolerance below is 4 of them
TOLERANCE = 0.015


def simulated(examples: int, drop: float, discordance: float, alpha: float, seed: int) -> float:
    """The share of simulated golden sets whose flips the gate's mcnemar_p calls significant."""
    rng = np.random.default_rng(seed)
    to_fail, to_pass = (discordance + drop) / 2, (discordance - drop) / 2
    flips = rng.multinomial(examples, [to_fail, to_pass, 1 - discordance], size=TRIALS)[:, :2]
    pairs, counts = np.unique(flips, axis=0, return_counts=True)
    rejected = sum(int(n) for (b, c), n in zip(pairs, counts, strict=True) if mcnemar_p(int(b), int(c)) <= alpha)
    return rejected / TRIALS


@pytest.mark.parametrize(
    ("examples", "drop", "discordance", "alpha"),
    [
        (43, 0.10, 0.10, 0.05),
        (38, 0.08, 0.29, 0.05),
        (120, 0.05, 0.20, 0.05),
        (60, 0.15, 0.25, 0.01),
        (300, 0.1, 0.5, 0.05),
    ],
)
def test_power_matches_a_simulation_of_the_exact_test(examples, drop, discordance, alpha):
    expected = simulated(examples, drop, discordance, alpha, seed=examples)
    assert power.power(examples, drop, discordance, alpha) == pytest.approx(expected, abs=TOLERANCE)


@pytest.mark.parametrize("alpha", [0.05, 0.01, 1 / 32, 1e-9, 0.5])
def test_the_critical_value_is_the_one_mcnemar_p_draws(alpha):
    for discordant in range(60):
        significant = [k for k in range(discordant + 1) if mcnemar_p(k, discordant - k) <= alpha]
        assert power.critical(discordant, alpha) == (min(significant) if significant else None)
    for discordant in (power.EXACT_UP_TO + 1, 1000):  # the float branch agrees where ties cannot happen
        k = power.critical(discordant, 0.05)
        assert mcnemar_p(k, discordant - k) <= 0.05 < mcnemar_p(k - 1, discordant - k + 1)


def test_edges():
    assert power.power(0, 0.0, 0.0, 0.05) == 0.0  # no examples: the test never rejects
    assert power.power(40, 0.0, 0.0, 0.05) == 0.0  # nothing flips
    # every flip one way (q = d): the power is P(D >= 5), 5 flips being the fewest significant at 0.05
    assert power.power(43, 0.2, 0.2, 0.05) == pytest.approx(
        sum(math.comb(43, k) * 0.2**k * 0.8 ** (43 - k) for k in range(5, 44)), rel=1e-9
    )
    # alpha tiny: 30 one-way flips are the fewest significant (2**-30 < 1e-9 < 2**-29)
    assert (power.critical(29, 1e-9), power.critical(30, 1e-9)) == (None, 30)
    assert power.power(43, 0.2, 0.2, 1e-9) < 1e-9
    assert power.power(43, 0.0, 0.3, 0.05) <= 0.05 + 1e-12  # no real drop: the test's own false alarms
    with pytest.raises(ValueError, match="drop <= discordance"):
        power.power(43, 0.3, 0.2, 0.05)


def test_the_smallest_detectable_drop_and_the_examples_needed(monkeypatch):
    drop = power.detectable_drop(43, 0.0, 0.05)
    assert drop is not None and 0.14 < drop < 0.17
    assert power.power_at(43, drop, 0.0, 0.05) >= power.TARGET > power.power_at(43, drop - 0.002, 0.0, 0.05)
    assert power.detectable_drop(4, 0.0, 0.05) is None  # 4 flips can never reach p <= 0.05
    assert power.detectable_drop(43, 0.2, 0.05) > drop  # churn hides drops
    needed = power.paired_needed(0.10, 0.1, 0.05)
    assert needed is not None
    assert power.power_at(needed, 0.10, 0.1, 0.05) >= power.TARGET > power.power_at(needed - 1, 0.10, 0.1, 0.05)
    monkeypatch.setattr(power, "MAX_EXAMPLES", needed - 1)
    assert power.paired_needed(0.10, 0.1, 0.05) is None  # more than MAX_EXAMPLES


def test_flaky_examples_leave_the_test_and_raise_the_size_needed():
    compared = Paired(
        "pass_rate", 50, [f"p{i}" for i in range(6)], ["f0", "f1"], {f"k{i}": (0.5, 1.0) for i in range(10)}
    )
    figure = power.of_comparison(compared, 0.6, 0.05, 0.10)
    assert (figure.answered, figure.examples, figure.flaky_share) == (50, 40, 0.2)
    assert figure.churn == pytest.approx(0.1)  # 2 fail->pass of 40, mirrored
    assert figure.examples_needed == math.ceil(power.paired_needed(0.10, 0.1, 0.05) / 0.8)
    assert figure.detectable_drop == power.detectable_drop(40, 0.1, 0.05)


def results(flaky: int, passing: int, failing: int) -> list[Result]:
    rows = [(f"k{i}", [True, False]) for i in range(flaky)]
    rows += [(f"p{i}", [True, True]) for i in range(passing)] + [(f"f{i}", [False, False]) for i in range(failing)]
    return [
        Result.from_json({"id": example, "repeat": r, "target": "p", "version": "v", "output": "o", "passed": v})
        for example, verdicts in rows
        for r, v in enumerate(verdicts)
    ]


def test_one_side_alone_takes_the_flaky_share_as_churn():
    figure = power.of_results(results(flaky=5, passing=20, failing=25), PASS_RATE, 0.05, 0.10)
    assert (figure.answered, figure.examples, figure.churn, figure.flaky_share) == (50, 45, 0.1, 0.1)
    assert figure.pass_rate == pytest.approx(22.5 / 50)
    assert "5 of 50" in figure.churn_source


def test_the_report_states_the_drop_it_detects_in_one_line():
    figure = power.plan(43, 0, 0.4, 0.0, "assumed", 0.05, 0.10)
    assert power_line(figure) == "This golden set detects drops ≥ 16 pts (80% power, α = 0.05)."
    section = "\n".join(power_section(figure))
    assert section.startswith("### Power\n\nThis golden set detects drops ≥ 16 pts")
    assert "to detect a drop of 10 pts (`gate.detect`) with 80% power: about 66 golden examples (23 more" in section
    blind = power.plan(4, 0, 0.5, 0.0, "assumed", 0.05, 0.10)
    assert power_line(blind).startswith("This golden set detects no pass-rate drop (80% power, α = 0.05)")


def test_gate_plan_prints_the_figure_and_names_bad_input(project: Path, capsys):  # project: the cwd
    (project / "eval" / "results.jsonl").write_text(dumps(results(flaky=0, passing=17, failing=26)))
    assert cli(["gate", "plan"]) == 0
    assert "This golden set detects drops ≥ 16 pts" in capsys.readouterr().out
    assert cli(["gate", "plan", "--churn", "0.2"]) == 0  # a stated churn: drops hide in it
    out = capsys.readouterr().out
    assert "churn: 0.200" in out and "assumed: --churn" in out and "detects drops ≥ 27 pts" in out
    assert cli(["gate", "plan", "--churn", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == (
        "{{ cookiecutter.project }} gate: error: --churn: must be a number from 0 to 1 (1 excluded), got '1.5'"
    )
    assert cli(["gate", "plan", "--results", "eval/missing.jsonl"]) == 2
    assert (
        capsys.readouterr().err.strip().endswith("cannot read (No such file or directory); run `make evaluate` first")
    )
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("  detect: 0.10", "  detect: 1.5"))
    assert cli(["gate", "plan"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "gate.detect" in error and "between 0 and 1" in error
