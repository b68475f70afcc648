"""Stage `preprocess`: golden set + data/raw/*.jsonl -> one validated, normalised, deduplicated
eval set, and a manifest holding its sha256 (the data hash the registry records as lineage).

Lines of data/raw still marked `todo` are harvested candidates nobody has labelled yet
(production/harvest.py): they are kept aside, counted and named, and never scored. In the golden
set itself `todo` stays an error: what is in git is meant to be finished."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..evaluation.golden import Example, GoldenSetError, load


def normalise(example: Example) -> Example:
    """NFC-normalise and trim every text in the input so invisible differences do not split the cache."""
    return dataclasses.replace(example, input=_clean(dict(example.input)))


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value).strip()
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def fingerprint(target: str, input: Mapping[str, Any]) -> str:
    """What makes two examples the same question: the target and the normalised input."""
    return json.dumps([target, _clean(dict(input))], sort_keys=True)


@dataclass
class EvalSet:
    examples: list[Example] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was dropped, and why
    unlabelled: dict[Path, int] = field(default_factory=dict)  # raw file -> candidates still marked `todo`

    def waiting(self) -> list[str]:
        """One line per file holding candidates that await their labels."""
        return [f"{n} candidate(s) await labels in {path}" for path, n in self.unlabelled.items()]


def preprocess(sources: Sequence[Path]) -> EvalSet:
    """Validate and merge the sources (golden first; the others may hold unlabelled candidates). The
    same id twice across sources is an error; the same target+input twice is dropped."""
    result = EvalSet()
    seen_ids: dict[str, Path] = {}
    seen_inputs: dict[str, str] = {}
    for index, source in enumerate(sources):
        unlabelled: list[str] | None = [] if index else None
        for example in map(normalise, load(source, unlabelled)):
            if example.id in seen_ids:
                raise GoldenSetError(f"{source}: id: {example.id!r} already defined in {seen_ids[example.id]}")
            seen_ids[example.id] = source
            key = fingerprint(example.target, example.input)
            if key in seen_inputs:
                result.notes.append(f"{source}: {example.id}: same target and input as {seen_inputs[key]}, dropped")
                continue
            seen_inputs[key] = example.id
            result.examples.append(example)
        if unlabelled:
            result.unlabelled[source] = len(unlabelled)
    return result


def write(evalset: EvalSet, out: Path, manifest: Path, sources: Sequence[Path]) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    examples = evalset.examples
    text = "".join(json.dumps(e.to_json(), ensure_ascii=False, sort_keys=True) + "\n" for e in examples)
    out.write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    summary = {
        "examples": len(examples),
        "sha256": digest,
        "sources": [str(s) for s in sources],
        "unlabelled": sum(evalset.unlabelled.values()),
    }
    manifest.write_text(json.dumps(summary, indent=2) + "\n")
    return digest


def main(argv: list[str] | None = None, prog: str = "preprocess") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--golden", type=Path, required=True, help="eval/golden.jsonl")
    parser.add_argument("--raw", type=Path, required=True, help="directory of extra *.jsonl examples")
    parser.add_argument("--out", type=Path, required=True, help="data/processed/eval_set.jsonl")
    parser.add_argument("--manifest", type=Path, required=True, help="data/processed/manifest.json")
    args = parser.parse_args(argv)
    if not args.raw.is_dir():
        raise UserError(f"--raw {args.raw}: no such directory")
    sources = [args.golden, *sorted(args.raw.glob("*.jsonl"))]
    evalset = preprocess(sources)
    for note in evalset.notes + evalset.waiting():
        print(note)
    digest = write(evalset, args.out, args.manifest, sources)
    print(f"{len(evalset.examples)} examples -> {args.out} (sha256 {digest[:12]})")
    return 0
