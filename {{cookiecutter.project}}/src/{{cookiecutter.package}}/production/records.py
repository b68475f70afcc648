"""What production leaves behind: capture files, one JSON object per line, and how to read them back.

The service (`capture.fraction` > 0) appends to `capture.dir`; `drift` and `harvest` read the files,
wherever they were copied to. Each line is one of three kinds, all carrying `schema` (this format's
version), `at` (UTC, ISO 8601) and `request_id` (the `X-Request-Id` the caller got):

    answer    a sampled request and what the service did with it: `target` (`flow:<name>` or a prompt
              id, as golden examples name it), `route`, `status`, `request` and `reply` (every text
              redacted as LOG_CONTENT logs it; `reply` is null when the model failed), `category`
              and `fallback` (the flow's reply category and whether it is the app's catch-all),
              `fields` (the flow's loggable fields), `version` (id, alias, prompt_version, prompts,
              model), `provider` (who answered: the response's model and system_fingerprint),
              `latency_ms`, `model_ms`, `tokens_in`, `tokens_out`, `error` (a model failure's kind),
              `mirror_of` (on a canary: the version that mirrored this request to it, else null)
    feedback  a user's rating of an answer: `rating` (up | down), `correction` (optional: what the
              answer should have been, redacted), `comment` (optional, redacted)
    shadow    how a mirrored request compared on the other version: `outcome` (agree | disagree |
              error | same_version) and `shadow_version`

Feedback and shadow lines join their answer by `request_id`; they may sit in other files (another
pod, a later hour) and a feedback may arrive for an answer that was not sampled.

Reading is lenient where the writer can fail: a process killed mid-write leaves a torn last line,
and a future writer may add fields or kinds. Such lines are skipped and counted (`Captures.skipped`,
the first named by file and line), never fatal: one bad line must not hide a week of production.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import strict_json
from ..errors import UserError

SCHEMA = 1
KINDS = ("answer", "feedback", "shadow")
RATINGS = ("up", "down")
SHADOW_OUTCOMES = ("agree", "disagree", "error", "same_version")


@dataclass
class Answer:
    """An `answer` line, with the feedback and shadow lines that name its request id."""

    data: dict[str, Any]
    source: str  # file:line, for messages
    feedback: list[dict[str, Any]] = field(default_factory=list)
    shadow: list[dict[str, Any]] = field(default_factory=list)

    @property
    def request_id(self) -> str:
        return str(self.data["request_id"])

    @property
    def target(self) -> str:
        return str(self.data["target"])

    @property
    def request(self) -> Any:
        return self.data.get("request")

    @property
    def reply(self) -> Any:
        return self.data.get("reply")

    @property
    def ok(self) -> bool:
        return self.data.get("status") == 200 and self.reply is not None

    @property
    def rating(self) -> str | None:
        """The last rating users gave this answer, if any."""
        return str(self.feedback[-1]["rating"]) if self.feedback else None

    @property
    def disagreed(self) -> bool:
        """Another version decided differently on this request (shadow traffic)."""
        return any(s.get("outcome") == "disagree" for s in self.shadow)


@dataclass
class Captures:
    """Every answer read, joined with its feedback and shadow lines."""

    answers: list[Answer] = field(default_factory=list)
    orphan_feedback: list[dict[str, Any]] = field(default_factory=list)  # for answers that were not sampled
    files: int = 0
    skipped: int = 0
    first_skipped: str = ""  # "file:line: why" of the first skipped line

    @property
    def feedback(self) -> list[dict[str, Any]]:
        """Every rating, of sampled answers and of the others."""
        return [f for a in self.answers for f in a.feedback] + self.orphan_feedback

    def note(self) -> str:
        """One line on what was read (and skipped)."""
        text = f"{len(self.answers)} answers, {len(self.feedback)} ratings from {self.files} file(s)"
        if self.skipped:
            text += f"; {self.skipped} unreadable line(s) skipped (first: {self.first_skipped})"
        return text


def capture_files(paths: Iterable[Path]) -> list[Path]:
    """The *.jsonl files named or under the directories named, sorted; a UserError for a path that
    does not exist (a typo must not read as "no traffic")."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.jsonl") if p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path}: no such file or directory (expected capture files or a directory of them)")
    return sorted(set(found))


def load(paths: Iterable[Path]) -> Captures:
    """Read every capture file under `paths` and join feedback and shadow lines to their answers."""
    captures = Captures()
    answers: dict[str, Answer] = {}
    pending: list[tuple[str, dict[str, Any]]] = []
    for path in capture_files(paths):
        captures.files += 1
        for where, line in _lines(path):
            record, problem = parse_line(line)
            if record is None:
                captures.skipped += 1
                captures.first_skipped = captures.first_skipped or f"{where}: {problem}"
                continue
            if record["kind"] == "answer":
                # The same request captured twice (a retried write, a copied file): the last wins.
                answers[record["request_id"]] = Answer(record, where)
            else:
                pending.append((record["kind"], record))
    for kind, record in pending:
        answer = answers.get(record["request_id"])
        if answer is not None:
            (answer.feedback if kind == "feedback" else answer.shadow).append(record)
        elif kind == "feedback":
            captures.orphan_feedback.append(record)
    for answer in answers.values():
        answer.feedback.sort(key=lambda f: str(f.get("at", "")))
    captures.answers = sorted(answers.values(), key=lambda a: (str(a.data.get("at", "")), a.request_id))
    return captures


def _lines(path: Path) -> Iterator[tuple[str, str]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if raw.strip():
                yield f"{path}:{number}", raw.decode("utf-8", errors="replace")


def parse_line(line: str) -> tuple[dict[str, Any] | None, str]:
    """(the record, "") or (None, why it is skipped)."""
    try:
        data = strict_json.loads(line)
    except ValueError:
        return None, "not JSON (a torn write?)"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    if data.get("kind") not in KINDS:
        return None, f"unknown kind {str(data.get('kind'))[:40]!r}"
    if not isinstance(data.get("request_id"), str) or not data["request_id"]:
        return None, "no request_id"
    problem = _problem(data)
    return (None, problem) if problem else (data, "")


def _problem(data: Mapping[str, Any]) -> str:
    kind = data["kind"]
    if kind == "answer":
        if not isinstance(data.get("target"), str) or not isinstance(data.get("request"), dict):
            return "an answer needs `target` (text) and `request` (an object)"
        if not isinstance(data.get("status"), int):
            return "an answer needs an integer `status`"
    elif kind == "feedback" and data.get("rating") not in RATINGS:
        return f"a feedback's `rating` must be one of {', '.join(RATINGS)}"
    elif kind == "shadow" and data.get("outcome") not in SHADOW_OUTCOMES:
        return f"a shadow line's `outcome` must be one of {', '.join(SHADOW_OUTCOMES)}"
    return ""


def dumps(record: Mapping[str, Any]) -> str:
    """One record as one line (the writer's form: compact, UTF-8 kept, no NaN)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
