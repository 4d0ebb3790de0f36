"""The Massiva wire protocol: request parameters and response XML (API.md §1, §4).

Pure functions, no I/O. The sandbox implements the server side of the same protocol on
its own, so a bug here cannot hide behind a matching bug there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from lxml import etree

from .errors import ProtocolError, error_for_status, mask

__all__ = [
    "DEFAULT_BASE_URL",
    "MAX_RESPONSE_BYTES",
    "MAX_TEXT_LENGTH",
    "MAX_URL_LENGTH",
    "PHONE_SEPARATOR",
    "TEXT_SEPARATOR",
    "Celular",
    "CreditResponse",
    "SendResponse",
    "build_credit_params",
    "build_send_params",
    "encode_query",
    "parse_credit_response",
    "parse_send_response",
]

#: API.md §1. The credit query (§4) lives under the same ``/webservices`` path.
DEFAULT_BASE_URL = "http://www.sistema.massivamovil.com/webservices"
SEND_PATH = "SendSms"
CREDIT_PATH = "obtenerCreditoDisponible"
PHONE_SEPARATOR = ";"  # API.md §1: phones are joined with ';'
TEXT_SEPARATOR = "|"  # API.md §1: paired texts are joined with '|'
MAX_TEXT_LENGTH = 160
MAX_URL_LENGTH = 2048
#: 500 <celular> entries take ~90 KB; anything far beyond that is not a Massiva answer.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
EXCERPT_CHARS = 200


@dataclass(frozen=True, slots=True)
class Celular:
    """One ``<celular>`` entry of a SendSms response, in request order."""

    id: int | None
    sid: str | None
    status: int
    num_celular: str
    texto: str

    @property
    def accepted(self) -> bool:
        """``status == 0``: accepted, in process (API.md §1)."""
        return self.status == 0


@dataclass(frozen=True, slots=True)
class SendResponse:
    """A parsed SendSms response: request ``status`` and ``mensaje``, and the entries."""

    status: int
    mensaje: str
    celulares: tuple[Celular, ...]

    @property
    def accepted_count(self) -> int:
        """Number of entries with status 0."""
        return sum(1 for c in self.celulares if c.accepted)

    @property
    def ok(self) -> bool:
        """True when the provider accepted at least one message (status > 0)."""
        return self.status > 0

    def raise_for_status(self) -> None:
        """Raise the mapped :class:`~massiva_frames.errors.APIError` if status <= 0."""
        if self.status <= 0:
            raise error_for_status(self.status, self.mensaje)


@dataclass(frozen=True, slots=True)
class CreditResponse:
    """A parsed ``obtenerCreditoDisponible`` response (API.md §4)."""

    creditos: int
    mensaje: str


def build_send_params(
    usuario: str,
    clave: str,
    phones: Sequence[str],
    texts: str | Sequence[str],
    group: str | None = None,
) -> dict[str, str]:
    """Build the SendSms parameters for one batch (API.md §1).

    Parameters
    ----------
    usuario, clave : str
        The account's login and password.
    phones : sequence of str
        Normalised 12-digit phones; joined with ``;``.
    texts : str or sequence of str
        One text for every phone, or one text per phone (joined with ``|``; the counts
        must be equal).
    group : str, optional
        The contact group (``grupo``) for phones not yet in the address book.

    Examples
    --------
    >>> build_send_params("a@b.c", "pw", ["584141234567", "584241234567"], "Hola")["telefonos"]
    '584141234567;584241234567'
    """
    phones = list(phones)
    if not phones:
        raise ValueError("a batch needs at least one phone")
    for phone in phones:
        if PHONE_SEPARATOR in phone or not phone:
            raise ValueError(f"invalid phone in batch: {phone!r}")
    if isinstance(texts, str):
        texto = texts
        parts = [texts]
    else:
        parts = list(texts)
        if len(parts) == 1:
            texto = parts[0]
        elif len(parts) != len(phones):
            raise ValueError(
                f"paired texts need one text per phone: {len(parts)} texts, {len(phones)} phones"
            )
        else:
            texto = TEXT_SEPARATOR.join(parts)
    for part in parts:
        if TEXT_SEPARATOR in part:
            raise ValueError("a text may not contain the separator '|' (API.md §1)")
        if not part:
            raise ValueError("a text may not be empty")
    params = {
        "usuario": usuario,
        "clave": clave,
        "telefonos": PHONE_SEPARATOR.join(phones),
        "texto": texto,
    }
    if group:
        params["grupo"] = group
    return params


def build_credit_params(usuario: str, clave: str) -> dict[str, str]:
    """Build the ``obtenerCreditoDisponible`` parameters (API.md §4)."""
    return {"usuario": usuario, "clave": clave}


def encode_query(params: dict[str, str], encoding: str = "utf-8") -> str:
    """Form-encode parameters exactly as the client sends them (GET query or POST body).

    Batch planning uses the same function to bound a GET URL's length exactly.
    """
    return urlencode(params, encoding=encoding)


_DECL_RE = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _parser() -> etree.XMLParser:
    # Hardened: no entities resolved, no DTD loaded, no network, no huge trees.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def _excerpt(body: bytes, secrets: Iterable[str | None]) -> str:
    text = body[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    text = " ".join(text.split())[:EXCERPT_CHARS]
    return mask(text, secrets)


def _root(
    body: bytes | str,
    *,
    expected: str,
    http_status: int | None,
    secrets: Iterable[str | None],
) -> etree._Element:
    secrets = tuple(secrets)
    if isinstance(body, str):
        body = body.encode("utf-8")
    if len(body) > MAX_RESPONSE_BYTES:
        raise ProtocolError(
            f"response body too large ({len(body)} bytes, bound {MAX_RESPONSE_BYTES})",
            http_status=http_status,
            excerpt=_excerpt(body, secrets),
        )
    if not body.strip():
        raise ProtocolError("empty response body", http_status=http_status)
    if b"<!DOCTYPE" in body[:4096].upper() or b"<!ENTITY" in body[:65536].upper():
        raise ProtocolError(
            "response carries a DTD or entity declarations; refused",
            http_status=http_status,
            excerpt=_excerpt(body, secrets),
        )
    match = _DECL_RE.match(body)
    try:
        if match is None:
            # API.md §5: no declaration means UTF-8, falling back to ISO-8859-1.
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = body.decode("iso-8859-1")
            root = etree.fromstring(text.lstrip("\ufeff").encode("utf-8"), _parser())
        else:
            root = etree.fromstring(body, _parser())
    except (etree.XMLSyntaxError, LookupError, ValueError) as exc:
        raise ProtocolError(
            f"response is not well-formed XML ({type(exc).__name__})",
            http_status=http_status,
            excerpt=_excerpt(body, secrets),
        ) from exc
    if not isinstance(root.tag, str) or root.tag != "respuesta":
        raise ProtocolError(
            f"expected a <{expected}> document, got <{root.tag}>",
            http_status=http_status,
            excerpt=_excerpt(body, secrets),
        )
    return root


def _int(value: str | None, what: str, http_status: int | None) -> int:
    try:
        return int((value or "").strip())
    except ValueError:
        raise ProtocolError(
            f"{what} is not an integer: {str(value)[:40]!r}", http_status=http_status
        ) from None


def _child_text(root: etree._Element, tag: str) -> str | None:
    node = root.find(tag)
    if node is None:
        return None
    return "".join(str(part) for part in node.itertext())


def parse_send_response(
    body: bytes | str,
    *,
    http_status: int | None = 200,
    secrets: Iterable[str | None] = (),
) -> SendResponse:
    """Parse a SendSms XML response into a :class:`SendResponse` (API.md §1).

    Raises :class:`~massiva_frames.errors.ProtocolError` when the body is not the
    expected XML (HTML page, truncated, empty, oversized, entities). Error statuses
    (<= 0) are returned, not raised: call :meth:`SendResponse.raise_for_status`.

    Examples
    --------
    >>> r = parse_send_response(b'<respuesta><mensaje>ok</mensaje><status>1</status>'
    ...     b'<telefonos><celular id="7" sid="x" status="0" num_celular="584141234567"'
    ...     b' texto="Hola"/></telefonos></respuesta>')
    >>> r.status, r.celulares[0].id
    (1, 7)
    """
    root = _root(body, expected="respuesta", http_status=http_status, secrets=secrets)
    status_text = _child_text(root, "status")
    if status_text is None:
        raise ProtocolError(
            "SendSms response has no <status>",
            http_status=http_status,
            excerpt=_excerpt(body if isinstance(body, bytes) else body.encode(), secrets),
        )
    status = _int(status_text, "<status>", http_status)
    mensaje = (_child_text(root, "mensaje") or "").strip()
    celulares: list[Celular] = []
    telefonos = root.find("telefonos")
    if telefonos is not None:
        for node in telefonos.iterfind("celular"):
            raw_id = node.get("id")
            sid = node.get("sid")
            celulares.append(
                Celular(
                    id=_int(raw_id, "celular id", http_status)
                    if raw_id not in (None, "", "N/A")
                    else None,
                    sid=None if sid in (None, "", "N/A") else sid,
                    status=_int(node.get("status"), "celular status", http_status),
                    num_celular=node.get("num_celular") or "",
                    texto=node.get("texto") or "",
                )
            )
    return SendResponse(status=status, mensaje=mensaje, celulares=tuple(celulares))


def parse_credit_response(
    body: bytes | str,
    *,
    http_status: int | None = 200,
    secrets: Iterable[str | None] = (),
) -> CreditResponse:
    """Parse an ``obtenerCreditoDisponible`` response (API.md §4).

    ``creditos == -1`` (missing fields or failed authentication) is returned as is; the
    client turns it into :class:`~massiva_frames.errors.AuthenticationError`.
    """
    root = _root(body, expected="respuesta", http_status=http_status, secrets=secrets)
    creditos = _child_text(root, "creditos")
    if creditos is None:
        raise ProtocolError(
            "credit response has no <creditos>",
            http_status=http_status,
            excerpt=_excerpt(body if isinstance(body, bytes) else body.encode(), secrets),
        )
    return CreditResponse(
        creditos=_int(creditos, "<creditos>", http_status),
        mensaje=(_child_text(root, "mensaje") or "").strip(),
    )
