"""The capture sink: the service's sampled answers, users' feedback and shadow outcomes, redacted, to
JSON Lines files (the format is production/records.py's).

On (`capture.fraction` > 0, `CAPTURE_FRACTION` wins; `CAPTURE_DIR` wins over `capture.dir`), the
service hands each record to `Capture`, which redacts every text of it (each string leaf of the
request, the reply, a correction or a comment, and of their keys, and each number that reads as a
card or a phone number, through the logs' Redactor and its LOG_HASH_KEY: the same value hashes the
same in logs and captures) and queues it. Headers are never recorded, so neither is the caller's
`Authorization`; a key typed into a message is redacted like any other.

The event loop never touches the disk. A writer thread takes the records off a bounded queue
(`capture.max_queue`) and appends them in batches, one write(2) per batch. A record that finds the
queue full is dropped and counted, never waited for; a failing disk (full, EIO) loses the batch it
failed on, counted too, and the service answers as if nothing happened. Every record ends in
`llm_capture_records_total{kind, outcome}` as `written`, `dropped` or `failed`.

Files: one per process and period, `<dir>/<yyyy-mm-dd>/capture-<host>-<pid>-<start>-<n>.jsonl.open`
while written, renamed to `.jsonl` when closed: after `capture.rotate_s`, past
`capture.rotate_bytes`, at midnight UTC, after a write error, and at shutdown. Whoever ships or
reads `*.jsonl` (`records.load`, the shipping sidecar) therefore sees complete files only. A process
killed mid-write leaves a `.jsonl.open` file with maybe a torn last line: the next process on the
same host closes it when it starts (readers skip a torn line).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import queue
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError, clip
from ..serving.observability import Metrics, Redactor, share
from ..settings import CaptureSettings
from . import records

OPEN_SUFFIX = ".jsonl.open"
MAX_BATCH_BYTES = 1 << 20  # one write(2) holds at most this much (a burst is written in several)
log = logging.getLogger(f"{__package__}.capture")
Clock = Callable[[], float]
Write = Callable[[int, bytes], int]  # os.write; tests pass one that waits, to play a hung disk


@dataclass(frozen=True)
class Config:
    """What the sink does: capture.* with the environment's overrides, checked."""

    fraction: float
    dir: Path
    max_queue: int
    rotate_s: float
    rotate_bytes: int

    @classmethod
    def resolve(cls, settings: CaptureSettings, env: Mapping[str, str]) -> Config:
        """capture.* with CAPTURE_FRACTION / CAPTURE_DIR over them; a UserError in one line when bad."""
        fraction = share(env, "CAPTURE_FRACTION", settings.fraction)
        directory = env.get("CAPTURE_DIR", settings.dir).strip()
        if not directory:
            raise UserError("CAPTURE_DIR: expected a directory for the capture files, got an empty value")
        return cls(fraction, Path(directory), settings.max_queue, settings.rotate_s, settings.rotate_bytes)


def redacted(value: Any, redactor: Redactor) -> Any:
    """`value` with every text redacted and its structure kept (what LOG_CONTENT would show of it)."""
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, dict):
        return {redactor(str(k)): redacted(v, redactor) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v, redactor) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
        hidden = redactor(text)
        return value if hidden == text else hidden  # a card or phone number sent as a JSON number
    return value


