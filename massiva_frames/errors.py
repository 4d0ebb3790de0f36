"""The exception tree of massiva-frames, drawn once.

::

    MassivaError
    ├── APIError                    the provider answered with an error status (docs/protocol.md §1)
    │   ├── NothingSentError        0   nothing sent: check texts and phones
    │   ├── MissingFieldsError      -2, -3
    │   └── AccountError            account-level: a send run stops on these
    │       ├── AuthenticationError -1
    │       ├── NoActivePlanError   -4
    │       └── InsufficientCreditsError  -5 (company), -6 (user), or the pre-flight check
    ├── TransportError              HTTP did not give a usable answer
    │   ├── ConnectError            never reached the server (after connect-phase retries)
    │   ├── RateLimitedError        429 / 503 + Retry-After, still refused after the retries
    │   └── AmbiguousSendError      the request may have reached the server: never resent
    │       └── HTTPStatusError     the server answered 5xx/4xx to a request it received
    ├── ProtocolError               the body is not the expected XML (also "may have reached")
    │   └── ResponseMismatchError   the <celular> entries do not match the request
    ├── URLTooLongError             a GET request would exceed 2048 characters
    ├── InputError                  a wrong argument (missing column, empty frame, ...)
    └── JournalError                the send journal cannot be used; nothing more was sent
        ├── JournalBusyError        another process is sending from it (also InputError)
        ├── JournalFullError        its disk is full
        ├── JournalReadOnlyError    its file, folder or file system cannot be written
        ├── JournalCorruptError     damaged: restore a copy or rebuild from the provider
        ├── NotAJournalError        the file is not a massiva-frames journal (also InputError)
        ├── JournalVersionError     written by a newer massiva-frames (also InputError)
        └── JournalUnavailableError its database (PostgreSQL) cannot be reached or went away

Every exception's message is built from masked values: a password handed to the client
never appears in ``str()``, ``repr()`` or ``args`` of any of these.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "APIError",
    "AccountError",
    "AmbiguousSendError",
    "AuthenticationError",
    "ConnectError",
    "HTTPStatusError",
    "InputError",
    "InsufficientCreditsError",
    "JournalBusyError",
    "JournalCorruptError",
    "JournalError",
    "JournalFullError",
    "JournalReadOnlyError",
    "JournalVersionError",
    "JournalUnavailableError",
    "MassivaError",
    "MissingFieldsError",
    "NoActivePlanError",
    "NotAJournalError",
    "NothingSentError",
    "ProtocolError",
    "RateLimitedError",
    "ResponseMismatchError",
    "TransportError",
    "URLTooLongError",
    "error_for_status",
    "mask",
]

MASK = "***"


def _secret_forms(secret: str) -> set[str]:
    """The shapes a secret takes on the wire or in an echoed page."""
    import json
    from html import escape
    from urllib.parse import quote, quote_plus

    forms = {secret, escape(secret, quote=False), escape(secret, quote=True)}
    # A JSON error page (PHP's json_encode, a proxy) echoes it \u-escaped.
    forms |= {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    forms.add(ascii(secret)[1:-1])  # escaped: %a, or the repr of an unprintable one
    # docs/protocol.md §5: the request encoding is configurable, so mask every usual byte form.
    for encoding in ("utf-8", "iso-8859-1", "cp1252"):
        try:
            forms.add(repr(secret.encode(encoding))[2:-1])  # as printed inside b'...'
            forms.add(quote(secret, safe="", encoding=encoding))
            forms.add(quote_plus(secret, safe="", encoding=encoding))
            forms.add(quote(secret, safe="@", encoding=encoding))
        except UnicodeEncodeError:
            continue
    return {form for form in forms if form}


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """Return ``text`` with every non-empty secret replaced by ``***``.

    Secrets are also masked in their URL-encoded forms (``quote`` and ``quote_plus``, in
    UTF-8 and Latin-1, percent escapes in either case), HTML-escaped and JSON-escaped, so
    a password echoed back inside a query string or an error page is caught too.

    Examples
    --------
    >>> mask("GET /SendSms?usuario=a&clave=p%40ss%3B", ["p@ss;"])
    'GET /SendSms?usuario=a&clave=***'
    """
    import re

    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms |= _secret_forms(str(secret))
    if not forms or not text:
        return text
    # Longest first, so a form never leaves a tail of a longer one behind; case-blind,
    # since percent escapes may come back as %3b as well as %3B.
    pattern = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    return re.sub(pattern, MASK, text, flags=re.IGNORECASE)


class MassivaError(Exception):
    """Root of every error raised by massiva-frames."""


class APIError(MassivaError):
    """The provider answered with an error ``status`` (docs/protocol.md §1).

    Attributes
    ----------
    code : int
        The request-level ``status`` the provider returned.
    mensaje : str
        The provider's own (Spanish) message, as received.
    explanation : str
        What the code means, in English.
    """

    #: default English explanation, per class
    explanation_default = "the provider reported an error"

    def __init__(self, code: int, mensaje: str = "", explanation: str | None = None) -> None:
        self.code = code
        self.mensaje = mensaje
        self.explanation = explanation or _EXPLANATIONS.get(code, self.explanation_default)
        super().__init__(code, mensaje, self.explanation)

    def __str__(self) -> str:
        text = f"Massiva status {self.code}: {self.explanation}"
        if self.mensaje:
            text += f" (provider said: {self.mensaje!r})"
        return text


class NothingSentError(APIError):
    """Status 0: nothing was sent; check the texts' lengths and the phones."""


