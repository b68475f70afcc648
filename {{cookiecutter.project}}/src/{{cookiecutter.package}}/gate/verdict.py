"""The gate's verdict: a pure function of its inputs (`inputs.GateInputs`) and the approval.

The bars are the base's (`inputs.policy`), whatever the head's params.yaml says:
- changes to the bars or the golden set that would let worse versions through fail unless
  approved (policy.py);
- required metrics (`gate.required`) present and numeric on the head (checked when loading);
- absolute thresholds (`thresholds.min/max`) on the head;
- per-metric tolerances (`gate.tolerance`), in the direction the metric catalogue gives (latency,
  cost, tokens and errors up are worse; rates down are worse). Rates that a per-call verdict
  exists for (pass_rate, tag and scorer rates) are then judged by the paired comparison with the
  base's results - see `paired.py` for how significance and tolerance combine.
Metrics missing on the base (first run) pass with a note; without results on the base the
tolerances alone decide, also with a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import settings as settings_mod
from ..evaluation.catalogue import HIGHER, LOWER
from ..evaluation.metrics import is_number, missed_thresholds
from . import paired, policy, power
from .inputs import GateInputError, GateInputs, check_head

APPROVAL_LABEL = "gate-policy-approved"


@dataclass
class Verdict:
    metric: str
    old: float | None
    new: float | None
    status: str  # "regression" | "warn" | "ok" | "new" | "info"
    why: str = ""


@dataclass
class GateResult:
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    paired: dict[str, paired.Paired] = field(default_factory=dict)
    changes: policy.PolicyChanges = field(default_factory=policy.PolicyChanges)
    approved: bool = False
    power: power.Power | None = None  # what the paired test can detect on this golden set

    @property
    def failed(self) -> bool:
        return any(v.status == "regression" for v in self.verdicts)

    @property
    def status(self) -> str:
        if self.failed:
            return "failed"
        return "warn" if any(v.status == "warn" for v in self.verdicts) else "passed"


def pairs(inputs: GateInputs, gate: settings_mod.GateSettings) -> dict[str, paired.Paired] | None:
    """The paired comparison of every rate the gate judges (None: no results on the base)."""
    if inputs.base_results is None:
        return None
    metrics = paired.paired_metrics(["pass_rate", *gate.tolerance], inputs.catalogue)
    return {m.name: paired.compare(inputs.base_results, inputs.head_results, m) for m in metrics}


def reach(inputs: GateInputs, result: GateResult, gate: settings_mod.GateSettings) -> power.Power | None:
    """The paired test's power on pass_rate: from this comparison, else from the head's results alone."""
    metric = inputs.catalogue.get("pass_rate")
    if metric is None or metric.verdict is None:
        return None
    compared = result.paired.get("pass_rate")
    if compared is None:
        return power.of_results(inputs.head_results, metric, gate.alpha, gate.detect)
    rate = inputs.head_metrics.get("pass_rate")
    return power.of_comparison(compared, rate if is_number(rate) else 0.0, gate.alpha, gate.detect)


def judge(inputs: GateInputs, approved: bool = False) -> GateResult:
    """The policy changes, a verdict per metric, then the absolute thresholds; regressions fail."""
    gate, thresholds = inputs.policy.gate, inputs.policy.thresholds
    if not inputs.diff:
        raise GateInputError(
            "`dvc metrics diff` returned nothing although the metrics file is declared: is it committed and "
            "listed under `metrics:` in dvc.yaml?"
        )
    check_head(inputs.head_metrics, gate.required, "the head's metrics")
    changes = policy.compare(inputs.policy, inputs.head_policy or inputs.policy, inputs.base_golden, inputs.golden)
    result = GateResult(notes=list(inputs.notes), paired=pairs(inputs, gate) or {}, changes=changes, approved=approved)
    result.power = reach(inputs, result, gate)
    if changes.need_approval:
        what = [f"{len(changes.loosened)} loosened bar(s)"] if changes.loosened else []
        what += [f"{len(changes.removed)} golden example(s) removed"] if changes.removed else []
        what += [f"{len(changes.edited)} edited"] if changes.edited else []
        if approved:
            result.verdicts.append(Verdict("policy", None, None, "warn", f"{', '.join(what)}: approved"))
        else:
            why = f"{', '.join(what)}: needs the {APPROVAL_LABEL} label (see Policy changes)"
            result.verdicts.append(Verdict("policy", None, None, "regression", why))
    for name, entry in sorted(inputs.diff.items()):
        metric = inputs.catalogue.get(name)
        if metric is not None and metric.interval_of is not None:
            continue  # interval bounds move with the rate; the rate is judged, the bounds would double-count
        old, new = entry.get("old"), entry.get("new")
        if new is None:
            if name in gate.required:
                raise GateInputError(f"required metric {name!r} is null on the head side")
            result.verdicts.append(Verdict(name, old, None, "info", "no value on the head"))
            continue
        if old is None:
            result.verdicts.append(Verdict(name, None, new, "new", "no value on the base (first run): passes"))
            continue
        tolerance = gate.tolerance.get(name)
        if tolerance is None:
            result.verdicts.append(Verdict(name, old, new, "info"))
            continue
        if metric is None or metric.better not in (HIGHER, LOWER):
            result.verdicts.append(Verdict(name, old, new, "info", "not a judged metric (eval/catalogue.json)"))
            continue
        worse_by = (new - old) if metric.better == LOWER else (old - new)
        if name in result.paired:
            status, why = paired.decide(worse_by, tolerance, result.paired[name], gate.alpha, gate.max_drop)
        elif worse_by > tolerance:
            direction = "up" if metric.better == LOWER else "down"
            status, why = "regression", f"{direction} {abs(new - old):.4g} (tolerance {tolerance:g})"
        else:
            status, why = "ok", f"within tolerance {tolerance:g}"
        result.verdicts.append(Verdict(name, old, new, status, why))
    for miss in missed_thresholds(inputs.head_metrics, thresholds.min, thresholds.max):
        side = "below" if miss.bound == "min" else "above"
        old = inputs.diff.get(miss.name, {}).get("old")
        result.verdicts.append(
            Verdict(miss.name, old, miss.value, "regression", f"{side} the absolute threshold {miss.bar:g}")
        )
    return result
