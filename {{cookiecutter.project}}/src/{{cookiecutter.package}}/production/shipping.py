"""`<project> capture ship|fetch`: capture files between the service's volume and object storage.

    capture ship  --from captures --to s3://bucket/captures [--every 60]
    capture fetch --from s3://bucket/captures --to captures [--days 7]

The service writes `<dir>/<yyyy-mm-dd>/<file>.jsonl.open` and renames it to `.jsonl` once closed
(production/capture.py), so a closed file never changes again. `ship` uploads each closed file to
the same relative path under `--to`, checks the size that arrived, and only then deletes it here:
a crash between the two ships it again next time (the same object, overwritten with the same bytes),
never loses it. With `--every`, it runs until SIGTERM and makes one last pass on the way out: in
the cluster it is a native sidecar (k8s/rollout.yaml), stopped after the service has closed its
last file. `fetch` downloads what is not here yet (by name and size), optionally only the last
`--days` of date folders: what `retrain.yml` feeds to `drift` and `harvest`.

Any fsspec URL works: `s3://` through s3fs (the library dvc-s3 uses, with the same credentials:
the pod's role, or AWS_* / AWS_ENDPOINT_URL in the environment), a local path for tests and
shared volumes. Point `--to` at a prefix of the DVC remote's bucket, e.g. `s3://<bucket>/captures`:
no other store to run. Nothing here reads a record: files travel as they are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import objectstore
from ..errors import UserError, clip

log = logging.getLogger(f"{__package__}.shipping")
CLOSED = ".jsonl"  # the writer's open files end in `.jsonl.open`: never shipped


@dataclass(frozen=True)
class Shipped:
    files: int = 0
    bytes: int = 0
    failed: int = 0


def closed_files(root: Path) -> Iterator[Path]:
    """Closed capture files under `root`, oldest first (by path: date folders, then names)."""
    yield from sorted(p for p in root.rglob(f"*{CLOSED}") if p.is_file())


def _filesystem(url: str) -> tuple[Any, str]:
    return objectstore.open_url(url, needs="fsspec for capture ship/fetch: pip install -e '.[serve]'")


def ship(source: Path, url: str) -> Shipped:
    """Upload every closed file under `source` to `url`, deleting each once its size is checked there."""
    if not source.is_dir():
        return Shipped()
    fs, root = _filesystem(url)
    files = size = failed = 0
    for path in closed_files(source):
        relative = path.relative_to(source).as_posix()
        target = f"{root}/{relative}"
        length = path.stat().st_size
        try:
            arrived = objectstore.put(fs, path, target)
        except OSError as exc:  # network, permissions, a full disk there: keep the file, try next time
            failed += 1
            log.warning("capture_ship_failed", extra={"fields": {"file": relative, "error": clip(str(exc), 200)}})
            continue
        if arrived != length:
            failed += 1
            log.warning("capture_ship_size", extra={"fields": {"file": relative, "sent": length, "there": arrived}})
            continue
        path.unlink()
        files, size = files + 1, size + length
    return Shipped(files, size, failed)


def fetch(url: str, dest: Path, days: int | None = None, today: dt.date | None = None) -> Shipped:
    """Download closed files under `url` that `dest` lacks (same relative path and size)."""
    fs, root = _filesystem(url)
    if not fs.exists(root):
        raise UserError(f"{clip(url, 80)}: nothing there (no capture has been shipped yet, or a wrong URL)")
    oldest = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=days - 1) if days else None
    files = size = 0
    for remote in sorted(fs.find(root)):
        relative = str(remote)[len(root) :].lstrip("/")
        if not relative.endswith(CLOSED) or (oldest and not _on_or_after(relative, oldest)):
            continue
        local = dest / relative
        length = fs.size(remote)
        if local.is_file() and local.stat().st_size == length:
            continue
        objectstore.get(fs, remote, local)
        files, size = files + 1, size + length
    return Shipped(files, size)


def _on_or_after(relative: str, oldest: dt.date) -> bool:
    """Whether a file's date folder (`yyyy-mm-dd/...`) is not older than `oldest`; undated files count."""
    try:
        day = dt.date.fromisoformat(relative.split("/", 1)[0])
    except ValueError:
        return True
    return day >= oldest


def every(period_s: float, work: Callable[[], object], stop: threading.Event) -> None:
    """Run `work` every `period_s` until `stop` is set, then once more (the files closed meanwhile)."""
    while not stop.wait(period_s):
        work()
    work()


def main(argv: list[str] | None = None, prog: str = "capture") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    to = commands.add_parser("ship", help="upload closed capture files to object storage, then delete them here")
    to.add_argument("--from", dest="source", type=Path, required=True, help="the capture directory (CAPTURE_DIR)")
    to.add_argument("--to", dest="url", default=os.environ.get("CAPTURE_URL", ""),
                    help="e.g. s3://<dvc bucket>/captures (default: CAPTURE_URL)")  # fmt: skip
    to.add_argument("--every", type=float, help="seconds between passes: run until SIGTERM, then a last pass")
    get = commands.add_parser("fetch", help="download capture files not here yet")
    get.add_argument("--from", dest="url", required=True, help="where `ship` puts them")
    get.add_argument("--to", dest="dest", type=Path, required=True)
    get.add_argument("--days", type=int, help="only the last N days of date folders")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        if args.days is not None and args.days < 1:
            raise UserError(f"--days: expected a whole number of days, at least 1, got {args.days}")
        got = fetch(args.url, args.dest, args.days)
        print(f"{got.files} capture file(s), {got.bytes:,} bytes -> {args.dest}")
        return 0
    if not args.url and args.every is None:
        raise UserError("--to: where to ship (e.g. s3://<bucket>/captures); CAPTURE_URL is not set either")
    if args.every is None:
        done = ship(args.source, args.url)
        print(f"{done.files} capture file(s), {done.bytes:,} bytes -> {args.url}; {done.failed} failed")
        return 1 if done.failed else 0
    if args.every <= 0:
        raise UserError(f"--every: expected a number of seconds above 0, got {args.every:g}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if not args.url:
        # The sidecar ships nothing until CAPTURE_URL is set, and must not crash-loop meanwhile: a
        # native sidecar that fails its start keeps the pod from starting at all.
        print("capture ship: CAPTURE_URL is empty, nothing is shipped (the files stay on the volume)", flush=True)
        stop.wait()
        return 0
    _filesystem(args.url)  # a wrong URL fails now, not in an hour

    def work() -> None:
        done = ship(args.source, args.url)
        if done.files or done.failed:
            print(f"{done.files} capture file(s), {done.bytes:,} bytes -> {args.url}; {done.failed} failed", flush=True)

    every(args.every, work, stop)
    return 0
