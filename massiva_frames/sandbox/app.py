"""The sandbox's WSGI application: routing, parameter decoding, XML, faults.

Written on its own, without the package's client-side encoder or parser, so a bug on
one side cannot hide behind the same bug on the other (docs/architecture.md, sandbox).
"""

from __future__ import annotations

import codecs
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from .faults import Fault, FaultPlan
from .state import RequestRecord, SandboxState, SendOutcome

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "CREDIT_PATH",
    "SEND_PATH",
    "DropConnection",
    "SandboxApp",
    "credit_xml",
    "decode_params",
    "send_xml",
    "xml_attr",
]

logger = logging.getLogger("massiva_frames.sandbox")

SEND_PATH = "/webservices/SendSms"
CREDIT_PATH = "/webservices/obtenerCreditoDisponible"
_ROUTES = {SEND_PATH: "send", CREDIT_PATH: "credits"}
_LATIN1 = {"iso-8859-1", "iso8859-1", "latin-1", "latin1", "l1", "cp1252", "windows-1252"}
_POLL = 0.05


class DropConnection(Exception):  # noqa: N818 - a signal, not an error
    """Raised by the application to close the TCP connection without any response."""


# -- XML -------------------------------------------------------------------------------
def _clean(value: str) -> str:
    # Characters XML 1.0 cannot carry are echoed as U+FFFD (the record keeps them).
    if value.isprintable():
        return value
    out = []
    for ch in value:
        o = ord(ch)
        legal = (
            o in (0x9, 0xA, 0xD)
            or 0x20 <= o <= 0xD7FF
            or 0xE000 <= o <= 0xFFFD
            or 0x10000 <= o <= 0x10FFFF
        )
        out.append(ch if legal else "\ufffd")
    return "".join(out)


_ATTR_SPECIAL = re.compile('[&<>"]')


