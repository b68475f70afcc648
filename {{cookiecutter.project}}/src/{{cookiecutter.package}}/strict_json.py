"""JSON as RFC 8259 writes it, for text that comes from users and models.

Python's `json.loads` also takes NaN and Infinity (not JSON), turns 1e999 into infinity and raises
RecursionError on deep nesting. A golden line or a model answer like that would be accepted here and
then break every tool downstream that reads it as JSON, so each of those is a ValueError instead.
"""

from __future__ import annotations

import json
import math
from typing import Any


class TooDeep(ValueError):
    """JSON nested deeper than Python's recursion limit lets it read."""


def loads(text: str | bytes) -> Any:
    """`text` as JSON; ValueError (json.JSONDecodeError for syntax, TooDeep for nesting) when it is
    not strictly JSON."""
    try:
        return json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except RecursionError:
        raise TooDeep("nested too deeply") from None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _finite(number: str) -> float:
    value = float(number)
    if not math.isfinite(value):
        raise ValueError(f"{number[:20]} does not fit a float")
    return value
