"""Calibration: does the judge agree with people? Human labels in, agreement per rubric version out.

`eval/judge_labels.jsonl` holds answers people have labelled, one JSON object a line:

    {"prompt": "<id>" | "rubric": "<text>", "input": {...}, "output": "<the answer>", "label": "pass" | "fail"}

or, for the gate's pairwise mode (pairwise.py), two answers and the one the person prefers:

    {"prompt": "<id>" | "rubric": "<text>", "input": {...}, "outputs": ["<a>", "<b>"], "preferred": "first" | "second" | "tie"}

(`prompt` takes that prompt file's `judge` rubric; optional `id` and `note` are for people). The
judge answers each one as it would in an evaluation, through the same cache; `judge calibrate`
writes, per rubric version, the agreement, Cohen's kappa with its 95% interval and the confusion
table to `eval/judge_calibration.json` (committed, a dependency of `evaluate`). An evaluation then
lets a rubric version's verdicts count towards pass_rate only when its kappa reaches
`judge.min_kappa`; every other version's are reported only.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import strict_json
from ..errors import UserError, clip, key_path, read_text, schema_message
from .kappa import Agreement, cohen_kappa
from .pairwise import FIRST, SECOND, TIE, pairwise_version, prefer
from .rubric import Chat, Judge

TARGETS = [{"required": ["prompt"]}, {"required": ["rubric"]}]
KINDS = [{"required": ["output", "label"]}, {"required": ["outputs", "preferred"]}]
LABEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["input"],
    "allOf": [{"oneOf": TARGETS}, {"oneOf": KINDS}],
    "properties": {
        "id": {"type": "string"},
        "prompt": {"type": "string", "minLength": 1},
        "rubric": {"type": "string", "pattern": "\\S"},
        "input": {"type": "object"},
        "output": {"type": "string"},
        "label": {"enum": ["pass", "fail"]},
        # A pairwise label: two answers to the input, and which one the person prefers.
        "outputs": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
        "preferred": {"enum": [FIRST, SECOND, TIE]},
        "note": {"type": "string"},
    },
}


class CalibrationError(UserError):
    """Unusable labels or calibration file; the message names the file and line."""


@dataclass(frozen=True)
class Label:
    line: int
    rubric: str
    input: Mapping[str, Any]
    output: str
    passed: bool  # the person's verdict (a pointwise label)
    outputs: tuple[str, str] | None = None  # a pairwise label: two answers...
    preferred: str | None = None  # ...and the one the person prefers (FIRST, SECOND or TIE)


def parse_labels(text: str, source: str, prompt_rubrics: Mapping[str, str]) -> list[Label]:
    """Every label line, validated; CalibrationError listing every bad line (file:line: field: ...)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(LABEL_SCHEMA)
    labels, problems = [], []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            data = strict_json.loads(line)
        except ValueError as exc:
            problems.append(f"{where}: not valid JSON ({clip(str(exc), 80)})")
            continue
        errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            error = errors[0]
            if error.validator == "oneOf" and error.validator_value is TARGETS:
                problems.append(f"{where}: needs exactly one of `prompt` (its file's judge rubric) or `rubric`")
            elif error.validator == "oneOf":
                problems.append(f"{where}: needs `output` and `label`, or (pairwise) `outputs` and `preferred`")
            else:
                problems.append(f"{where}: {key_path(error.absolute_path) or '(line)'}: {schema_message(error)}")
            continue
        rubric = data.get("rubric") or prompt_rubrics.get(data.get("prompt", ""))
        if rubric is None:
            have = ", ".join(sorted(prompt_rubrics)) or "none"
            problems.append(
                f"{where}: prompt: no prompt file with a `judge` rubric named {data['prompt']!r} (have: {have})"
            )
            continue
        if "outputs" in data:
            first, second = data["outputs"]
            labels.append(Label(number, rubric, data["input"], "", False, (first, second), data["preferred"]))
        else:
            labels.append(Label(number, rubric, data["input"], data["output"], data["label"] == "pass"))
    if problems:
        raise CalibrationError(f"{len(problems)} problem(s) in {source}:\n" + "\n".join(problems))
    if not labels:
        raise CalibrationError(f"{source}: no labels: label some answers first (see the README's LLM judge)")
    return labels


