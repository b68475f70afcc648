"""What the judge said in a run, per rubric version, and whether it gated: for report.md and the gate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..evaluation.results import Result

NOT_CALIBRATED = "reported only: not calibrated"


def state(gating: bool) -> str:
    """Whether a rubric version's verdicts count, in the reports' words."""
    return "gates (calibrated)" if gating else NOT_CALIBRATED


@dataclass(frozen=True)
class RubricSummary:
    version: str
    gating: bool
    judged: int  # answers the judge was asked about
    passed: int
    errors: int  # no usable verdict

    @property
    def state(self) -> str:
        return state(self.gating)


def summarise(results: Sequence[Result]) -> list[RubricSummary]:
    """One entry per rubric version seen in `results` (empty when nothing was judged)."""
    seen: dict[str, list[Result]] = {}
    for result in results:
        if result.judge is not None:
            seen.setdefault(str(result.judge.get("rubric", "")), []).append(result)
    found = []
    for version, judged in sorted(seen.items()):
        errors = sum(r.judge is not None and r.judge.get("error") is not None for r in judged)
        passed = sum(r.verdict("judge") is True for r in judged)
        gating = all(r.judge is not None and r.judge.get("gating") is True for r in judged)
        found.append(RubricSummary(version, gating, len(judged), passed, errors))
    return found


def lines(results: Sequence[Result], heading: str = "##") -> list[str]:
    """A Markdown section: per rubric version, its verdicts and whether they count towards pass_rate."""
    found = summarise(results)
    if not found:
        return []
    out = [
        f"{heading} LLM judge",
        "",
        "A rubric version's verdicts count towards pass_rate only once `judge calibrate` measured its "
        "agreement with people (Cohen's kappa >= judge.min_kappa); otherwise they are reported only.",
        "",
        "| rubric version | judged | judge pass | judge errors | verdicts |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    out += [f"| `{s.version}` | {s.judged} | {s.passed} | {s.errors} | {s.state} |" for s in found]
    return [*out, ""]
