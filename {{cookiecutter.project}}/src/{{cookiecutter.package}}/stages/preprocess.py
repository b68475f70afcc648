"""Stage `preprocess`: golden set + data/raw/*.jsonl -> one validated, normalised, deduplicated
eval set, and a manifest holding its sha256 (the data hash the registry records as lineage)."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import unicodedata
from collections.abc import Sequence
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


def preprocess(sources: Sequence[Path]) -> tuple[list[Example], list[str]]:
    """Validate and merge the sources (golden first). Returns the examples and notes on what was
    dropped. The same id twice across sources is an error; the same target+input twice is dropped."""
    examples: list[Example] = []
    notes: list[str] = []
    seen_ids: dict[str, Path] = {}
    seen_inputs: dict[str, str] = {}
    for source in sources:
        for example in map(normalise, load(source)):
            if example.id in seen_ids:
                raise GoldenSetError(f"{source}: id: {example.id!r} already defined in {seen_ids[example.id]}")
            seen_ids[example.id] = source
            fingerprint = json.dumps([example.target, example.input], sort_keys=True)
            if fingerprint in seen_inputs:
                notes.append(f"{source}: {example.id}: same target and input as {seen_inputs[fingerprint]}, dropped")
                continue
            seen_inputs[fingerprint] = example.id
            examples.append(example)
    return examples, notes


def write(examples: Sequence[Example], out: Path, manifest: Path, sources: Sequence[Path]) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(e.to_json(), ensure_ascii=False, sort_keys=True) + "\n" for e in examples)
    out.write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    manifest.write_text(
        json.dumps({"examples": len(examples), "sha256": digest, "sources": [str(s) for s in sources]}, indent=2) + "\n"
    )
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
    examples, notes = preprocess(sources)
    for note in notes:
        print(note)
    digest = write(examples, args.out, args.manifest, sources)
    print(f"{len(examples)} examples -> {args.out} (sha256 {digest[:12]})")
    return 0
