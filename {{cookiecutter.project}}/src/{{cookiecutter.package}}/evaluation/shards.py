"""Sharded evaluation: which shard an example is in, the shard file, and the checks of a merge.

`evaluate --shard I/N` answers only the examples whose id hashes to shard I (0-based, as
Kubernetes' JOB_COMPLETION_INDEX) and writes `shard-<I>-of-<N>.jsonl`: a header line saying what
the answers were made from, then its results in the order a single run writes them. `merge`
checks every shard against its own eval set, prompts and params, puts the results back in the
single run's order and writes the same files a single run would (stages/merge.py).

The partition hashes the id alone, so adding an example moves only that example, and a shard's
examples keep their answers (and cache entries) whatever else changes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError, quote
from .results import Result, ResultsError, dumps, parse

FORMAT = 1
PATTERN = "shard-*-of-*.jsonl"
_NAME = re.compile(r"shard-(\d+)-of-(\d+)\.jsonl")
# eval.* settings that do not change an answer: how many shards, where the caches are, how many
# calls at once. Everything else of app, model and eval must be the same in every shard.
NOT_ANSWERS = ("shards", "cache_url", "cache_dir", "concurrency")


class ShardError(UserError):
    """A shard that cannot be merged (the message names the file and, where it can, the line)."""


def shard_of(example_id: str, shards: int) -> int:
    """The shard of an example: a hash of its id alone (stable when other examples come and go)."""
    digest = hashlib.sha256(example_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def parse_spec(text: str) -> tuple[int, int]:
    """`I/N` -> (I, N) with 0 <= I < N; a UserError saying what is wrong otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise UserError(f"--shard: expected I/N (e.g. 0/4, 0-based), got {quote(text)}")
    index, count = int(match[1]), int(match[2])
    if count < 1:
        raise UserError(f"--shard: the number of shards must be at least 1, got {text.strip()}")
    if index >= count:
        raise UserError(f"--shard: the shard index is 0-based and must be below {count}, got {text.strip()}")
    return index, count


def file_name(index: int, count: int) -> str:
    return f"shard-{index}-of-{count}.jsonl"


@dataclass(frozen=True)
class Header:
    """What a shard's answers were made from; every shard of a merge must agree on all but `shard`."""

    shard: int
    shards: int
    eval_set_sha256: str
    prompt_versions: dict[str, str]
    settings_sha256: str
    format: int = FORMAT


def settings_hash(sections: Mapping[str, Any]) -> str:
    """sha256 of the settings that shape answers: `sections` (app, model, eval) less NOT_ANSWERS."""
    shaping = {name: asdict(section) for name, section in sections.items()}
    for name in NOT_ANSWERS:
        shaping.get("eval", {}).pop(name, None)
    canonical = json.dumps(shaping, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dumps_shard(header: Header, results: Sequence[Result]) -> str:
    return json.dumps(asdict(header), sort_keys=True) + "\n" + dumps(results)


def read(path: Path) -> tuple[Header, list[Result]]:
    """A shard file -> its header and results; a ShardError naming the file and line of a bad one."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    if not text.endswith("\n"):
        raise ShardError(f"{path}: does not end with a newline (torn: a copy or a write that stopped)")
    first, _, rest = text.partition("\n")
    try:
        data = json.loads(first)
        header = Header(**data)
    except (ValueError, TypeError) as exc:
        raise ShardError(f"{path}:1: not a shard header ({str(exc)[:120]})") from None
    if header.format != FORMAT:
        raise ShardError(f"{path}:1: shard format {header.format}, this version reads {FORMAT}")
    try:
        results = parse("\n" + rest, str(path))  # the blank first line keeps the line numbers right
    except ResultsError as exc:
        raise ShardError(str(exc)) from None
    return header, results


def collect(directory: Path, expected: Header, order: Sequence[tuple[str, int]]) -> list[Result]:
    """Every shard under `directory` checked against `expected` (shard/shards aside) and `order`
    (the single run's (id, repeat) tasks); their results in that order. A ShardError, naming the
    file, for a missing, duplicated, foreign, mismatched or torn shard or a missing result."""
    if not directory.is_dir():
        raise ShardError(f"{directory}: no such directory (where `evaluate --shard I/N --shard-dir` wrote)")
    found: dict[int, Path] = {}
    count: tuple[int, Path] | None = None
    for path in sorted(directory.rglob(PATTERN)):
        match = _NAME.fullmatch(path.name)
        if not match:
            continue
        index, shards = int(match[1]), int(match[2])
        if index >= shards:
            raise ShardError(f"{path}: not a shard's name (shard-I-of-N.jsonl, I from 0 to N - 1)")
        if count is not None and shards != count[0]:
            raise ShardError(f"{path}: a shard of {shards}, but {count[1]} is one of {count[0]} (a stale run?)")
        count = count or (shards, path)
        if index in found:
            raise ShardError(f"{path}: shard {index} of {shards} twice (also {found[index]})")
        found[index] = path
    if count is None:
        raise ShardError(f"{directory}: no shard files ({PATTERN})")
    shards = count[0]
    missing = [i for i in range(shards) if i not in found]
    if missing:
        names = ", ".join(file_name(i, shards) for i in missing[:5])
        raise ShardError(f"{directory}: {len(missing)} of {shards} shards missing ({names})")
    position = {task: i for i, task in enumerate(order)}
    placed: list[Result | None] = [None] * len(order)
    for index in range(shards):
        path = found[index]
        header, results = read(path)
        _check_header(path, header, expected, index, shards)
        for number, result in enumerate(results, 2):
            task = (result.id, result.repeat)
            where = position.get(task)
            if where is None:
                raise ShardError(f"{path}:{number}: {quote(result.id)} repeat {result.repeat} is not in the eval set")
            if shard_of(result.id, shards) != index:
                raise ShardError(f"{path}:{number}: {quote(result.id)} belongs to shard {shard_of(result.id, shards)}")
            if placed[where] is not None:
                raise ShardError(f"{path}:{number}: {quote(result.id)} repeat {result.repeat} twice")
            placed[where] = result
    absent = [order[i] for i, r in enumerate(placed) if r is None]
    if absent:
        example, repeat = absent[0]
        path = found[shard_of(example, shards)]
        raise ShardError(f"{path}: {len(absent)} result(s) missing, e.g. {quote(example)} repeat {repeat} (torn?)")
    return [r for r in placed if r is not None]


def _check_header(path: Path, header: Header, expected: Header, index: int, shards: int) -> None:
    if (header.shard, header.shards) != (index, shards):
        raise ShardError(f"{path}:1: the header says shard {header.shard} of {header.shards} (renamed?)")
    if header.eval_set_sha256 != expected.eval_set_sha256:
        raise ShardError(f"{path}:1: made from another eval set (sha256 {header.eval_set_sha256[:12]}…)")
    if header.prompt_versions != expected.prompt_versions:
        changed = sorted(
            k
            for k in header.prompt_versions.keys() | expected.prompt_versions.keys()
            if header.prompt_versions.get(k) != expected.prompt_versions.get(k)
        )
        raise ShardError(f"{path}:1: made with other prompts ({', '.join(changed[:5])} differ)")
    if header.settings_sha256 != expected.settings_sha256:
        raise ShardError(f"{path}:1: made with other params (app, model or eval settings differ)")
