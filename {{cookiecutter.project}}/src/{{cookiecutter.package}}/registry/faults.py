"""What can go wrong with an MLflow store, said in one line that names it (a RegistryError, exit 2).

- A tracking server that is not there: MLflow alone retries an unanswered request 7 times with a
  growing back-off (about 4 minutes, meant for rate-limited hosted stores), each try waiting up to
  120 s, and says nothing meanwhile. The first request to a server is a reachability check
  instead (FIRST_CONTACT: one try of at most 10 s); later requests keep MLflow's retries.
  MLflow's own variables win when the user sets them.
- A sqlite file MLflow would misuse (`check_store_file`): an empty file, or one that is not a
  database, is refused before MLflow opens it; a read-only or corrupt one fails in SQLite, and
  `reported` turns that into one line (MLflow would log its whole traceback first).
- MLflow's own refusal: the first line of its message.

Anything else (a bug of ours) stays a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..errors import UserError, clip

FIRST_CONTACT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


class RegistryError(UserError):
    """A registry request that cannot be done (nothing to promote, a store that cannot be used...)."""


def first_contact_env(environ: Mapping[str, str]) -> dict[str, str]:
    """MLflow's HTTP settings for the first request to a tracking server: FIRST_CONTACT, except
    those the user set."""
    return {key: value for key, value in FIRST_CONTACT.items() if not environ.get(key)}


def check_store_file(store: str, path: Path) -> None:
    """Refuse the sqlite file of `store` if MLflow would misuse it. A missing file is a new store.
    An existing one must start with SQLite's header: SQLite writes it with the first table, which
    MLflow creates at once, so an empty file is never a store but a store that lost everything,
    and MLflow would silently start over in it (history and aliases gone, version numbers reused)."""
    if not path.exists():
        return
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise RegistryError(f"MLflow store {store}: cannot read the file ({exc.strerror})") from None
    if not head:
        raise RegistryError(
            f"MLflow store {store}: the file is empty (0 bytes): its history is gone (truncated?), and MLflow "
            "would start over in it, numbering versions from 1 again; restore it from a backup, or delete "
            "it to start a new store"
        )
    if head != SQLITE_HEADER:
        raise RegistryError(
            f"MLflow store {store}: the file is not an SQLite database (corrupt, or another kind of file); "
            "restore it from a backup, or point registry.tracking_uri elsewhere"
        )


def failure(exc: BaseException, timeout: str | None = None) -> str | None:
    """What went wrong with the store, in a few words, if `exc` is the store's failure, else None."""
    import requests

    chain = list(_chain(exc))
    if any(isinstance(e, requests.RequestException) for e in chain):
        reasons = [e.strerror for e in chain if isinstance(e, OSError) and e.errno and e.strerror]
        if reasons:  # refused, no route, unknown host: the deepest one is the socket's own
            return f"cannot connect ({reasons[-1].lower()}): is the tracking server running at that URL?"
        if any("timeout" in type(e).__name__.lower() or "timed out" in str(e) for e in chain):
            within = f" within {timeout} s" if timeout else ""
            return (
                f"the tracking server accepted the connection but gave no answer{within} (MLFLOW_HTTP_REQUEST_TIMEOUT)"
            )
        return f"cannot connect ({clip(str(exc), 200)})"
    database = [e for e in chain if isinstance(e, sqlite3.Error)]
    if database:
        message = str(database[-1])
        if "readonly" in message or "read-only" in message:
            return f"{message}: the store is read-only (check the permissions of the file and of its folder)"
        if "malformed" in message or "not a database" in message:
            return f"{message}: the database file is corrupt; restore it from a backup"
        return clip(message, 200)
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:
        return None
    if isinstance(exc, MlflowException):
        lines = [line for line in str(exc.message).splitlines() if line.strip()]
        return clip(lines[0] if lines else type(exc).__name__, 300)
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, what caused it and what urllib3 wrapped in it (`MaxRetryError.reason`), outermost first."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        wrapped = [a for a in current.args if isinstance(a, BaseException)]
        todo += [
            current.__cause__,
            current.__context__,
            reason if isinstance(reason, BaseException) else None,
            *wrapped,
        ]


@contextlib.contextmanager
def reported(store: str) -> Iterator[None]:
    """The store's failures inside (see `failure`) as one RegistryError naming `store` (a URI
    without credentials)."""
    try:
        yield
    except RegistryError:
        raise
    except Exception as exc:
        why = failure(exc, os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT"))
        if why is None:
            raise
        raise RegistryError(f"MLflow store {store}: {why}") from None


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """`values` set in the environment meanwhile (MLflow reads its variables at each request)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _DatabaseErrorRecords(logging.Filter):
    # MLflow logs each failed sqlite statement with its whole traceback, then raises it: `reported`
    # says it in one line, so that record is left out (its logger's other records stay).
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SQLAlchemy database error")


def quiet_database_errors() -> None:
    """Leave MLflow's traceback-logging of sqlite errors out (idempotent)."""
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _DatabaseErrorRecords) for f in logger.filters):
        logger.addFilter(_DatabaseErrorRecords())
