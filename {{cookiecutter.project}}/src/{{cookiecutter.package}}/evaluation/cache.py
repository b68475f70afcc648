"""Response cache on disk: append-only JSON Lines segments, one per process that writes.

Key = sha256 of the canonical JSON of everything that decides the answer: endpoint kind, model,
rendered messages, sampling parameters and the repeat index. Errors are never cached, so a re-run
retries exactly what failed; an interrupted run resumes from what it had already written.

Layout: `<root>/<segment>.jsonl`, one `{"key": ..., "value": {...}}` line per successful call. A
process appends to its own segment with a single write(2) per entry, as soon as the answer is in.
Why not a file per entry: that is four system calls (open, write, close, rename) in the worker
threads, each one lets the GIL go, and with 16 workers getting it back cost ~70 ms of a 0.9 s
evaluation (benchmarks/bench_eval.py). Reading is one pass over the segments, the first time a key
is asked for; later lines win. A crash can leave a torn last line: it is skipped (a miss, so the
call is made again). When segments pile up, the reader merges them into one.

Shared (`eval.cache_url`, any fsspec URL, e.g. a prefix of the DVC remote's bucket): before its
calls a run downloads the segments it lacks (by name and size), after them it uploads its own new
segment under a name no other writer uses (host, pid, time): shards and runs never write one
object, and a prompt change re-asks only what it changed, whichever shard or machine asks.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .. import objectstore
from ..errors import UserError, clip

SUFFIX = ".jsonl"
MAX_SEGMENTS = 32  # more than this and the next reader merges them


def cache_key(**parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    def __init__(self, root: Path | str, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self._entries: dict[str, dict[str, Any]] | None = None
        self._fd: int | None = None
        self.segment: Path | None = None  # this process's own segment, once it wrote one
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._load())

    def get(self, key: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        return self._load().get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps({"key": key, "value": value}, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            if self._fd is None:
                with self._lock:
                    if self._fd is None:
                        self.root.mkdir(parents=True, exist_ok=True)
                        self.segment = self.root / f"{time.time_ns()}-{os.getpid()}{SUFFIX}"
                        self._fd = os.open(self.segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            # One write of one whole line, O_APPEND: concurrent threads never interleave their lines.
            os.write(self._fd, line.encode())
        except OSError as exc:
            raise UserError(f"eval.cache_dir: cannot write {self.root} ({exc.strerror})") from None
        if self._entries is not None:
            self._entries[key] = value

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            segments = sorted(self.root.glob(f"*{SUFFIX}")) if self.enabled else []
            self._entries = dict(_read(segments))
            if len(segments) > MAX_SEGMENTS:
                _merge(self.root, segments, self._entries)
        return self._entries


def _merge(root: Path, segments: list[Path], entries: dict[str, dict[str, Any]]) -> None:
    # Written beside the others, then swapped in: a reader sees the old segments or the new one.
    # (A process still appending to a merged segment loses those entries: they are only misses.)
    merged = root / f"{time.time_ns()}-{os.getpid()}-merged{SUFFIX}"
    tmp = merged.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"key": k, "value": v}, ensure_ascii=False) + "\n" for k, v in entries.items()))
    os.replace(tmp, merged)
    for segment in segments:
        segment.unlink(missing_ok=True)


def _read(segments: list[Path]):
    for segment in segments:
        try:
            # A line torn by a crash may end in half a character: that line is a miss, not the file.
            text = segment.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            continue  # merged away by another process meanwhile: its entries are in the new segment
        for line in text.split("\n"):  # not splitlines(): an answer may hold U+2028, valid in JSON
            try:
                entry = json.loads(line)
                key, value = entry["key"], entry["value"]
            except (ValueError, KeyError, TypeError):
                continue  # a torn line from a crash: a miss, the call is made again
            if isinstance(key, str) and isinstance(value, dict):
                yield key, value


def pull(url: str, root: Path) -> int:
    """Download the shared cache's segments that `root` lacks (by name and size); how many. A URL
    that cannot be listed is a UserError, before any model call."""
    fs, base = objectstore.open_url(url, needs="fsspec (a dependency of dvc-s3): pip install -e .")
    try:
        # Only the files at the top: other things may live below the URL (shard files, say).
        listing = fs.ls(base, detail=True) if fs.exists(base) else []
        remote = {e["name"]: int(e["size"]) for e in listing if e["type"] == "file" and e["name"].endswith(SUFFIX)}
    except Exception as exc:  # each fsspec backend raises its own types (botocore's, aiohttp's)
        raise UserError(f"eval.cache_url: cannot list {clip(url, 80)} ({clip(str(exc), 160)})") from None
    got = 0
    for path, size in sorted(remote.items()):
        local = root / str(path).rsplit("/", 1)[-1]
        if local.is_file() and local.stat().st_size == size:
            continue
        objectstore.get(fs, path, local)
        got += 1
    return got


def push(url: str, segment: Path | None) -> str | None:
    """Upload this process's own segment under a name no other writer uses, and take that name
    here too (so the next `pull` does not download it back); its name."""
    if segment is None or not segment.is_file() or not segment.stat().st_size:
        return None
    fs, base = objectstore.open_url(url, needs="fsspec (a dependency of dvc-s3): pip install -e .")
    name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}{SUFFIX}"
    try:
        objectstore.put(fs, segment, f"{base}/{name}")
    except Exception as exc:  # as in pull
        raise UserError(f"eval.cache_url: cannot upload to {clip(url, 80)} ({clip(str(exc), 160)})") from None
    segment.replace(segment.with_name(name))
    return name
