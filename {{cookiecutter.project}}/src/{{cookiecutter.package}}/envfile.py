""".env: the project's local secrets and settings (the model key, MLFLOW_TRACKING_URI), read into the
environment by every command, as python-dotenv reads the simple case: `KEY=value` lines, an
optional `export `, comments (`#` lines, and ` #...` after an unquoted value), single quotes (literal
but for \\' and \\\\) or double quotes (with \\n, \\t, \\" ... escapes). A variable already in the real
environment wins. No `${VAR}` expansion, no value spanning lines.

The file is git-ignored and kept out of the image and of DVC; nothing here prints a value, and a
line it cannot read is named by its number only (it may hold a secret).
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from pathlib import Path

from .errors import UserError, read_text

ENV_FILE = Path(".env")
_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?([^=#\s]+)\s*(?:=\s*(.*?))?\s*")
_ESCAPES = {
    '"': {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", '"': '"', "'": "'", "\\": "\\"},
    "'": {"'": "'", "\\": "\\"},
}


def parse(text: str, source: str = str(ENV_FILE)) -> dict[str, str]:
    """The variables a .env text sets; a UserError `source:line: ...` for a line it cannot read."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ASSIGNMENT.fullmatch(line)
        if match is None:
            raise UserError(f"{source}:{number}: expected KEY=value (the line is not shown: it may hold a secret)")
        key, raw = match.groups()
        if raw is not None:  # a bare `KEY` sets nothing, as in python-dotenv
            values[key] = _value(raw, f"{source}:{number}: {key}")
    return values


def _value(raw: str, where: str) -> str:
    if not raw or raw[0] not in "'\"":
        return re.split(r"\s+#", raw, maxsplit=1)[0]  # ` #` starts a comment after an unquoted value
    quote, chars, i = raw[0], [], 1
    while i < len(raw) and raw[i] != quote:
        if raw[i] == "\\" and i + 1 < len(raw):
            chars.append(_ESCAPES[quote].get(raw[i + 1], "\\" + raw[i + 1]))
            i += 2
            continue
        chars.append(raw[i])
        i += 1
    if i == len(raw):
        raise UserError(f"{where}: the value's {quote} quote is not closed on its line")
    rest = raw[i + 1 :].strip()
    if rest and not rest.startswith("#"):
        raise UserError(f"{where}: text after the closing {quote} quote")
    return "".join(chars)


def load(path: Path = ENV_FILE, environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Set the variables of `path` (if it exists) that the environment does not have yet; returns
    their names (never their values)."""
    if not path.is_file():
        return []
    added = []
    for key, value in parse(read_text(path), str(path)).items():
        if key not in environ:
            environ[key] = value
            added.append(key)
    return added
