"""How far a judge agrees with people beyond chance: Cohen's kappa, its 95% interval, the confusion table.

The interval is the analytic large-sample one: kappa +- 1.96 standard errors, with the standard
error of Fleiss, Cohen & Everitt (1969), "Large sample standard errors of kappa and weighted kappa"
(Psychological Bulletin 72(5)), which holds without assuming kappa is 0. The tests check the kappa
against scikit-learn's `cohen_kappa_score` and the standard error against a bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

Z95 = 1.959964  # the 97.5th percentile of the standard normal


@dataclass(frozen=True)
class Agreement:
    """Human labels vs judge verdicts on the same answers (pass/fail, or a pairwise preference)."""

    n: int
    agreement: float  # share of answers where both say the same
    kappa: float | None  # None: undefined (chance agreement is 1: one side gave a single label throughout)
    se: float | None
    ci_low: float | None
    ci_high: float | None
    confusion: dict[str, int]  # "human pass / judge pass" etc. -> count

    def as_json(self) -> dict[str, object]:
        return {
            "n": self.n, "agreement": round(self.agreement, 6), "kappa": _round(self.kappa),
            "ci_low": _round(self.ci_low), "ci_high": _round(self.ci_high), "confusion": self.confusion,
        }  # fmt: skip


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _word(label: Hashable) -> str:
    return ("pass" if label else "fail") if isinstance(label, bool) else str(label)


def cohen_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> Agreement:
    """Agreement of (human, judge) label pairs, at least one: pass/fail verdicts (True/False), or
    any labels (a pairwise preference: "first", "second", "tie")."""
    n = len(pairs)
    if not n:
        raise ValueError("no labelled answers to compare")
    seen = {label for pair in pairs for label in pair}
    # Verdicts: pass then fail, both always in the table; other labels in their text's order.
    labels: list[Hashable] = [True, False] if all(isinstance(c, bool) for c in seen) else sorted(seen, key=str)
    cells = {(h, j): sum(1 for pair in pairs if pair == (h, j)) / n for h in labels for j in labels}
    human = {c: sum(cells[(c, j)] for j in labels) for c in labels}
    judge = {c: sum(cells[(h, c)] for h in labels) for c in labels}
    observed = sum(cells[(c, c)] for c in labels)
    chance = sum(human[c] * judge[c] for c in labels)
    confusion = {f"human {_word(h)} / judge {_word(j)}": round(cells[(h, j)] * n) for h, j in cells}
    if chance >= 1 - 1e-12:
        return Agreement(n, observed, None, None, None, None, confusion)
    kappa = (observed - chance) / (1 - chance)
    # Fleiss, Cohen & Everitt (1969), eq. 13: the large-sample variance of kappa.
    a = sum(cells[(c, c)] * (1 - (human[c] + judge[c]) * (1 - kappa)) ** 2 for c in labels)
    b = (1 - kappa) ** 2 * sum(cells[(i, j)] * (judge[i] + human[j]) ** 2 for i, j in cells if i != j)
    c = (kappa - chance * (1 - kappa)) ** 2
    se = math.sqrt(max(a + b - c, 0.0) / (n * (1 - chance) ** 2))
    low, high = max(-1.0, kappa - Z95 * se), min(1.0, kappa + Z95 * se)
    return Agreement(n, observed, kappa, se, low, high, confusion)