def providers(completions: Iterable[Any]) -> str:
    """Who answered (each call's `Completion.provider`, distinct, sorted): evaluation.runner.providers'
    rule, here so that the service does not import the evaluation."""
    return "; ".join(sorted({c.provider for c in completions if c.provider}))


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Capture:
    """What the service records: `sampled()` decides, `answer` / `feedback` / `shadow` queue a record
    (never block, never raise), `close()` writes what is queued and closes the file."""

    def __init__(
        self,
        config: Config,
        redactor: Redactor,
        metrics: Metrics,
        rand: Callable[[], float] = random.random,
        clock: Clock = time.time,
        host: str | None = None,
        write: Write = os.write,
    ) -> None:
        self.config = config
        self.redactor = redactor
        self.metrics = metrics
        self._rand = rand
        for kind in records.KINDS:  # every series exists from the start: rate() sees the first drop
            for outcome in ("written", "dropped", "failed"):
                metrics.capture.labels(kind=kind, outcome=outcome)
        self.writer = Writer(config, metrics, clock, host or socket.gethostname(), write)

    @classmethod
    def from_settings(
        cls, settings: CaptureSettings, env: Mapping[str, str], redactor: Redactor, metrics: Metrics, **kw: Any
    ) -> Capture | None:
        """The sink the settings and env ask for; None when capture is off (fraction 0). The directory
        must be writable at start: a capture that cannot write is a clear error, not a silent loss."""
        config = Config.resolve(settings, env)
        if config.fraction <= 0:
            return None
        try:
            config.dir.mkdir(parents=True, exist_ok=True)
            writable = os.access(config.dir, os.W_OK | os.X_OK)
        except OSError as exc:
            raise UserError(f"capture dir {clip(str(config.dir), 120)}: cannot create it ({exc.strerror})") from None
        if not writable:
            raise UserError(
                f"capture dir {clip(str(config.dir), 120)}: not writable by this process (set CAPTURE_DIR or capture.dir)"
            )
        return cls(config, redactor, metrics, **kw)

    def sampled(self) -> bool:
        """Whether to record this answer (probability `fraction`)."""
        return self._rand() < self.config.fraction

    def answer(self, data: Mapping[str, Any]) -> bool:
        """Queue an `answer` line. `data` holds its fields as records.py names them, `request` and
        `reply` as served (they are redacted here)."""
        record = {"schema": records.SCHEMA, "kind": "answer", "at": now_iso(), **data}
        record["request"] = redacted(data.get("request"), self.redactor)
        record["reply"] = redacted(data.get("reply"), self.redactor)
        return self._put("answer", record)

    def feedback(self, request_id: str, rating: str, correction: Any = None, comment: str | None = None) -> bool:
        """Queue a `feedback` line; False when it was dropped (the queue is full)."""
        record: dict[str, Any] = {"schema": records.SCHEMA, "kind": "feedback", "at": now_iso(),
                                  "request_id": request_id, "rating": rating}  # fmt: skip
        if correction is not None:
            record["correction"] = redacted(correction, self.redactor)
        if comment is not None:
            record["comment"] = self.redactor(comment)
        return self._put("feedback", record)

    def shadow(self, request_id: str, outcome: str, shadow_version: str) -> None:
        """Queue a `shadow` line: how the mirror of a captured answer compared."""
        record = {"schema": records.SCHEMA, "kind": "shadow", "at": now_iso(), "request_id": request_id,
                  "outcome": outcome, "shadow_version": shadow_version}  # fmt: skip
        self._put("shadow", record)

    def _put(self, kind: str, record: Mapping[str, Any]) -> bool:
        try:
            line = records.dumps(record).encode("utf-8", errors="backslashreplace")
        except (TypeError, ValueError):  # not JSON (NaN, an object the app put in its reply)
            log.warning("capture_unwritable_record", extra={"fields": {"kind": kind}})
            self.metrics.capture.labels(kind=kind, outcome="failed").inc()
            return False
        return self.writer.put(kind, line)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, close the file (-> .jsonl); waits at most `timeout_s` for the disk."""
        self.writer.close(timeout_s)


_STOP = ("", b"")
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
_OPEN_HERE: set[Path] = set()  # files this process's writers hold open (several sinks share a process in tests)
_OPEN_LOCK = threading.Lock()


class Writer:
    """The thread that owns the capture files: batches off a bounded queue, one write(2) each."""

    idle_s = 1.0  # with nothing to write, it looks at least this often whether the open file is due

    def __init__(self, config: Config, metrics: Metrics, clock: Clock, host: str, write: Write = os.write) -> None:
        self.config = config
        self.metrics = metrics
        self._clock = clock
        self._write_fd = write
        self.host = _UNSAFE.sub("-", host)[:63] or "host"
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=config.max_queue)
        self._stopping = threading.Event()
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._day = ""
        self._size = 0
        self._files = 0
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    def put(self, kind: str, line: bytes) -> bool:
        """Queue one line; never waits: a full queue (or a closed sink) drops it, counted."""
        if not self._stopping.is_set():
            try:
                self._queue.put_nowait((kind, line))
                return True
            except queue.Full:
                pass
        self.metrics.capture.labels(kind=kind, outcome="dropped").inc()
        return False

    def close(self, timeout_s: float) -> None:
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)  # wakes the thread at once (else it wakes within a second)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("capture_close_timed_out", extra={"fields": {"queued": self._queue.qsize()}})

    # ------------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        self._recover()
        while True:
            batch = self._take()
            if batch:
                self._write(batch)
            if self._fd is not None and self._due():
                self._close_file()
            if self._stopping.is_set() and self._queue.empty():
                self._close_file()
                return

    def _take(self) -> list[tuple[str, bytes]]:
        """The next records (waiting at most until the open file is due, or `idle_s`)."""
        wait = self.idle_s
        if self._fd is not None:
            wait = max(0.0, min(wait, self._opened_at + self.config.rotate_s - self._clock()))
        try:
            first = self._queue.get(timeout=wait)
        except queue.Empty:
            return []
        batch = [first]
        size = len(first[1])
        while size < MAX_BATCH_BYTES:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
            size += len(item[1])
        return [item for item in batch if item is not _STOP]

    def _write(self, batch: list[tuple[str, bytes]]) -> None:
        try:
            if self._fd is not None and self._day != _day(self._clock()):
                self._close_file()
            if self._fd is None:
                self._open_file()
            assert self._fd is not None
            data = b"".join(line for _, line in batch)
            written = 0
            while written < len(data):  # a regular file takes it all at once unless the disk is failing
                written += self._write_fd(self._fd, data[written:])
            self._size += written
        except OSError as exc:
            self._count(batch, "failed")
            if not self._failing:
                log.warning("capture_write_failed", extra={"fields": {"error": exc.strerror or type(exc).__name__}})
            self._failing = True
            self._close_file()  # the next batch starts a new file: nothing is appended after a torn line
            return
        if self._failing:
            log.info("capture_write_recovered")
            self._failing = False
        self._count(batch, "written")

    def _count(self, batch: list[tuple[str, bytes]], outcome: str) -> None:
        counts: dict[str, int] = {}
        for kind, _ in batch:
            counts[kind] = counts.get(kind, 0) + 1
        for kind, n in counts.items():
            self.metrics.capture.labels(kind=kind, outcome=outcome).inc(n)

    def _due(self) -> bool:
        now = self._clock()
        return (
            now - self._opened_at >= self.config.rotate_s
            or self._size >= self.config.rotate_bytes
            or _day(now) != self._day
        )

    def _open_file(self) -> None:
        now = self._clock()
        self._day = _day(now)
        start = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        folder = self.config.dir / self._day
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"capture-{self.host}-{os.getpid()}-{start}-{self._files}{OPEN_SUFFIX}"
        self._files += 1
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o640)
        self._path, self._opened_at, self._size = path, now, 0
        with _OPEN_LOCK:
            _OPEN_HERE.add(path)

    def _close_file(self) -> None:
        fd, path = self._fd, self._path
        self._fd = self._path = None
        if fd is None or path is None:
            return
        with contextlib.suppress(OSError):
            os.fsync(fd)  # the content is on disk before the name says the file is complete
        os.close(fd)
        try:
            os.replace(path, _closed(path))
        except OSError as exc:
            log.warning("capture_close_failed", extra={"fields": {"error": exc.strerror or type(exc).__name__}})
        with _OPEN_LOCK:
            _OPEN_HERE.discard(path)

    def _recover(self) -> None:
        """Close the files an earlier process of this host left open (killed before it could). A
        container restarted in its pod often has the pid of the one before (1): a file of this pid
        that no writer here holds is such a leftover."""
        try:
            name = re.compile(rf"capture-{re.escape(self.host)}-([0-9]+)-[0-9]{{8}}T[0-9]{{6}}Z-[0-9]+\.jsonl\.open")
            for path in self.config.dir.glob(f"*/capture-{self.host}-*{OPEN_SUFFIX}"):
                found = name.fullmatch(path.name)
                with _OPEN_LOCK:
                    ours = path in _OPEN_HERE
                if found and not ours and (int(found[1]) == os.getpid() or not _alive(int(found[1]))):
                    os.replace(path, _closed(path))
        except OSError as exc:
            log.warning("capture_recover_failed", extra={"fields": {"error": exc.strerror or type(exc).__name__}})


def _day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def _closed(path: Path) -> Path:
    return path.with_name(path.name[: -len(OPEN_SUFFIX)] + ".jsonl")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
