"""Where a PostgreSQL journal lives: its URL, the package's own URL parameters, a safe name.

A journal argument (``journal=``, ``--journal``, ``MASSIVA_JOURNAL``) that starts with
``postgresql://`` (or ``postgres://``) names a PostgreSQL journal; anything else is a
SQLite file. The URL is libpq's (``postgresql://user:password@host:5432/db?sslmode=require``;
``PGHOST``, ``PGPASSWORD``, ``PGSSLMODE``... fill what it leaves out), plus three
parameters of this package, removed before connecting:

``schema``
    The schema holding the journal's tables (default ``massiva``), created when missing:
    one schema per campaign or per user keeps several journals in one database.
``lease``
    Seconds a worker's claim on its messages lasts without being renewed (default 60).
    A worker renews it every second while it runs; a batch whose worker stopped renewing
    becomes ``unknown`` once its lease has expired (sooner when the server saw the
    worker's session end), and is never resent automatically.
``reconnect``
    Seconds a worker keeps trying to reach the database again after losing its
    connection (default 15), before it stops with ``JournalUnavailableError``.

:class:`Location` keeps the parsed URL; its :attr:`~Location.name` (``postgresql://user@
host:port/db (schema s)``) is what every message shows: never the password.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ...errors import InputError, JournalUnavailableError, mask

# Internal to the PostgreSQL journal (massiva_frames.sending.journal.postgres).
__all__ = ["Location", "is_postgres_url", "psycopg_module"]

_SCHEMES = ("postgresql://", "postgres://")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

DEFAULT_SCHEMA = "massiva"
DEFAULT_LEASE = 60.0
DEFAULT_RECONNECT = 15.0


def is_postgres_url(journal: object) -> bool:
    """Whether a journal argument names a PostgreSQL journal (a ``postgresql://`` URL)."""
    return isinstance(journal, str) and journal.strip().lower().startswith(_SCHEMES)


def psycopg_module() -> ModuleType:
    """psycopg 3, or an :class:`InputError` that says how to install it."""
    try:
        import psycopg
    except ImportError:
        raise InputError(
            "a PostgreSQL journal needs psycopg 3: pip install 'massiva-frames[postgres]'"
        ) from None
    return psycopg


def _seconds(params: dict[str, str], key: str, default: float) -> float:
    raw = params.pop(key, None)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InputError(f"journal URL: {key} must be a number of seconds > 0, got {raw!r}")
    return value


@dataclass(frozen=True)
class Location:
    """A parsed journal URL: what libpq gets, the package's parameters, a safe name.

    ``repr`` and :attr:`name` never show the password.
    """

    conninfo: str = field(repr=False)
    schema: str
    lease: float
    reconnect: float
    name: str
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def parse(cls, url: str) -> Location:
        """Parse ``url`` (see the module's documentation for its parameters)."""
        parts = urlsplit(url.strip())
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        schema = params.pop("schema", DEFAULT_SCHEMA)
        if not _IDENTIFIER.fullmatch(schema):
            raise InputError(
                f"journal URL: schema must be a plain SQL name (letters, digits, _), got {schema!r}"
            )
        lease = _seconds(params, "lease", DEFAULT_LEASE)
        reconnect = _seconds(params, "reconnect", DEFAULT_RECONNECT)
        secrets = [s for s in (parts.password, params.get("password")) if s]
        secrets += [unquote(s) for s in secrets]
        if os.environ.get("PGPASSWORD"):
            secrets.append(os.environ["PGPASSWORD"])
        conninfo = urlunsplit(parts._replace(query=urlencode(params)))
        host = parts.hostname or params.get("host") or os.environ.get("PGHOST") or "localhost"
        port = _port(parts) or params.get("port") or os.environ.get("PGPORT") or "5432"
        user = unquote(parts.username or "") or params.get("user") or os.environ.get("PGUSER")
        database = unquote(parts.path.lstrip("/")) or params.get("dbname")
        database = database or os.environ.get("PGDATABASE") or user or ""
        who = f"{user}@" if user else ""
        name = f"postgresql://{who}{host}:{port}/{database} (schema {schema})"
        return cls(conninfo, schema, lease, reconnect, mask(name, secrets), tuple(secrets))

    def describe(self, exc: BaseException) -> str:
        """An error's first line, the password masked (libpq's messages name the host and
        the user; a password is masked all the same)."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return mask(text, self.secrets)[:300]

    def unavailable(self, exc: BaseException, doing: str = "") -> JournalUnavailableError:
        """The error a run stops with when the database cannot be reached."""
        what = f" ({doing})" if doing else ""
        return JournalUnavailableError(
            f"journal {self.name} is unavailable{what}: {self.describe(exc)}"
        )


def _port(parts: Any) -> str | None:
    try:
        port = parts.port
    except ValueError:
        return None
    return None if port is None else str(port)
