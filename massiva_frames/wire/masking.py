"""Credentials kept out of reprs, frame locals and log lines (the client's masking).

The password is a :class:`_Secret`; the encoded query or GET URL a :class:`_MaskedText`
and the POST body a :class:`_MaskedBody`: plain ``str``/``bytes`` to every API, masked
to ``repr``, which is all debuggers and error trackers show of a frame's locals. urllib3's
loggers get a filter that masks the registered passwords.
"""

from __future__ import annotations

import logging
import threading

from ..errors import mask

__all__: list[str] = []  # internal to massiva_frames.wire.client

# urllib3 logs request lines, URL included, at DEBUG (and retries at WARNING): a GET
# carries the password in its query string, so these loggers get a masking filter.
_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager")


class _Secret(str):
    """A password: a plain ``str`` to every API, ``'***'`` to ``repr`` and ``vars``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


# Debuggers and error trackers (Sentry captures frame locals by default, and its scrubber
# knows "password", not "clave") repr every local of every frame of a traceback. The
# encoded request travels through requests, urllib3 and http.client as the very object
# built here (tests/test_secret_locals.py), so its repr is all they can show of it.
class _MaskedText(str):
    """An encoded query or GET URL: a plain ``str`` to every API, masked to ``repr``."""

    secrets: tuple[str, ...] = ()

    def __new__(cls, text: str, secrets: tuple[str, ...] = ()) -> _MaskedText:
        self = super().__new__(cls, text)
        self.secrets = secrets
        return self

    def __repr__(self) -> str:
        return repr(mask(str(self), self.secrets))


class _MaskedBody(bytes):
    """A POST body, encoded from ``text``: plain ``bytes`` on the wire, masked to ``repr``."""

    secrets: tuple[str, ...] = ()

    def __new__(cls, text: str, secrets: tuple[str, ...] = ()) -> _MaskedBody:
        self = super().__new__(cls, text, "ascii")
        self.secrets = secrets
        return self

    def __repr__(self) -> str:
        return repr(mask(self.decode("ascii"), self.secrets).encode("ascii"))


class _MaskingFilter(logging.Filter):
    """Masks the registered secrets in the records of the loggers it is attached to."""

    secrets: frozenset[str] = frozenset()  # swapped whole, so never mutated mid-read

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            try:
                message = record.getMessage()
            except Exception:
                # logging would print the raw format and arguments to stderr: mask them.
                try:
                    message = f"unformattable log record: {record.msg!r} % {record.args!r}"
                except Exception:
                    message = "unformattable log record"
                record.msg, record.args = mask(message, self.secrets), None
                return True
            masked = mask(message, self.secrets)
            if masked != message:
                record.msg, record.args = masked, None
        return True


_LOG_MASK = _MaskingFilter()
_LOG_MASK_LOCK = threading.Lock()


def _install_log_mask(secret: str) -> None:
    with _LOG_MASK_LOCK:
        if not _LOG_MASK.secrets:
            for name in _URLLIB3_LOGGERS:
                logging.getLogger(name).addFilter(_LOG_MASK)
        _LOG_MASK.secrets = _LOG_MASK.secrets | {str(secret)}