class MissingFieldsError(APIError):
    """Status -2 or -3: usuario, clave, telefonos or texto missing; nothing sent."""


class AccountError(APIError):
    """An account-level error: a send run stops when it meets one."""


class AuthenticationError(AccountError):
    """Status -1: wrong user or password."""


class NoActivePlanError(AccountError):
    """Status -4: the company has no active SMS plan."""


class InsufficientCreditsError(AccountError):
    """Status -5 (company) or -6 (user) out of credits, or the pre-flight check failed.

    When raised by the pre-flight check, ``needed`` and ``available`` say both numbers.
    """

    def __init__(
        self,
        code: int,
        mensaje: str = "",
        explanation: str | None = None,
        *,
        needed: int | None = None,
        available: int | None = None,
    ) -> None:
        self.needed = needed
        self.available = available
        if explanation is None and needed is not None and available is not None:
            explanation = (
                f"the send needs {needed} credits but the account has {available}; "
                "nothing was sent (allow_partial=True sends what fits)"
            )
        super().__init__(code, mensaje, explanation)


_EXPLANATIONS: dict[int, str] = {
    0: "nothing was sent: check the texts' lengths and the phone numbers",
    -1: "authentication failed: wrong user or password",
    -2: "fields missing (usuario, clave, telefonos, texto): nothing was sent",
    -3: "telefonos and texto are mandatory: nothing was sent",
    -4: "the company has no active SMS plan",
    -5: "the company has no SMS credits left",
    -6: "the user has no SMS credits left",
}

_CLASSES: dict[int, type[APIError]] = {
    0: NothingSentError,
    -1: AuthenticationError,
    -2: MissingFieldsError,
    -3: MissingFieldsError,
    -4: NoActivePlanError,
    -5: InsufficientCreditsError,
    -6: InsufficientCreditsError,
}


def error_for_status(code: int, mensaje: str = "") -> APIError:
    """Return the exception instance for a request-level ``status`` of 0 or below."""
    cls = _CLASSES.get(code, APIError)
    return cls(code, mensaje)


class TransportError(MassivaError):
    """HTTP did not give a usable answer.

    ``may_have_been_received`` says whether the provider may have acted on the request:
    when true, its messages may or may not have gone out, and the rows become ``unknown``.
    """

    may_have_been_received = False

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        self.http_status = http_status
        super().__init__(message)


class ConnectError(TransportError):
    """The request never reached the server (connect-phase failure, retries exhausted)."""


class RateLimitedError(TransportError):
    """The server kept refusing the request with 429 or 503 + Retry-After."""


class AmbiguousSendError(TransportError):
    """The request may have reached the server: the messages may or may not have gone out.

    Raised for a read timeout, or a connection dropped after the request was sent. Never
    retried automatically.
    """

    may_have_been_received = True


class HTTPStatusError(AmbiguousSendError):
    """The server received the request and answered an HTTP error status."""


class ProtocolError(MassivaError):
    """The response is not the expected XML.

    Attributes
    ----------
    http_status : int or None
        The HTTP status of the response.
    excerpt : str
        A short excerpt of the body, credentials masked.
    """

    may_have_been_received = True

    def __init__(self, message: str, *, http_status: int | None = None, excerpt: str = "") -> None:
        self.http_status = http_status
        self.excerpt = excerpt
        text = message
        if http_status is not None:
            text += f" (HTTP {http_status})"
        if excerpt:
            text += f": {excerpt!r}"
        super().__init__(text)


class ResponseMismatchError(ProtocolError):
    """The response's ``celular`` entries do not match the request or contradict each other.

    Entries sharing an id, a negative or non-numeric id, or an overall ``status`` that
    disagrees with the entries (docs/protocol.md §1): which messages went out is unknown.
    """


class URLTooLongError(MassivaError, ValueError):
    """A GET request's URL would exceed the provider's 2048-character bound.

    See docs/protocol.md §1.
    """


class InputError(MassivaError, ValueError):
    """A wrong argument: a missing column, an unknown template field, an empty frame..."""


class JournalError(MassivaError):
    """The send journal cannot be used; the message says why and what to do.

    A send or dispatch that meets one stops before its next request: what the journal
    recorded is kept, and messages whose answer could not be recorded read ``unknown``
    on the next run (never resent). ``path`` is the journal's path as given.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class JournalBusyError(JournalError, InputError):
    """Another process is sending from the same journal right now (or holds it locked)."""


class JournalFullError(JournalError):
    """The disk (or quota) holding the journal is full: the journal could not be written."""


class JournalReadOnlyError(JournalError):
    """The journal's file, its folder or its file system cannot be written."""


class JournalCorruptError(JournalError):
    """The journal is damaged: it can no longer say which messages were sent.

    Nothing is sent from a damaged journal. Restore a copy of the journal from before
    the damage, or rebuild what was sent from the provider's records; never start over
    with a new journal (every row would be sent again).
    """


class NotAJournalError(JournalError, InputError):
    """The file is not a massiva-frames journal (another program's database or file)."""


class JournalVersionError(JournalError, InputError):
    """The journal was written by a newer massiva-frames: upgrade to use it."""


class JournalUnavailableError(JournalError):
    """The journal's database cannot be reached, or went away during a run.

    A send or dispatch that meets it stops: what was answered before is kept in the
    journal, requests under way are in doubt (``unknown``). The message names the
    database (host, port, database, schema), never the password.
    """