def xml_text(value: str) -> str:
    """Escape ``value`` for XML character data."""
    return _clean(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def xml_attr(value: str) -> str:
    """Escape ``value`` for a double-quoted XML attribute (whitespace kept as refs).

    Examples
    --------
    >>> xml_attr('a "b" & <c>\\n')
    'a &quot;b&quot; &amp; &lt;c&gt;&#10;'
    """
    if value.isprintable() and _ATTR_SPECIAL.search(value) is None:
        return value  # phones, sids, most texts: 1,500 values per 500-phone answer
    return (
        xml_text(value)
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
    )


# ASCII characters xml_attr changes: the non-printable ones and the four specials.
_ASCII_UNSAFE = bytes([*range(0x20), 0x7F]) + b'&<>"'
# A Celular is (id, sid, status, num_celular, texto): the %s fill in that order.
_CELULAR = '    <celular id="%s" sid="%s" status="%s" num_celular="%s" texto="%s"/>\n'
_ATTR_VALUES = itemgetter(1, 3, 4)  # sid, num_celular, texto


def _plain(value: str) -> bool:
    """True when ``xml_attr(value) == value`` (and so for every part of ``value``)."""
    if value.isascii():
        return len(value.encode("ascii").translate(None, _ASCII_UNSAFE)) == len(value)
    return value.isprintable() and _ATTR_SPECIAL.search(value) is None


def send_xml(outcome: SendOutcome) -> bytes:
    """Write a SendSms answer like the provider's sample (docs/protocol.md §1)."""
    parts = [
        "<respuesta>\n",
        f"  <mensaje>{xml_text(outcome.mensaje)}</mensaje>\n",
        f"  <status>{outcome.status}</status>\n",
    ]
    cels = outcome.celulares
    if cels:
        parts.append("  <telefonos>\n")
        if _plain("".join(chain.from_iterable(map(_ATTR_VALUES, cels)))):
            # The usual answer: nothing to escape, 500 entries formatted in C.
            parts.append("".join(map(_CELULAR.__mod__, cels)))
        else:
            for c in cels:
                parts.append(
                    f'    <celular id="{c.id}" sid="{xml_attr(c.sid)}" status="{c.status}" '
                    f'num_celular="{xml_attr(c.num_celular)}" texto="{xml_attr(c.texto)}"/>\n'
                )
        parts.append("  </telefonos>\n")
    parts.append("</respuesta>\n")
    return "".join(parts).encode("utf-8")


def credit_xml(creditos: int, mensaje: str) -> bytes:
    """Write a credit answer like the provider's sample (docs/protocol.md §4)."""
    return (
        "<respuesta>\n"
        f"  <creditos>{creditos}</creditos>\n"
        f"  <mensaje>{xml_text(mensaje)}</mensaje>\n"
        "</respuesta>\n"
    ).encode()


def _html(status: str, detail: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html><head><title>" + xml_text(status) + "</title></head>"
        "<body><h1>" + xml_text(status) + "</h1><p>" + xml_text(detail) + "</p></body></html>\n"
    ).encode()


# -- parameters --------------------------------------------------------------------------
def _charset(content_type: str) -> str | None:
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower() or None
    return None


# Undocumented (pickle's STRING opcode decoder): without it, parse_qsl does the work.
_escape_decode: Callable[[bytes], tuple[bytes, int]] | None = getattr(codecs, "escape_decode", None)


def _unquote(value: bytes) -> bytes:
    # '%XY' -> the byte 0xXY in one pass in C: the escapes become the \xXY of a bytes
    # literal (backslashes doubled first), which codecs.escape_decode (the decoder
    # pickle uses for its STRING opcode) reads. A '%' without two hex digits after it
    # makes it raise ValueError; parse_qsl keeps such a '%' as it is, so the caller
    # goes the slow way then.
    if b"%" not in value:
        return value
    if _escape_decode is None:
        raise ValueError("no escape_decode")
    return _escape_decode(value.replace(b"\\", b"\\\\").replace(b"%", b"\\x"))[0]


def _raw_pairs(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Split and percent-decode a query or form body to bytes, as ``parse_qsl`` would.

    ``keep_blank_values=True``: a key without '=' or with an empty value maps to ''.
    """
    try:
        out = []
        for piece in raw.split(b"&"):
            if piece:
                key, _, value = piece.partition(b"=")
                out.append((_unquote(key.replace(b"+", b" ")), _unquote(value.replace(b"+", b" "))))
        return out
    except ValueError:
        # A stray '%': parse_qsl itself (four times the CPU on a 500-phone body).
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


def _pairs(raw: bytes, charset: str) -> tuple[list[tuple[str, str]], str]:
    # Percent-decode to bytes first, then decode the bytes with the declared charset;
    # raw non-ASCII bytes (the PHP sample's unencoded body) go through the same path.
    as_bytes = _raw_pairs(raw)
    try:
        return [(k.decode(charset), v.decode(charset)) for k, v in as_bytes], charset
    except (UnicodeDecodeError, LookupError):
        # Undeclared or wrong charset: fall back to ISO-8859-1, which never fails.
        decoded = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in as_bytes]
        return decoded, "latin-1"


def decode_params(environ: Mapping[str, Any]) -> tuple[dict[str, str], str]:
    """Decode the query string and a form body into one dict (the body wins).

    Returns the parameters and the charset used. UTF-8 unless the Content-Type says
    ISO-8859-1 (or cp1252); undecodable UTF-8 falls back to ISO-8859-1. As in PHP, a
    repeated key keeps its last value.
    """
    params: dict[str, str] = {}
    # PEP 3333: QUERY_STRING is the raw bytes read as latin-1.
    query = str(environ.get("QUERY_STRING", "")).encode("latin-1")
    used = "utf-8"
    if query:
        pairs, used = _pairs(query, "utf-8")
        params.update(pairs)
    length_text = str(environ.get("CONTENT_LENGTH") or "0")
    length = int(length_text) if length_text.isdigit() else 0
    if length:
        body: bytes = environ["wsgi.input"].read(length)
        content_type = str(environ.get("CONTENT_TYPE", ""))
        kind = content_type.split(";")[0].strip().lower()
        if kind in ("", "application/x-www-form-urlencoded"):
            declared = _charset(content_type) or "utf-8"
            charset = "latin-1" if declared in _LATIN1 else declared
            pairs, used = _pairs(body, charset)
            params.update(pairs)
    return params, used


# -- the application ---------------------------------------------------------------------
class SandboxApp:
    """WSGI application serving ``/webservices/SendSms`` and ``obtenerCreditoDisponible``.

    Parameters
    ----------
    state, faults
        The sandbox's books and armed faults.
    on_accept
        Called with the ids of the messages a request accepted (schedules callbacks).
    stop
        Set when the server stops: ends hangs and latencies early.
    hang_seconds
        Upper bound of a ``hang`` fault.
    max_url_length
        GET URLs longer than this are answered 414 (the provider's 2048 bound); None
        disables the check.
    """

    def __init__(
        self,
        state: SandboxState,
        faults: FaultPlan,
        *,
        on_accept: Callable[[tuple[int, ...]], None],
        stop: threading.Event,
        hang_seconds: float = 60.0,
        max_url_length: int | None = 2048,
    ) -> None:
        self.state = state
        self.faults = faults
        self.on_accept = on_accept
        self.stop = stop
        self.hang_seconds = hang_seconds
        self.max_url_length = max_url_length

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        path = str(environ.get("PATH_INFO", ""))
        rec = RequestRecord(
            request_no=self.state.next_request_no(),
            received_at=datetime.now(UTC),
            method=method,
            path=path,
        )
        self.state.log_request(rec)
        route = _ROUTES.get(path.rstrip("/"))
        if route is None:
            return self._reply(rec, start_response, "404 Not Found", _html("404 Not Found", path))
        if method not in ("GET", "POST"):
            return self._reply(
                rec,
                start_response,
                "405 Method Not Allowed",
                _html("405 Method Not Allowed", method),
                [("Allow", "GET, POST")],
            )
        query = str(environ.get("QUERY_STRING", ""))
        if method == "GET":
            host = str(environ.get("HTTP_HOST", ""))
            rec.url_length = len(f"http://{host}{path}") + (len(query) + 1 if query else 0)
            if self.max_url_length is not None and rec.url_length > self.max_url_length:
                # docs/protocol.md §1.2: "Límite máximo de caracteres de la URL: 2048".
                status = "414 Request-URI Too Long"
                return self._reply(rec, start_response, status, _html(status, "URL > 2048"))
        params, rec.charset = decode_params(environ)
        usuario = params.get("usuario")
        rec.usuario = usuario.strip() if usuario else usuario
        if route == "send":
            rec.n_phones = len([p for p in params.get("telefonos", "").split(";") if p.strip()])
            rec.n_texts = len(params["texto"].split("|")) if params.get("texto") else 0
        fault = self.faults.draw()
        rec.fault = fault.name if fault else None
        return self._serve(route, params, fault, rec, environ, start_response)

    def _reply(
        self,
        rec: RequestRecord,
        start_response: StartResponse,
        status: str,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
        content_type: str = "text/html; charset=utf-8",
    ) -> list[bytes]:
        rec.http_status = int(status.split()[0])
        start_response(
            status,
            [("Content-Type", content_type), ("Content-Length", str(len(body))), *(headers or [])],
        )
        return [body]

    def _serve(
        self,
        route: str,
        params: dict[str, str],
        fault: Fault | None,
        rec: RequestRecord,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> list[bytes]:
        name = fault.name if fault else None
        opts: dict[str, Any] = fault.opts if fault else {}
        if name == "latency":
            if self._held(opts.get("gate"), float(opts["seconds"])):
                raise DropConnection("sandbox stopping")
        elif name in ("http503", "http429"):
            # Refusals: the request is not processed, so a retry cannot duplicate.
            status = "503 Service Unavailable" if name == "http503" else "429 Too Many Requests"
            extra = []
            if opts.get("retry_after") is not None:
                extra.append(("Retry-After", str(opts["retry_after"])))
            return self._reply(rec, start_response, status, _html(status, "retry later"), extra)
        elif opts.get("before"):
            if name == "reset":
                rec.http_status = 0
                raise DropConnection("reset before processing")
            status = "500 Internal Server Error" if name == "http500" else "502 Bad Gateway"
            return self._reply(rec, start_response, status, _html(status, "before processing"))

        if route == "send":
            outcome = self.state.send(params, request_no=rec.request_no)
            rec.api_status = outcome.status
            rec.accepted = len(outcome.accepted_ids)
            rec.recorded = bool(outcome.accepted_ids)
            if outcome.accepted_ids:
                self.on_accept(outcome.accepted_ids)
            body = send_xml(outcome)
        else:
            creditos, mensaje = self.state.credits_for(params)
            rec.api_status = creditos
            body = credit_xml(creditos, mensaje)

        xml_type = "text/xml; charset=utf-8"
        if name in ("http500", "http502"):
            status = "500 Internal Server Error" if name == "http500" else "502 Bad Gateway"
            return self._reply(rec, start_response, status, _html(status, "after processing"))
        if name == "reset":
            rec.http_status = 0
            raise DropConnection("reset after processing")
        if name == "hang":
            rec.http_status = 0
            self._hang(environ, opts.get("seconds"))
            raise DropConnection("hang over")
        if name == "truncated":
            # Valid HTTP, a well-formed start of the XML, cut in the middle.
            return self._reply(
                rec, start_response, "200 OK", body[: len(body) // 2], None, xml_type
            )
        if name == "html":
            page = _html("Error", "Fatal error: Maximum execution time exceeded")
            return self._reply(rec, start_response, "200 OK", page)
        return self._reply(rec, start_response, "200 OK", body, None, xml_type)

    def _held(self, gate: threading.Event | None, seconds: float) -> bool:
        """Wait ``seconds``, or until ``gate`` is set (at most ``seconds``); True if stopping."""
        if gate is None:
            return self.stop.wait(seconds)
        deadline = time.monotonic() + seconds
        while not gate.is_set() and not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            gate.wait(min(left, _POLL))
        return self.stop.is_set()

    def _hang(self, environ: WSGIEnvironment, seconds: float | None) -> None:
        limit = self.hang_seconds if seconds is None else float(seconds)
        deadline = time.monotonic() + limit
        gone = environ.get("waitress.client_disconnected")
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            # waitress notices a closed client while a request runs because the
            # channel reads ahead (channel_request_lookahead): free the thread then.
            if callable(gone) and gone():
                return
            self.stop.wait(min(left, _POLL))
