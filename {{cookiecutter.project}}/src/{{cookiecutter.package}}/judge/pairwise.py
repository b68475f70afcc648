"""Pairwise judging for the gate: the base's and the head's answers to one example, side by side.

LLM judges favour a position (often the first answer shown). So each pair is judged twice, the
answers swapped the second time, and a side wins only when both orders pick it; any disagreement is
a tie. A judge that always prefers position A then produces only ties: its bias cancels instead of
deciding. Over the examples whose answers differ, the head's losses against its wins (ties left
out) go to a one-sided sign test (the exact binomial tail of paired.py's McNemar test): the head is
worse when it loses significantly more often than a fair coin would.

The rubric version of a pairwise rubric hashes this module's prompt, not the pointwise one: it is
calibrated on labels that prefer an answer (calibration.py). Until it is, the counts and the test
are reported and never fail the gate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import strict_json
from ..app.client import ModelError
from .rubric import Chat

SYSTEM = (
    "You are a strict evaluator. Two answers to the same input follow; compare them against the rubric "
    'and nothing else. Reply with one JSON object: {"better": "A", "B" or "tie", "reason": one short sentence}.'
)
USER = "Rubric:\n{rubric}\n\nInput:\n{input}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}"
PREFERENCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["better", "reason"],
    "properties": {"better": {"enum": ["A", "B", "tie"]}, "reason": {"type": "string"}},
}
FIRST, SECOND, TIE = "first", "second", "tie"  # which of two answers the judge (or a person) prefers


def messages(rubric: str, inputs: Mapping[str, Any], a: str, b: str) -> list[dict[str, str]]:
    shown = json.dumps(dict(inputs), ensure_ascii=False, indent=1, sort_keys=True)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER.format(rubric=rubric.strip(), input=shown, a=a, b=b)},
    ]


def parse_preference(text: str) -> str | None:
    """ "A", "B" or "tie" from a judge reply; None when it is not exactly the schema's object."""
    try:
        data = strict_json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) != {"better", "reason"} or not isinstance(data["reason"], str):
        return None
    return data["better"] if data["better"] in ("A", "B", "tie") else None


def is_preference(text: str) -> bool:
    return parse_preference(text) is not None


def pairwise_version(rubric: str, model: str) -> str:
    """12 hex of the rubric, the pairwise prompt and schema, and the judge model."""
    canonical = json.dumps([rubric.strip(), SYSTEM, USER, PREFERENCE_SCHEMA, model], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def prefer(chat: Chat, rubric: str, inputs: Mapping[str, Any], first: str, second: str) -> str:
    """FIRST, SECOND or TIE: asked twice, positions swapped; a side wins only when both orders pick
    it. A ModelError or a reply that is not a preference raises ValueError (a judge error)."""
    picks = []
    for a, b in ((first, second), (second, first)):
        try:
            text = chat(messages(rubric, inputs, a, b), PREFERENCE_SCHEMA).text
        except ModelError as exc:
            raise ValueError(f"judge {exc}") from None
        pick = parse_preference(text)
        if pick is None:
            raise ValueError("judge answer: not a preference object with better and reason")
        picks.append(pick)
    if picks == ["A", "B"]:
        return FIRST
    if picks == ["B", "A"]:
        return SECOND
    return TIE


@dataclass(frozen=True)
class Pair:
    """One example the base and the head answered differently."""

    id: str
    rubric: str
    input: Mapping[str, Any]
    base: str
    head: str


@dataclass
class Comparison:
    """The head against the base over the pairs, per example id."""

    gating: bool
    head_wins: list[str] = field(default_factory=list)
    base_wins: list[str] = field(default_factory=list)
    ties: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)

    def p_value(self) -> float:
        """One-sided sign test: P(the base wins at least this often | no difference), ties left out."""
        from ..gate.paired import mcnemar_p

        return mcnemar_p(len(self.base_wins), len(self.head_wins))


def compare(pairs: Sequence[Pair], model: str, chat: Chat, calibrated: frozenset[str]) -> Comparison:
    """Every pair judged both ways. It gates only when every rubric it used is calibrated."""
    versions = {pairwise_version(p.rubric, model) for p in pairs}
    found = Comparison(bool(versions) and versions <= calibrated, versions=versions)
    for pair in pairs:
        try:
            winner = prefer(chat, pair.rubric, pair.input, pair.base, pair.head)
        except ValueError:
            found.errors.append(pair.id)
            continue
        {FIRST: found.base_wins, SECOND: found.head_wins, TIE: found.ties}[winner].append(pair.id)
    return found


def decide(found: Comparison, alpha: float) -> tuple[str, str]:
    """The gate's status for the comparison and why: a regression only when calibrated and significant."""
    wins, losses = len(found.head_wins), len(found.base_wins)
    counts = f"head wins {wins}, base wins {losses}, ties {len(found.ties)}, judge errors {len(found.errors)}"
    p = found.p_value()
    if not found.versions:
        return "ok", "no example with a rubric was answered differently: nothing to compare"
    if not found.gating:
        return "info", f"{counts}; sign test p = {p:.3g}; reported only: not calibrated"
    if p <= alpha and losses > wins:
        return "regression", f"{counts}; the head loses: sign test p = {p:.3g} ≤ α={alpha:g}"
    return "ok", f"{counts}; sign test p = {p:.3g}"


def lines(found: Comparison, alpha: float) -> list[str]:
    """The gate report's section."""
    _, why = decide(found, alpha)
    out = [
        "### Pairwise judge (base vs head, each pair judged twice with the answers swapped)",
        "",
        f"Examples whose answers differ: {len(found.head_wins) + len(found.base_wins) + len(found.ties) + len(found.errors)}. "
        f"A side wins only when both orders prefer it. {why}.",
        "",
    ]
    if found.base_wins:
        out += ["Base preferred: " + ", ".join(f"`{i}`" for i in found.base_wins[:25]), ""]
    return out
