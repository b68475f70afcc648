"""The one exception type for user mistakes (the CLI prints its message on one line, exit 2), and
the two helpers every reader of a user's file uses to word one: `quote` and `read_text`."""

from __future__ import annotations

import codecs
import reprlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

QUOTE_CHARS = 60  # an error names the offending value; it never echoes a 2 MB one back


class UserError(Exception):
    """Bad input from the user (a file, a setting, an answer). The message names what and where."""


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)` cut to a short prefix (with the full length): enough to find the value, short
    enough that one line stays one line (repr escapes newlines); bounded for any value."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    # reprlib bounds the work too: a YAML alias bomb or a deep list is never expanded in full.
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 3, 8, 6, limit, limit
    text = short.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def key_path(keys: Iterable[object]) -> str:
    """Keys as `a.b.c`, each one that is long or not plain printable text quoted: a key a user wrote
    with a newline in it must not break the one line its error is."""
    parts = [str(k) if isinstance(k, int) else k for k in keys]
    return ".".join(p if isinstance(p, str) and p.isprintable() and len(p) <= QUOTE_CHARS else quote(p) for p in parts)


def clip(message: str, limit: int = 300) -> str:
    """A message from a library (it may quote the input at any length) cut to one short line."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


def schema_message(error: Any) -> str:
    """A jsonschema error's message with the value it quotes cut short (it quotes it whole)."""
    message = str(error.message)
    instance = repr(error.instance)
    if len(instance) > QUOTE_CHARS:
        message = message.replace(instance, quote(error.instance))
    return clip(message)


def decode(data: bytes, source: str, error: type[UserError] = UserError) -> str:
    """UTF-8 text (a leading byte-order mark dropped), or `error("<source>:<line>: not valid UTF-8")`
    naming the line of the first bad byte."""
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, start + exc.start) + 1
        raise error(f"{source}:{line}: not valid UTF-8 (save it as UTF-8)") from None


def read_text(path: Path | str, error: type[UserError] = UserError, hint: str = "") -> str:
    """A user's file as UTF-8 text; `error` naming the file when it is missing, unreadable or not
    UTF-8 (`hint`, e.g. "run the evaluate stage first", ends the cannot-read message)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise error(f"{path}: cannot read ({why}){'; ' + hint if hint else ''}") from None
    return decode(data, str(path), error)
