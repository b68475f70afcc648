"""Response cache on disk: one small JSON file per successful call, written atomically.

Key = sha256 of the canonical JSON of everything that decides the answer: endpoint kind, model,
rendered messages, sampling parameters and the repeat index. Errors are never cached, so a re-run
retries exactly what failed; an interrupted run resumes from what it had already written.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any


def cache_key(**parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    def __init__(self, root: Path | str, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self._made: set[Path] = set()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None  # missing or torn: treat as a miss and call again

    def put(self, key: str, value: dict[str, Any]) -> None:
        if not self.enabled:
            return
        path = self._path(key)
        # As few system calls as possible: each one lets the GIL go, and with 16 worker threads
        # getting it back costs more than the call itself (mkdir once per directory, no mkstemp).
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
        tmp = path.parent / f".tmp-{os.getpid()}-{threading.get_ident()}-{key[:16]}"
        tmp.write_text(json.dumps(value, ensure_ascii=False))
        os.replace(tmp, path)  # atomic: a reader never sees half a file
