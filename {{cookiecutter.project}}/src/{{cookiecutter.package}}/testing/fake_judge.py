"""A deterministic LLM judge for the fake model server (`FakeModel(rubric_judge())`): standard library
only, loadable by path as fake_model.py is.

It reads the judge's prompt (judge/rubric.py: rubric, input, answer) and answers a verdict by a
rule, never by guessing:

    rubric_judge()        pass when the answer contains every text the rubric quotes ("..."); asked
                          to compare two answers (judge/pairwise.py), it prefers the one that
                          passes, a tie when both or neither do
    rubric_judge(flip=texts) the same, but wrong on answers containing any of `flip` (a judge that
                             disagrees with people there)
    rubric_judge(biased=True) compares by always preferring answer A, whatever they say (position bias)
    bad_judge("json")     a reply that is not JSON
    bad_judge("schema")   JSON, but not the verdict object
    bad_judge("refusal")  content null and a `refusal`, as OpenAI sends one
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only types: the template's tests load this file by path, without its package
    from .fake_model import Answerer, Request

_SECTIONS = re.compile(r"Rubric:\n(?P<rubric>.*?)\n\nInput:\n.*?\n\nAnswer:\n(?P<answer>.*)\Z", re.S)
_PAIR = re.compile(r"Rubric:\n(?P<rubric>.*?)\n\nInput:\n.*?\n\nAnswer A:\n(?P<a>.*)\n\nAnswer B:\n(?P<b>.*)\Z", re.S)
REFUSAL = None  # an answerer's None: FakeModel replies with content null and a refusal


def judged(request: Request) -> tuple[str, str]:
    """The rubric and the answer in a judge request."""
    match = _SECTIONS.search(request.content)
    if match is None:
        raise ValueError("not a judge request")
    return match["rubric"], match["answer"]


def verdict(rubric: str, answer: str) -> bool:
    """The rule: every text the rubric quotes is in the answer (case-insensitive)."""
    return all(q.casefold() in answer.casefold() for q in re.findall(r'"([^"]+)"', rubric))


def rubric_judge(flip: Iterable[str] = (), *, biased: bool = False) -> Answerer:
    flips = tuple(flip)

    def passes(rubric: str, text: str) -> bool:
        return verdict(rubric, text) != any(f in text for f in flips)

    def answer(request: Request) -> str:
        pair = _PAIR.search(request.content)
        if pair is not None:
            a, b = passes(pair["rubric"], pair["a"]), passes(pair["rubric"], pair["b"])
            better = "A" if biased or (a and not b) else "B" if b and not a else "tie"
            return json.dumps({"better": better, "reason": "rule"})
        rubric, text = judged(request)
        passed = passes(rubric, text)
        return json.dumps({"pass": passed, "score": 1.0 if passed else 0.0, "reason": "rule"})

    return answer


def bad_judge(kind: str) -> Answerer:
    def answer(request: Request) -> str | None:
        if kind == "json":
            return '{"pass": true, "score": 1'
        if kind == "schema":
            return json.dumps({"pass": "yes", "score": 2, "reason": "sure"})
        if kind == "refusal":
            return REFUSAL
        raise ValueError(kind)

    return answer
