"""The callbacks' parameters: decoding, validation and the typed columns derived from them.

The provider calls one URL with either a final-status callback (docs/protocol.md §2: ``id``,
``estatus``, ``fecha_actualizacion``, ``usuario``, ``detalle``) or an inbound SMS callback
(docs/protocol.md §3: ``msg``, ``phone``, ``linea``, ``email``). This module is pure: no I/O.

The receiver stores the decoded values exactly as they arrived (raw strings); typing
(message id, status name, local time, normalised line) is derived from them by
:func:`derive_status` / :func:`derive_inbound`, which never raise.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from urllib.parse import unquote_to_bytes

__all__ = [
    "INBOUND_FIELDS",
    "KINDS",
    "MAX_VALUE",
    "STATUS_FIELDS",
    "STATUS_NAMES",
    "CallbackRejected",
    "classify",
    "decode_form",
    "derive_inbound",
    "derive_status",
    "event_key",
    "normalise_line",
    "parse_fecha",
]

#: the kinds of callback, in the order the store handles them
KINDS: tuple[str, ...] = ("status", "inbound")
#: docs/protocol.md §2, in storage order
STATUS_FIELDS: tuple[str, ...] = ("id", "estatus", "fecha_actualizacion", "usuario", "detalle")
#: docs/protocol.md §3, in storage order
INBOUND_FIELDS: tuple[str, ...] = ("msg", "phone", "linea", "email")
#: docs/protocol.md §2: estatus 1 = exitoso (delivered), 2 = fallido (failed)
STATUS_NAMES: dict[str, str] = {"1": "delivered", "2": "failed"}
#: longest value accepted, in characters (an inbound SMS of 10 concatenated parts is ~1,530)
MAX_VALUE = 2000

# ASCII digits only: in a str pattern \d also matches other scripts' digits ('١٢'), which
# int() would then read as a message id.
_ID = re.compile(r"[0-9]{1,18}")  # fits an int64
# docs/protocol.md §2 says "YYYY-mm-dd hh:mm:ss"; the provider's own table writes
# "YYYY-mm--dd", so a doubled dash is tolerated, and so are a "T", missing seconds and
# fractional seconds.
_FECHA = re.compile(
    r"(\d{4})-{1,2}(\d{1,2})-{1,2}(\d{1,2})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?)?",
    re.ASCII,
)
_PHONE_LIKE = re.compile(r"\+?[\d \-.()]{3,32}", re.ASCII)
_NON_DIGITS = re.compile(r"\D", re.ASCII)


class CallbackRejected(Exception):
    """A request the receiver refuses: ``code`` is the HTTP status, ``reason`` a short text.

    The reason never contains a received value (it may carry a secret or personal data).
    """

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(code, reason)


def _decode_component(raw: bytes, charset: str | None) -> str:
    """Decode one percent-encoded name or value: ``+`` is a space, UTF-8 else Latin-1."""
    if b"+" in raw:
        raw = raw.replace(b"+", b" ")
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    if raw.isascii():
        return raw.decode("ascii")
    # The provider does not say which charset it uses: a declared charset first, then
    # strict UTF-8, then Windows-1252 (the Latin-1 superset a PHP sender on Windows uses),
    # then Latin-1, which never fails. Chosen per value, so one odd value cannot spoil
    # the others.
    for codec in (charset, "utf-8", "cp1252"):
        if codec:
            try:
                return raw.decode(codec)
            except (UnicodeDecodeError, LookupError):
                continue
    return raw.decode("latin-1")


def decode_form(raw: bytes, *, charset: str | None = None) -> dict[str, str]:
    """Decode a query string or ``application/x-www-form-urlencoded`` body.

    Names are lower-cased; when a name repeats, the last value wins (as in PHP).

    Examples
    --------
    >>> decode_form(b"msg=Hola+Mundo&phone=584121234567&linea=%2B58414%20123")
    {'msg': 'Hola Mundo', 'phone': '584121234567', 'linea': '+58414 123'}
    >>> decode_form(b"msg=caf%E9")["msg"], decode_form(b"msg=caf%C3%A9")["msg"]
    ('café', 'café')
    """
    out: dict[str, str] = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        key = _decode_component(name, charset).strip().lower()
        if key:
            out[key] = _decode_component(value, charset)
    return out


def parse_fecha(text: str | None) -> dt.datetime | None:
    """Parse ``fecha_actualizacion`` into a naive local datetime; None when absent/invalid.

    Examples
    --------
    >>> parse_fecha("2014-01-01 12:10:30")
    datetime.datetime(2014, 1, 1, 12, 10, 30)
    >>> parse_fecha("2014-01--01 12:10:30")
    datetime.datetime(2014, 1, 1, 12, 10, 30)
    """
    if text is None:
        return None
    m = _FECHA.fullmatch(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in m.groups())
    try:
        return dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def normalise_line(text: str | None) -> str | None:
    """Digits of a phone-like value (``"+58414 212-2268"`` -> ``"584142122268"``).

    A value that does not look like a phone number is returned stripped, unchanged;
    empty becomes None.

    Examples
    --------
    >>> normalise_line("+584142122268")
    '584142122268'
    """
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    if _PHONE_LIKE.fullmatch(text):
        digits = _NON_DIGITS.sub("", text)
        if digits:
            return digits
    return text


def _present(params: Mapping[str, str], name: str) -> bool:
    value = params.get(name)
    return value is not None and value.strip() != ""


def classify(params: Mapping[str, str]) -> tuple[str, tuple[str | None, ...]]:
    """Tell the kind of callback from its parameters and validate it.

    Returns ``(kind, values)`` with ``values`` the raw strings in :data:`STATUS_FIELDS` or
    :data:`INBOUND_FIELDS` order (None when absent). Unknown parameters are ignored.

    Raises
    ------
    CallbackRejected
        400 for missing/invalid fields or an ambiguous request, 413 for an oversized value.

    Examples
    --------
    >>> classify({"id": "123", "estatus": "1", "detalle": "584142122268"})[0]
    'status'
    """
    for name in (*STATUS_FIELDS, *INBOUND_FIELDS):
        value = params.get(name)
        if value is None:
            continue
        if len(value) > MAX_VALUE:
            raise CallbackRejected(413, f"{name} is longer than {MAX_VALUE} characters")
        if "\x00" in value:
            raise CallbackRejected(400, f"{name} contains a NUL character")
    # docs/protocol.md §3: one path takes both kinds, told apart by id + estatus versus msg + phone.
    # An `id` beside msg/phone is not enough to call it a status callback (an inbound
    # message id is a plausible addition); `estatus` beside them is ambiguous.
    is_inbound = "msg" in params or "phone" in params
    is_status = "estatus" in params or ("id" in params and not is_inbound)
    if is_status and is_inbound:
        raise CallbackRejected(
            400, "ambiguous callback: both status (id, estatus) and inbound (msg, phone) fields"
        )
    if is_status:
        missing = [n for n in ("id", "estatus") if not _present(params, n)]
        if missing:
            raise CallbackRejected(400, f"status callback without {' and '.join(missing)}")
        if not _ID.fullmatch(params["id"].strip()):
            raise CallbackRejected(400, "id must be a non-negative integer")
        if params["estatus"].strip() not in STATUS_NAMES:
            raise CallbackRejected(400, "estatus must be 1 (delivered) or 2 (failed)")
        fecha = params.get("fecha_actualizacion")
        # A missing or empty date is accepted (the status itself is what matters; updated_at
        # is then missing); a present but unreadable one is refused so the sender sees it.
        if fecha is not None and fecha.strip() and parse_fecha(fecha) is None:
            raise CallbackRejected(400, "fecha_actualizacion must be YYYY-mm-dd hh:mm:ss")
        return "status", tuple(params.get(n) for n in STATUS_FIELDS)
    if is_inbound:
        missing = [n for n in ("msg", "phone") if n not in params]
        if not _present(params, "phone") and "phone" not in missing:
            missing.append("phone")
        if missing:
            raise CallbackRejected(400, f"inbound callback without {' and '.join(missing)}")
        return "inbound", tuple(params.get(n) for n in INBOUND_FIELDS)
    raise CallbackRejected(
        400,
        "not a callback: a status callback needs id and estatus, an inbound one msg and phone",
    )


def event_key(kind: str, values: Sequence[str | None]) -> str:
    """The identity of a callback: a hash of its kind and raw values (not its arrival time).

    A repeated callback (the provider retrying) has the same key; readers keep the first.

    Examples
    --------
    >>> event_key("inbound", ["Hola", "584121234567", None, None])[:8]
    'd18c5790'
    """
    payload = json.dumps([kind, *values], ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).hexdigest()


def derive_status(
    values: Sequence[str | None],
) -> tuple[int | None, str | None, dt.datetime | None, str | None, str | None, str | None]:
    """Typed status columns from raw values: message_id, status, updated_at (naive local),
    user, detail, line. Never raises: what cannot be typed becomes None."""
    raw_id, estatus, fecha, usuario, detalle = values
    message_id = None
    if raw_id is not None and _ID.fullmatch(raw_id.strip()):
        message_id = int(raw_id.strip())
    status = STATUS_NAMES.get(estatus.strip()) if estatus is not None else None
    # docs/protocol.md §2: on success detalle is the dispatching line; on failure "ERROR EN ENVIO".
    line = normalise_line(detalle) if status == "delivered" else None
    return message_id, status, parse_fecha(fecha), usuario, detalle, line


def derive_inbound(
    values: Sequence[str | None],
) -> tuple[str | None, str | None, str | None, str | None]:
    """Typed inbound columns from raw values: text, phone, line, email. Never raises."""
    msg, phone, linea, email = values
    return msg, normalise_line(phone), normalise_line(linea), email
