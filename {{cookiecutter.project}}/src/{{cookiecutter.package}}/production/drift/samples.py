"""What each side shows of a target: the reference (the eval set and main's results of it) and the
current (captured answers), as lengths, categories and refusals."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ... import strict_json
from ...app.contract import App, Flow
from ...evaluation import golden
from ...evaluation.results import Result
from .. import records


@dataclass
class Sample:
    """What one side (reference or current) shows of one target."""

    requests: list[int] = field(default_factory=list)  # characters of each request's texts
    replies: list[int] = field(default_factory=list)  # characters of each reply's texts
    categories: list[str] = field(default_factory=list)
    refusals: list[bool] = field(default_factory=list)  # per reply
    answers: int = 0  # current side: captured answers (failed ones too)


def texts(value: Any) -> Iterator[str]:
    """Every string leaf of a JSON value (object keys are structure, not content)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)


def reply_value(target: str, reply: Any) -> Any:
    """What a reply says: a flow's reply body; a prompt route's `output` (not its id and version)."""
    if not target.startswith("flow:") and isinstance(reply, Mapping) and "output" in reply:
        return reply["output"]
    return reply


def result_value(output: str) -> Any:
    """A results.jsonl output as the service would have sent it: the JSON it holds, else the text."""
    try:
        parsed = strict_json.loads(output)
    except ValueError:
        return output
    return parsed if isinstance(parsed, dict | list) else output


def category_of(flow: Flow, reply: Any) -> str | None:
    """`Flow.category` of a reply (or of an example's `expected`), None where it does not apply."""
    if flow.category is None or not isinstance(reply, Mapping):
        return None
    try:
        category = flow.category(reply)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None
    return category if isinstance(category, str) else None


def accepts(flow: Flow) -> Callable[[Any], bool]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(flow.request)
    return validator.is_valid


def reference_samples(
    examples: Sequence[golden.Example],
    results: Sequence[Result],
    app: App,
    refusal: re.Pattern[str],
    redact: Callable[[str], str],
) -> dict[str, Sample]:
    """target -> what the eval set (and main's results of it) say production should look like."""
    samples: dict[str, Sample] = {}

    def chars(value: Any) -> int:
        return sum(len(redact(text)) for text in texts(value))

    for example in examples:
        samples.setdefault(example.target, Sample()).requests.append(chars(example.input))
    for name, flow in app.flows.items():
        sample = samples.setdefault(f"flow:{name}", Sample())
        valid = accepts(flow)
        for example in examples:
            if example.flow is None and valid(example.input):
                sample.requests.append(chars(example.input))
            if example.flow == name or (example.flow is None and valid(example.input)):
                category = category_of(flow, example.expectations.get("expected"))
                if category is not None:
                    sample.categories.append(category)
    for result in results:
        if result.output is None or result.repeat:
            continue  # one reply per example: repeats of one example are not independent draws
        said = [redact(text) for text in texts(result_value(result.output))]
        sample = samples.setdefault(result.target, Sample())
        sample.replies.append(sum(map(len, said)))
        sample.refusals.append(any(refusal.search(text) for text in said))
    return samples


def current_samples(answers: Sequence[records.Answer], app: App, refusal: re.Pattern[str]) -> dict[str, Sample]:
    """target -> what the captured answers show (their texts were redacted when captured)."""
    samples: dict[str, Sample] = {}
    for answer in answers:
        sample = samples.setdefault(answer.target, Sample())
        sample.answers += 1
        sample.requests.append(sum(map(len, texts(answer.request))))
        if not answer.ok:
            continue
        said = list(texts(reply_value(answer.target, answer.reply)))
        sample.replies.append(sum(map(len, said)))
        sample.refusals.append(any(refusal.search(text) for text in said))
        category = answer.data.get("category")
        flow = app.flows.get(answer.target.removeprefix("flow:")) if answer.target.startswith("flow:") else None
        if not isinstance(category, str) and flow is not None:
            category = category_of(flow, answer.reply)
        if isinstance(category, str):
            sample.categories.append(category)
    return samples


def providers_of(value: Any) -> set[str]:
    """The providers a record names: results' and captures' `"model fingerprint=fp; ..."` text, or an
    object with `model` and `system_fingerprint` (or `fingerprint`)."""
    if isinstance(value, str):
        return {p.strip() for p in value.split(";") if p.strip()}
    if isinstance(value, Mapping):
        model = str(value.get("model") or "")
        fingerprint = str(value.get("system_fingerprint") or value.get("fingerprint") or "")
        text = f"{model} fingerprint={fingerprint}" if fingerprint else model
        return {text} if text else set()
    if isinstance(value, list):
        return set().union(*map(providers_of, value)) if value else set()
    return set()
