"""`harvest`: captured answers -> data/raw/candidates-<date>.jsonl, golden-set lines for a person to label.

Only answers with a signal become candidates, most telling first: a user's thumbs down, a shadow
version that decided otherwise, a failure on the canary, then any other server failure. An answer
that nobody objected to is left out: labelling it costs a reviewer's time and tells the eval little
that the golden set does not (the drift report watches how such traffic moves). At most
`harvest.max_candidates` a run; the rest stay in the captures for the next one.

A candidate is a golden-set line (`flow` or `prompt`, `input` = the captured, redacted request)
marked `todo`, which keeps it out of the eval set until a person writes its expectation and deletes
`todo`. Its provenance sits in `harvest` (never an expectation): the user's correction there is a
suggestion, since feedback is untrusted input. Every text is redacted again on the way out (what the
service wrote was redacted already; a capture file from elsewhere may not have been).

The file is only ever added to: a second run on the same date appends its new lines, whatever a
person has already labelled above them stays as it is, and the file is replaced in one rename.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import stat
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import settings as settings_mod
from ..errors import UserError, quote
from ..serving.observability import Redactor
from ..stages.preprocess import fingerprint
from . import records

# Most telling first: the order candidates are taken in when there are more than a reviewer can label.
REASONS = ("negative_feedback", "shadow_disagreement", "canary_failure", "failure")
TODO = (
    "label: say what a right answer is (expected, contains, ...), then delete todo;"
    " harvest.correction is a user's suggestion, not a verdict"
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def reason(answer: records.Answer) -> str | None:
    """Why this answer is worth a label, or None when it is not."""
    data = answer.data
    if answer.rating == "down":
        return "negative_feedback"
    if answer.disagreed:
        return "shadow_disagreement"
    failed = data["status"] >= 500 or bool(data.get("error"))
    version = data.get("version")
    alias = version.get("alias") if isinstance(version, dict) else None
    if failed and (data.get("mirror_of") is not None or alias == "candidate"):
        return "canary_failure"
    return "failure" if failed else None


@dataclass
class Harvest:
    candidates: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0  # already in the golden set or data/raw, or earlier in this batch
    over_limit: int = 0  # left for the next run (harvest.max_candidates)

    def summary(self) -> str:
        counts = Counter(c["harvest"]["reason"] for c in self.candidates)
        by_reason = ", ".join(f"{r} {counts[r]}" for r in REASONS if counts[r])
        text = f"{len(self.candidates)} candidate(s)" + (f" ({by_reason})" if by_reason else "")
        text += f", {self.duplicates} duplicate(s) skipped"
        return text + (
            f", {self.over_limit} over harvest.max_candidates left for the next run" if self.over_limit else ""
        )


def harvest(answers: Iterable[records.Answer], known: set[str], limit: int, redact: Redactor) -> Harvest:
    """Candidates from `answers`, most telling reason first, none whose target and input are `known`
    (fingerprints, see preprocess.fingerprint), at most `limit`."""
    ranked = sorted(
        ((REASONS.index(why), n, a, why) for n, a in enumerate(answers) if (why := reason(a)) is not None),
        key=lambda item: item[:2],
    )
    result = Harvest()
    seen = set(known)
    for _, _, answer, why in ranked:
        line = candidate(answer, why, redact)
        key = fingerprint(answer.target, line["input"])
        if key in seen:
            result.duplicates += 1
            continue
        seen.add(key)
        if len(result.candidates) == limit:
            result.over_limit += 1
            continue
        result.candidates.append(line)
    return result


def candidate(answer: records.Answer, why: str, redact: Redactor) -> dict[str, Any]:
    """The golden-set line for one answer: unlabelled, with where it came from."""
    target = answer.target
    head = {"flow": target.removeprefix("flow:")} if target.startswith("flow:") else {"prompt": target}
    request = _redacted(answer.request, redact)
    down = [f for f in answer.feedback if f.get("rating") == "down"]
    provenance = {
        "reason": why,
        "request_id": answer.request_id,
        "captured_at": answer.data.get("at"),
        "version": answer.data.get("version"),
        "reply": _redacted(answer.reply, redact),
        "correction": _redacted(down[-1].get("correction"), redact) if down else None,
        "comment": _redacted(down[-1].get("comment"), redact) if down else None,
    }
    key = fingerprint(target, request)
    ident = "harvest-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    return {"id": ident, **head, "input": request, "todo": TODO, "tags": ["harvested"], "harvest": provenance}


def _redacted(value: Any, redact: Redactor) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, redact) for v in value]
    return value


def known_inputs(paths: Iterable[Path]) -> set[str]:
    """Fingerprints of every example in these golden-format files, read leniently: a line being
    labelled may be half-edited, and dedup must not stop on it."""
    found: set[str] = set()
    for path in paths:
        for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if not isinstance(data, dict) or not isinstance(data.get("input"), dict):
                continue
            target = f"flow:{data['flow']}" if isinstance(data.get("flow"), str) else data.get("prompt")
            if isinstance(target, str):
                found.add(fingerprint(target, data["input"]))
    return found


def append(path: Path, lines: Sequence[dict[str, Any]]) -> None:
    """Add `lines` to the end of `path` (created when missing) in one rename: a reader never sees a
    half-written file, and what is already there (maybe being labelled) is kept byte for byte."""
    before = path.read_bytes() if path.exists() else b""
    if before and not before.endswith(b"\n"):
        before += b"\n"
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
    else:  # as open() would create it (mkstemp's 0600 would hide it from the rest of the team)
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(before + text.encode())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _date(text: str) -> str:
    try:
        if _DATE.fullmatch(text) and dt.date.fromisoformat(text):
            return text
    except ValueError:
        pass
    raise UserError(f"--date: expected a date as YYYY-MM-DD, got {quote(text)}")


def main(argv: list[str] | None = None, prog: str = "harvest") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--captures", type=Path, nargs="+", required=True, help="capture files or directories")
    parser.add_argument("--golden", type=Path, default=Path("eval/golden.jsonl"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw"), help="where candidates-<date>.jsonl goes")
    parser.add_argument("--date", help="YYYY-MM-DD in the file name (default: today, UTC)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    date = _date(args.date) if args.date else dt.datetime.now(dt.UTC).date().isoformat()
    if not args.raw.is_dir():
        raise UserError(f"--raw {args.raw}: no such directory")
    limit = settings_mod.load(args.params).harvest.max_candidates
    captures = records.load(args.captures)
    known = known_inputs([args.golden, *sorted(args.raw.glob("*.jsonl"))])
    result = harvest(captures.answers, known, limit, Redactor(os.environ.get("LOG_HASH_KEY")))
    out = args.raw / f"candidates-{date}.jsonl"
    if result.candidates:
        append(out, result.candidates)
    where = f" -> {out}" if result.candidates else ""
    print(f"{result.summary()}{where}; read {captures.note()}")
    return 0
