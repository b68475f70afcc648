"""One evaluated call as a typed value, and its JSON Lines form (`eval/results.jsonl`) in one place.

The evaluate stage writes these lines; the metrics, the report, the plots and the gate (reading the
base's file through git) read them back with `parse`, which names the file and line of a bad one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import UserError


class ResultsError(UserError):
    """An unreadable results file (the message names the file and the line)."""


@dataclass
class Result:
    id: str
    repeat: int
    target: str  # the prompt id, or `flow:<name>` for an end-to-end example
    version: str  # the prompt's content hash; for a flow, a hash of the versions of its prompts
    output: str | None  # the raw answer (a flow's reply as JSON); None when the call errored
    passed: bool | None  # None when the call errored: an error is not a failure
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # scorer -> {passed, value, detail}
    latency_ms: float | None = None  # model time of the call (a flow: of all its calls)
    tokens_in: int = 0
    tokens_out: int = 0
    error: str | None = None
    cached: bool = False
    tags: list[str] = field(default_factory=list)
    provider: str = ""  # who answered: the response's model and system_fingerprint (app/client.Completion)
    # The LLM judge's call, when the example was judged (judge/rubric.Assessment.record): its rubric
    # version, whether it gates, its error and tokens. The verdict itself is `scores["judge"]`.
    judge: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        # A shallow dict, not dataclasses.asdict: asdict deep-copies every score (~1 ms a result).
        # No `judge` key when there is no judge: a project without one writes what it always wrote.
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "judge" or self.judge is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def verdict(self, scorer: str) -> bool | None:
        """This call's verdict from one scorer; None when it errored or the scorer did not apply."""
        if self.passed is None:
            return None
        score = self.scores.get(scorer)
        return bool(score["passed"]) if isinstance(score, dict) else None


def dumps(results: Iterable[Result]) -> str:
    """JSON Lines, one result per line, in the order given."""
    return "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in results)


def parse(text: str, source: str) -> list[Result]:
    """results.jsonl -> Results; each line needs a string `id`, an integer `repeat` and `passed`
    (true, false or null). A bad line is a ResultsError naming `source` and the line number."""
    results = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may be in an output
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ResultsError(f"{source}:{number}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise ResultsError(f"{source}:{number}: expected an object with a string `id`")
        repeat = data.setdefault("repeat", 0)
        if not isinstance(repeat, int) or isinstance(repeat, bool) or data.get("passed") not in (True, False, None):
            raise ResultsError(f"{source}:{number}: `repeat` must be an integer and `passed` true/false/null")
        if not isinstance(data.get("scores", {}), dict) or not isinstance(data.get("tags", []), list):
            raise ResultsError(f"{source}:{number}: `scores` must be an object and `tags` a list")
        if not isinstance(data.get("judge", {}), dict | None):
            raise ResultsError(f"{source}:{number}: `judge` must be an object or null")
        # Files written before flows existed name the prompt (`prompt`, `prompt_version`).
        data.setdefault("target", data.get("prompt", ""))
        data.setdefault("version", data.get("prompt_version", ""))
        data.setdefault("output", None)
        data.setdefault("passed", None)
        results.append(Result.from_json(data))
    return results
