"""What a change does to the gate's own policy: its bars (`thresholds`, `gate`), the judge rubrics
that count, and its golden set.

A pull request is judged by the bars of its base, never by its own: a change to them takes effect
once merged. Some changes would let worse versions through later - a lower minimum, a higher
maximum, a wider tolerance, a smaller `alpha`, a bigger `max_drop`, a required metric dropped, a
calibrated judge rubric that stops counting, the pairwise judge switched off, a golden example removed or its expectation edited -
and those fail the gate unless the change is approved (the `gate-policy-approved` label in CI, see
the README). Adding examples and tightening bars never need approval.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..settings import Policy


@dataclass(frozen=True)
class BarChange:
    name: str  # e.g. thresholds.min.pass_rate, gate.alpha
    old: Any  # None: the bar is new
    new: Any  # None: the bar is gone
    loosened: bool

    def __str__(self) -> str:
        show = lambda v: "none" if v is None else json.dumps(v)  # noqa: E731
        return f"{self.name}: {show(self.old)} → {show(self.new)} ({'loosened' if self.loosened else 'tightened'})"


@dataclass(frozen=True)
class PolicyChanges:
    bars: list[BarChange] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # golden example ids gone from the head
    edited: list[str] = field(default_factory=list)  # ids whose input or expectation changed
    added: list[str] = field(default_factory=list)

    @property
    def loosened(self) -> list[BarChange]:
        return [b for b in self.bars if b.loosened]

    @property
    def need_approval(self) -> bool:
        return bool(self.loosened or self.removed or self.edited)

    def __bool__(self) -> bool:
        return bool(self.bars or self.removed or self.edited or self.added)


def _bound(kind: str, name: str, old: float | None, new: float | None, higher_is_looser: bool) -> BarChange | None:
    if old == new:
        return None
    if new is None:
        return BarChange(f"{kind}.{name}", old, None, True)  # a bar removed lets anything through
    if old is None:
        return BarChange(f"{kind}.{name}", None, new, False)
    return BarChange(f"{kind}.{name}", old, new, (new > old) == higher_is_looser)


def _bars(kind: str, old: Mapping[str, float], new: Mapping[str, float], higher_is_looser: bool) -> list[BarChange]:
    changes = (_bound(kind, n, old.get(n), new.get(n), higher_is_looser) for n in sorted(set(old) | set(new)))
    return [c for c in changes if c is not None]


def bar_changes(base: Policy, head: Policy) -> list[BarChange]:
    """Every bar the head moves, and which way: looser lets more versions through."""
    changes = _bars("thresholds.min", base.thresholds.min, head.thresholds.min, higher_is_looser=False)
    changes += _bars("thresholds.max", base.thresholds.max, head.thresholds.max, higher_is_looser=True)
    changes += _bars("gate.tolerance", base.gate.tolerance, head.gate.tolerance, higher_is_looser=True)
    # A regression fails when p <= alpha: a smaller alpha lets more through; a bigger max_drop too.
    for name, higher_is_looser in (("alpha", False), ("max_drop", True)):
        change = _bound("gate", name, getattr(base.gate, name), getattr(head.gate, name), higher_is_looser)
        changes += [change] if change else []
    old, new = set(base.gate.required), set(head.gate.required)
    changes += [BarChange(f"gate.required.{n}", "required", None, True) for n in sorted(old - new)]
    changes += [BarChange(f"gate.required.{n}", None, "required", False) for n in sorted(new - old)]
    # A judge rubric's verdicts fail answers only while its version is calibrated (kappa >=
    # judge.min_kappa) and the judge is on. The head's evaluation used the head's calibration: a
    # version that stops counting there - min_kappa raised, the file edited, the judge turned off,
    # the rubric reworded - passes answers the base's judge failed.
    counted, counts = base.judge_gating, head.judge_gating
    changes += [BarChange(f"judge.rubric.{v}", "counts", None, True) for v in sorted(counted - counts)]
    changes += [BarChange(f"judge.rubric.{v}", None, "counts", False) for v in sorted(counts - counted)]
    # The gate's pairwise judge (judge.pairwise) runs on the head's settings: switching it off is a bar removed.
    compared, compares = (p.judge.enabled and p.judge.pairwise for p in (base, head))
    if compared != compares:
        changes.append(BarChange("judge.pairwise", compared, compares, loosened=compared))
    return changes


def golden_changes(base: Mapping[str, Mapping[str, Any]], head: Mapping[str, Mapping[str, Any]]) -> dict[str, list]:
    """Golden example ids removed, edited (anything but their tags) and added by the head."""

    def content(example: Mapping[str, Any]) -> str:
        return json.dumps({k: v for k, v in example.items() if k != "tags"}, sort_keys=True)

    shared = sorted(base.keys() & head.keys())
    return {
        "removed": sorted(base.keys() - head.keys()),
        "edited": [i for i in shared if content(base[i]) != content(head[i])],
        "added": sorted(head.keys() - base.keys()),
    }


def compare(
    base: Policy,
    head: Policy,
    base_golden: Mapping[str, Mapping[str, Any]] | None,
    head_golden: Mapping[str, Mapping[str, Any]],
) -> PolicyChanges:
    golden = golden_changes(base_golden, head_golden) if base_golden is not None else {}
    return PolicyChanges(bar_changes(base, head), **golden)