@dataclass(frozen=True)
class RubricCalibration:
    version: str
    rubric: str
    agreement: Agreement | None  # None: the judge gave no usable verdict on any label
    judge_errors: int
    first_error: str | None = None

    def gates(self, min_kappa: float) -> bool:
        kappa = self.agreement.kappa if self.agreement is not None else None
        return kappa is not None and kappa >= min_kappa


def calibrate(labels: Sequence[Label], judge: Judge, chat: Chat) -> list[RubricCalibration]:
    """The judge's verdict on every label (a pairwise one: its preference, both orders asked),
    compared with the person's, per rubric version."""
    # rubric version -> (label, the person's, the judge's (None on an error), the judge's error)
    by_version: dict[str, list[tuple[Label, Hashable, Hashable, str | None]]] = {}
    for label in labels:
        said: Hashable = None
        human: Hashable
        error: str | None
        if label.outputs is not None:
            version, error, human = pairwise_version(label.rubric, judge.model), None, label.preferred
            try:
                said = prefer(chat, label.rubric, label.input, *label.outputs)
            except ValueError as exc:
                error = str(exc)
        else:
            assessment = judge.assess(chat, label.rubric, label.input, label.output)
            version, error, human = assessment.version, assessment.error, label.passed
            said = assessment.verdict.passed if assessment.verdict is not None else None
        by_version.setdefault(version, []).append((label, human, said, error))
    found = []
    for version, judged in by_version.items():
        pairs = [(human, said) for _, human, said, error in judged if error is None]
        errors = [error for *_, error in judged if error is not None]
        agreement = cohen_kappa(pairs) if pairs else None
        found.append(RubricCalibration(version, judged[0][0].rubric, agreement, len(errors), next(iter(errors), None)))
    return found


def dumps(found: Sequence[RubricCalibration], model: str, min_kappa: float) -> str:
    rubrics = {}
    for c in sorted(found, key=lambda c: c.version):
        rubrics[c.version] = {
            "rubric": clip(" ".join(c.rubric.split()), 120),
            **(c.agreement.as_json() if c.agreement is not None else {"n": 0, "kappa": None}),
            "judge_errors": c.judge_errors,
            "gates": c.gates(min_kappa),
        }
    return json.dumps({"judge_model": model, "min_kappa": min_kappa, "rubrics": rubrics}, indent=2) + "\n"


def calibrated(path: Path, min_kappa: float) -> frozenset[str]:
    """The rubric versions whose kappa in the calibration file reaches `min_kappa` (the current
    setting, not the one it was written with). No file: none."""
    if not path.exists():
        return frozenset()
    return calibrated_in(read_text(path, CalibrationError), min_kappa, str(path))


def calibrated_in(text: str, min_kappa: float, source: str) -> frozenset[str]:
    """`calibrated` of a calibration file's text (`source` names it in the error)."""
    try:
        rubrics = json.loads(text)["rubrics"]
        return frozenset(
            version
            for version, entry in rubrics.items()
            if isinstance(entry.get("kappa"), int | float) and entry["kappa"] >= min_kappa
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CalibrationError(f"{source}: not a judge calibration file: re-run `judge calibrate`") from None


def describe(found: Sequence[RubricCalibration], min_kappa: float) -> list[str]:
    """One paragraph per rubric version, for the terminal."""
    lines = []
    for c in found:
        a = c.agreement
        head = f"rubric {c.version} ({clip(' '.join(c.rubric.split()), 60)})"
        if a is None or a.kappa is None:
            why = "no usable verdict" if a is None else "kappa undefined: one side gave a single label throughout"
            lines.append(f"{head}: {why}; judge errors {c.judge_errors}: reported only, never gating")
            continue
        state = "gates" if c.gates(min_kappa) else f"reported only (kappa below judge.min_kappa {min_kappa:g})"
        lines.append(
            f"{head}: {a.n} labels, agreement {a.agreement:.3f}, kappa {a.kappa:.3f} "
            f"(95% CI {a.ci_low:.3f} to {a.ci_high:.3f}), judge errors {c.judge_errors}: {state}"
        )
        lines += [f"  {cell}: {count}" for cell, count in a.confusion.items()]
    return lines
