"""A rubric's verdict on one answer, from an LLM judge: the judge's prompt, its strict reading, and
the rubric version that calibration and gating key on.

The judge's prompt is the framework's, not the project's: the rubric (what a good answer does, in
the project's words) is filled into it with the example's input and the answer, and the judge must
answer the JSON schema `VERDICT_SCHEMA`. Its reply is read strictly: anything but exactly that
object (invalid JSON, a refusal, a field missing or of the wrong type) is a judge *error*, counted in
`judge_error_rate`; it is never a pass and never the answer's failure.

Rubric version = hash of (rubric, judge prompt, judge model): change any of them and the old
calibration no longer applies, so the new verdicts are reported until calibrated again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import strict_json
from ..app.client import Completion, ModelError

SYSTEM = (
    "You are a strict evaluator. Judge the answer below against the rubric, and nothing else. "
    'Reply with one JSON object: {"pass": true or false, "score": a number from 0 to 1, '
    '"reason": one short sentence}.'
)
USER = "Rubric:\n{rubric}\n\nInput:\n{input}\n\nAnswer:\n{answer}"
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["pass", "score", "reason"],
    "properties": {
        "pass": {"type": "boolean"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
    },
}
CHECKS = "the LLM judge's verdict on the example's rubric (`judge:` in the golden line or the prompt file)"

# (messages, schema) -> completion: the judge's chat, through the response cache in an evaluation.
Chat = Callable[[Sequence[Mapping[str, str]], Mapping[str, Any] | None], Completion]


class JudgeAnswerError(ValueError):
    """A judge reply that is not a verdict."""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    score: float
    reason: str


def messages(rubric: str, inputs: Mapping[str, Any], answer: str) -> list[dict[str, str]]:
    shown = json.dumps(dict(inputs), ensure_ascii=False, indent=1, sort_keys=True)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER.format(rubric=rubric.strip(), input=shown, answer=answer)},
    ]


def parse_verdict(text: str) -> Verdict:
    """The judge's reply as a Verdict; JudgeAnswerError unless it is exactly the schema's object."""
    try:
        data = strict_json.loads(text)
    except ValueError:
        raise JudgeAnswerError(f"not JSON: {_prefix(text)}") from None
    if not isinstance(data, dict) or set(data) != {"pass", "score", "reason"}:
        raise JudgeAnswerError(f"not a verdict object with pass, score and reason: {_prefix(text)}")
    passed, score, reason = data["pass"], data["score"], data["reason"]
    if not isinstance(passed, bool):
        raise JudgeAnswerError("`pass` is not true or false")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise JudgeAnswerError("`score` is not a number from 0 to 1")
    if not isinstance(reason, str):
        raise JudgeAnswerError("`reason` is not text")
    return Verdict(passed, float(score), reason)


def is_verdict(text: str) -> bool:
    """Whether a judge reply is a verdict (a reply that is not is an error: never cached)."""
    try:
        parse_verdict(text)
    except JudgeAnswerError:
        return False
    return True


def _prefix(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def rubric_version(rubric: str, model: str) -> str:
    """12 hex of the rubric, the judge's prompt and schema, and the judge model."""
    canonical = json.dumps([rubric.strip(), SYSTEM, USER, VERDICT_SCHEMA, model], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Assessment:
    """One answer judged: the verdict, or the error that stands for it."""

    version: str  # the rubric version
    gating: bool  # whether the verdict counts towards the answer's pass (the version is calibrated)
    verdict: Verdict | None
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0

    def record(self) -> dict[str, Any]:
        """What a result carries of it (the verdict itself goes in its scores as `judge`)."""
        return {
            "rubric": self.version, "gating": self.gating, "error": self.error,
            "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
        }  # fmt: skip


@dataclass(frozen=True)
class Judge:
    """What a run judges with: the judge model, each prompt's rubric, the calibrated rubric versions."""

    model: str
    prompt_rubrics: Mapping[str, str]
    calibrated: frozenset[str] = frozenset()

    def rubric(self, example: Any) -> str | None:
        """The example's own `judge` rubric, else its prompt's; None: not judged."""
        own = example.expectations.get("judge")
        if isinstance(own, str):
            return own
        return self.prompt_rubrics.get(example.prompt) if example.prompt else None

    def assess(self, chat: Chat, rubric: str, inputs: Mapping[str, Any], answer: str) -> Assessment:
        """The judge's verdict on `answer`; a transport or reading failure is an error, never a verdict.
        Anything else `chat` raises (a cache miss in a replay) propagates."""
        version = rubric_version(rubric, self.model)
        gating = version in self.calibrated
        try:
            completion = chat(messages(rubric, inputs, answer), VERDICT_SCHEMA)
        except ModelError as exc:
            return Assessment(version, gating, None, f"judge {exc}")
        tokens = (completion.tokens_in, completion.tokens_out)
        try:
            return Assessment(version, gating, parse_verdict(completion.text), None, *tokens)
        except JudgeAnswerError as exc:
            return Assessment(version, gating, None, f"judge answer: {exc}", *tokens)
