"""Whether a request body is a request the service can answer: decided before any model call, and
every "no" is one short sentence for a 4xx, never an exception that becomes a 500.

`parse(raw)` turns the body's bytes into JSON, refusing what Python's json module would take but
the rest of the service cannot carry: NaN and Infinity (not JSON), lone UTF-16 surrogates such as
`"\\ud800"` (valid JSON escapes, but not Unicode: they cannot be encoded again, for the model call
or a log line), and nesting deeper than MAX_DEPTH. `problem(...)` then checks the parsed body
against the flow's request schema or the prompt's variables, and the length of every text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .. import strict_json
from ..errors import clip, schema_message

MAX_DEPTH = 32  # a request is a small object; deeper JSON is refused before any recursive check sees it
_SURROGATE = re.compile("[\ud800-\udfff]")


class Invalid(ValueError):
    """A body that is not an answerable request; the message says why, in one short line."""


def parse(raw: bytes) -> Any:
    """The JSON value of a request body; Invalid otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = strict_json.loads(text)
    except strict_json.TooDeep:
        raise Invalid(f"the request body is nested more than {MAX_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        raise Invalid(f"the request body is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # NaN / Infinity / 1e999, an integer of thousands of digits
        raise Invalid(f"the request body is not JSON ({clip(str(exc), 120)})") from None
    _check_shape(value)
    return value


def _check_shape(value: Any) -> None:
    """Depth and lone surrogates, without recursion (the depth is what is being checked)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Invalid(f"the request body is nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                raise Invalid(
                    f"the request body holds a lone surrogate (\\u{ord(found.group()):04x}), which is not "
                    "Unicode text: send the character itself, or an escaped surrogate pair"
                )
        elif isinstance(item, dict):
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def validator(schema: Mapping[str, Any]) -> Any:
    """A flow's request schema, compiled once (compiling costs more than validating)."""
    import jsonschema

    return jsonschema.Draft202012Validator(schema)


def problem(body: Any, request: Any, variables: tuple[str, ...], max_chars: int) -> str | None:
    """Why `body` is not a valid request (a 422), or None. A flow's request is checked by its compiled
    `request` schema (`validator`); a prompt's (`request` None) must be exactly {"variables": {...}}."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    found = _schema_problem(request, body) if request is not None else _variables_problem(variables, body)
    return found or _too_long(body, max_chars)


def _schema_problem(request: Any, body: Any) -> str | None:
    import jsonschema

    error = jsonschema.exceptions.best_match(request.iter_errors(body))
    if error is None:
        return None
    where = ".".join(map(str, error.absolute_path)) or "(body)"
    return f"{clip(where, 80)}: {schema_message(error)}"


def _variables_problem(variables: tuple[str, ...], body: Mapping[str, Any]) -> str | None:
    given = body.get("variables")
    if set(body) != {"variables"} or not isinstance(given, dict):
        return 'expected {"variables": {...}} and nothing else'
    if set(given) != set(variables):
        return f"variables: expected exactly {', '.join(variables) or 'none'}"
    if not all(isinstance(v, str) and v.strip() for v in given.values()):
        return "variables: every value must be a non-empty string"
    return None


def _too_long(value: Any, limit: int) -> str | None:
    if isinstance(value, str):
        return f"a text value is longer than {limit} characters" if len(value) > limit else None
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((p for p in (_too_long(v, limit) for v in children) if p), None)
