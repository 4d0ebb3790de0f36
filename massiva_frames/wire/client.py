"""HTTP transport for the Massiva API (docs/protocol.md §1, §4): one pooled session, timeouts,
connect-phase retries, polite waits on refusals, credentials kept out of every message.

Every requests/urllib3 failure is translated in one place, :meth:`MassivaClient._translate`,
by exception type, into the tree of :mod:`massiva_frames.errors`.
"""

from __future__ import annotations

import codecs
import logging
import os
import random
import ssl
import time
from collections.abc import Iterator, Sequence
from email.utils import parsedate_to_datetime
from urllib.parse import quote_plus, urlsplit

import requests
import urllib3.exceptions as u3
from requests.utils import default_user_agent
from urllib3.util.retry import Retry

from .._version import __version__
from ..errors import (
    AmbiguousSendError,
    AuthenticationError,
    ConnectError,
    HTTPStatusError,
    InputError,
    MassivaError,
    ProtocolError,
    RateLimitedError,
    ResponseMismatchError,
    URLTooLongError,
    error_for_status,
    mask,
)
from .deadline import DeadlineAdapter, Exchange
from .masking import _install_log_mask, _MaskedBody, _MaskedText, _Secret
from .protocol import (
    CREDIT_PATH,
    DEFAULT_BASE_URL,
    MAX_RESPONSE_BYTES,
    MAX_URL_LENGTH,
    SEND_PATH,
    SendResponse,
    body_excerpt,
    build_credit_params,
    build_send_params,
    contradiction,
    encode_query,
    parse_credit_response,
    parse_send_response,
)

__all__ = ["ENV_BASE_URL", "ENV_CLAVE", "ENV_USUARIO", "MassivaClient"]

logger = logging.getLogger("massiva_frames.wire.client")

ENV_USUARIO = "MASSIVA_USUARIO"
ENV_CLAVE = "MASSIVA_CLAVE"
ENV_BASE_URL = "MASSIVA_BASE_URL"
#: the longest wait a Retry-After header may impose on one refusal
RETRY_AFTER_CAP = 30.0
_METHODS = ("GET", "POST")
_INVALID_REQUEST = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidHeader,
    u3.LocationValueError,  # a host urllib3 cannot parse (an empty or too long label)
)
_CHUNK = 64 * 1024
_IANA_CHARSETS = {"iso8859-1": "iso-8859-1", "cp1252": "windows-1252"}


def _setting(value: str | None, env: str, what: str) -> str:
    value = value if value is not None else os.environ.get(env)
    if not value:
        raise InputError(f"no Massiva {what}: pass it to MassivaClient or set {env}")
    return value


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: args, MaxRetryError.reason, __cause__, __context__."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 32:
        item = todo.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [a for a in item.args if isinstance(a, BaseException)]
        for attr in ("reason", "original_error", "__cause__", "__context__"):
            nested = getattr(item, attr, None)
            if isinstance(nested, BaseException):
                todo.append(nested)


class MassivaClient:
    """A thread-safe client for the Massiva SMS API.

    Parameters
    ----------
    usuario, clave : str, optional
        The account's login and password; default to the ``MASSIVA_USUARIO`` and
        ``MASSIVA_CLAVE`` environment variables. The password never appears in a repr,
        an exception or a log line.
    base_url : str, optional
        Defaults to ``MASSIVA_BASE_URL``, else the provider's documented URL.
    method : {"POST", "GET"}
        How batches are sent; POST keeps credentials out of URLs (docs/protocol.md §5).
    timeout : float or (connect, read) tuple
        Applied to every request; the read part also bounds reading a whole body.
    deadline : float or None
        The most one HTTP exchange may take, from connect to the last body byte, headers
        included (default 60 s; None: no bound beyond ``timeout``). When it passes the
        connection is shut down and the exchange raises
        :class:`~massiva_frames.errors.AmbiguousSendError`: the request may have been
        received, so its messages are ``unknown``, never resent. It bounds each exchange;
        waits for a 429 come between exchanges. Enforced at the socket on the client's own
        session; with a ``session`` passed in it is checked as the body arrives.
    connect_retries, backoff_factor
        Connect-phase failures (the request never left) are retried this many times,
        waiting ``backoff_factor * 2**n`` seconds; nothing else is retried blindly.
    max_refusals : int
        How many 429 (or 503 with Retry-After) refusals to wait out before
        :class:`~massiva_frames.errors.RateLimitedError`.
    encoding : str
        Request charset (docs/protocol.md §5: UTF-8 unless configured).
    session : requests.Session, optional
        Used as is (its adapters, proxies, certificates); the caller closes it.
    trust_env : bool
        Whether the client's own session honours proxy/netrc/CA-bundle environment
        variables. Off by default: an unnoticed ``HTTP_PROXY`` would route the password.
    pool_maxsize : int
        Connections kept per host; at least the number of threads sharing the client.

    Examples
    --------
    >>> with MassivaClient("demo@massiva.test", "demo", sb.base_url) as client:  # doctest: +SKIP
    ...     client.credits()
    ...     resp = client.send_batch(["584141234567", "584241234567"], "Hola")
    ...     [c.id for c in resp.celulares]
    1000
    [1, 2]
    """

    def __init__(
        self,
        usuario: str | None = None,
        clave: str | None = None,
        base_url: str | None = None,
        *,
        method: str = "POST",
        timeout: float | tuple[float, float] = (3.05, 30),
        deadline: float | None = 60.0,
        connect_retries: int = 3,
        backoff_factor: float = 0.2,
        max_refusals: int = 5,
        encoding: str = "utf-8",
        session: requests.Session | None = None,
        trust_env: bool = False,
        pool_maxsize: int = 16,
    ) -> None:
        if clave is not None:
            clave = _Secret(clave)  # this frame's locals, should the constructor raise
        self.usuario = _setting(usuario, ENV_USUARIO, "user")
        clave = self._clave = _Secret(_setting(clave, ENV_CLAVE, "password"))
        _install_log_mask(self._clave)
        url = (base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"base_url must be an http(s) URL, got {mask(url, [clave])!r}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise InputError("base_url may not carry a query, a fragment or credentials")
        self.base_url = url
        self.send_url = f"{url}/{SEND_PATH}"
        self.credit_url = f"{url}/{CREDIT_PATH}"
        self.method = self._check_method(method)
        if isinstance(timeout, tuple):
            self.timeout: tuple[float, float] = (float(timeout[0]), float(timeout[1]))
        else:
            self.timeout = (float(timeout), float(timeout))
        if not all(t > 0 for t in self.timeout):
            raise InputError(f"timeout must be positive seconds, got {timeout!r}")
        if deadline is not None and (
            isinstance(deadline, bool) or not isinstance(deadline, int | float) or not deadline > 0
        ):
            raise InputError(f"deadline must be positive seconds or None, got {deadline!r}")
        self.deadline = None if deadline is None else float(deadline)
        for name, value in (("connect_retries", connect_retries), ("max_refusals", max_refusals)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be an integer >= 0, got {value!r}")
        if backoff_factor < 0:
            raise InputError(f"backoff_factor must be >= 0, got {backoff_factor!r}")
        try:
            self.encoding = codecs.lookup(encoding).name
        except LookupError:
            raise InputError(f"unknown encoding {encoding!r}") from None
        # What the masked reprs hide: the password, and its exact form in a request.
        self._secrets: tuple[str, ...] = (self._clave,)
        try:
            self._secrets += (_Secret(quote_plus(clave, safe="", encoding=self.encoding)),)
        except UnicodeEncodeError:
            pass  # such a password is refused when a request is encoded
        self.connect_retries = connect_retries
        self.backoff_factor = float(backoff_factor)
        self.max_refusals = max_refusals
        self._random = random.Random()
        charset = _IANA_CHARSETS.get(self.encoding, self.encoding)
        self._post_headers = {
            "Content-Type": f"application/x-www-form-urlencoded; charset={charset}"
        }
        self._owns_session = session is None
        self._session = (
            session if session is not None else self._new_session(trust_env, pool_maxsize)
        )

    def _new_session(self, trust_env: bool, pool_maxsize: int) -> requests.Session:
        session = requests.Session()
        session.trust_env = trust_env  # no proxy lookups: also ~25% faster per request
        session.headers["User-Agent"] = f"massiva-frames/{__version__} {default_user_agent()}"
        # Only connect-phase failures are retried: the request provably never left.
        # read=False re-raises read errors as they are; POST is retried too (methods=None)
        # because a connection that was never made cannot have delivered anything.
        retry = Retry(
            total=self.connect_retries,
            connect=self.connect_retries,
            read=False,
            status=0,
            other=0,
            redirect=0,
            allowed_methods=None,
            backoff_factor=self.backoff_factor,
            raise_on_status=False,
            raise_on_redirect=False,
            respect_retry_after_header=False,
        )
        # DeadlineAdapter: plain HTTPAdapter whose sockets the exchange's deadline watches.
        adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    # -- public API --------------------------------------------------------------------
    def credits(self) -> int:
        """Return the SMS credits left to the user (docs/protocol.md §4).

        Raises :class:`~massiva_frames.errors.AuthenticationError` when the provider
        answers ``-1`` (missing fields or wrong user/password).

        Examples
        --------
        >>> client.credits()  # doctest: +SKIP
        907
        """
        params = build_credit_params(self.usuario, self._clave)
        # docs/protocol.md §4 documents GET only for the credit query.
        status, body = self._exchange("GET", self.credit_url, params, n_phones=0)
        resp = parse_credit_response(body, http_status=status, secrets=(self._clave,))
        if resp.creditos == -1:
            raise AuthenticationError(-1, resp.mensaje)
        return resp.creditos

    def send_batch(
        self,
        phones: Sequence[str],
        texts: str | Sequence[str],
        group: str | None = None,
        *,
        method: str | None = None,
    ) -> SendResponse:
        """Send one batch: one text to every phone, or one text per phone (docs/protocol.md §1).

        Returns the parsed response when ``status >= 0`` (status 0: every phone was
        rejected; see ``resp.celulares``). Raises
        :class:`~massiva_frames.errors.ResponseMismatchError` for an answer that
        contradicts itself (entries sharing an id, a negative or non-numeric id, a
        ``status`` that disagrees with the entries: see
        :func:`~massiva_frames.wire.protocol.contradiction`), the mapped
        :class:`~massiva_frames.errors.APIError` for ``status < 0``, and a
        :class:`~massiva_frames.errors.TransportError`,
        :class:`~massiva_frames.errors.ProtocolError` or
        :class:`~massiva_frames.errors.URLTooLongError` (before any I/O) otherwise.

        Examples
        --------
        >>> resp = client.send_batch(["584141234567", "584241234567"], ["Hola", "Chao"])
        ... # doctest: +SKIP
        >>> resp.status, [c.accepted for c in resp.celulares]  # doctest: +SKIP
        (2, [True, True])
        """
        verb = self.method if method is None else self._check_method(method)
        params = build_send_params(self.usuario, self._clave, phones, texts, group)
        n_phones = params["telefonos"].count(";") + 1
        status, body = self._exchange(verb, self.send_url, params, n_phones=n_phones)
        resp = parse_send_response(body, http_status=status, secrets=(self._clave,))
        problem = contradiction(resp)
        if problem is not None:
            # Checked before the status: an error status beside accepted entries must not
            # read as "nothing sent" (a re-run would send those messages again).
            raise ResponseMismatchError(
                f"the answer contradicts itself: {problem}; its messages may or may not "
                "have gone out",
                http_status=status,
            )
        if resp.status < 0:
            raise error_for_status(resp.status, resp.mensaje)
        return resp

    def get_url_length(
        self, phones: Sequence[str], texts: str | Sequence[str], group: str | None = None
    ) -> int:
        """The exact length of the GET URL for this batch (bound: 2048, docs/protocol.md §1).

        Examples
        --------
        >>> client.get_url_length(["584141234567"], "Hola")  # doctest: +SKIP
        115
        """
        params = build_send_params(self.usuario, self._clave, phones, texts, group)
        return len(self.send_url) + 1 + len(self._encode(params))

    def close(self) -> None:
        """Close the pooled connections (not those of a session passed in)."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> MassivaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        # getattr: a constructor that raised leaves a half-built `self` in its frame,
        # and debuggers and verbose tracebacks repr it.
        usuario, base_url, method = (
            getattr(self, name, None) for name in ("usuario", "base_url", "method")
        )
        return f"MassivaClient(usuario={usuario!r}, base_url={base_url!r}, method={method!r})"

    # -- transport ---------------------------------------------------------------------
    @staticmethod
    def _check_method(method: str) -> str:
        verb = str(method).upper()
        if verb not in _METHODS:
            raise InputError(f"method must be 'GET' or 'POST', got {method!r}")
        return verb

    def _encode(self, params: dict[str, str]) -> str:
        try:
            return encode_query(params, self.encoding)
        except UnicodeEncodeError:
            pass  # raised below, unchained: the encoder's frames hold the request
        bad = sorted(k for k, v in params.items() if not _encodable(v, self.encoding))
        raise InputError(f"parameter(s) {bad} cannot be encoded in {self.encoding}")

    def _exchange(
        self, method: str, url: str, params: dict[str, str], *, n_phones: int
    ) -> tuple[int, bytes]:
        """One logical request: waits out refusals; returns (HTTP status, body)."""
        target: str = url
        data: bytes | None = None
        headers: dict[str, str] | None = None
        if method == "GET":
            target = _MaskedText(f"{url}?{self._encode(params)}", self._secrets)
            if len(target) > MAX_URL_LENGTH:
                raise URLTooLongError(
                    f"the GET URL would be {len(target)} characters, over the provider's "
                    f"bound of {MAX_URL_LENGTH} (docs/protocol.md §1): send fewer phones, "
                    "or use POST"
                )
        else:
            # a pre-encoded body is ~3x faster than letting requests encode.
            headers = self._post_headers
            data = _MaskedBody(self._encode(params), self._secrets)
        path = urlsplit(url).path
        for refusal in range(self.max_refusals + 1):
            status, body, retry_after = self._once(method, target, data, headers, path, n_phones)
            refused = status == 429 or (status == 503 and retry_after is not None)
            if not refused:
                break
            if refusal == self.max_refusals:
                raise RateLimitedError(
                    f"{method} {path}: refused with HTTP {status} {refusal + 1} times "
                    f"(max_refusals={self.max_refusals})",
                    http_status=status,
                )
            delay = self._refusal_delay(retry_after, refusal)
            logger.info("%s %s refused (HTTP %d): waiting %.2f s", method, path, status, delay)
            time.sleep(delay)
        if not 200 <= status < 300:
            excerpt = body_excerpt(body, (self._clave,))
            raise HTTPStatusError(
                f"{method} {path}: HTTP {status}; the request may have been processed"
                + (f": {excerpt!r}" if excerpt else ""),
                http_status=status,
            )
        return status, body

    def _once(
        self,
        method: str,
        target: str,
        data: bytes | None,
        headers: dict[str, str] | None,
        path: str,
        n_phones: int,
    ) -> tuple[int, bytes, str | None]:
        """One HTTP exchange (plus urllib3's connect retries) within the deadline; body
        read with bounds."""
        start = time.monotonic()
        failure: BaseException | None = None
        error: MassivaError | None = None
        exchange = Exchange(self.deadline)
        try:
            with exchange:
                resp = self._session.request(
                    method,
                    target,
                    data=data,
                    headers=headers,
                    timeout=self.timeout,
                    stream=True,
                    # A redirected POST would lose its body or carry the password elsewhere.
                    allow_redirects=False,
                )
                try:
                    body = self._read_body(resp, exchange)
                finally:
                    resp.close()
        except (requests.RequestException, u3.HTTPError, OSError) as exc:
            # A GET's URL (password included) is in the urllib3 messages: neither chained
            # nor left in this frame's locals.
            failure = exc if method == "POST" else None
            error = self._translate(exc, method, path)
        except MassivaError as exc:  # the body broke one of _read_body's bounds
            error = exc
        if exchange.expired and not isinstance(error, ConnectError):
            # Shut down mid-exchange: whatever came back (an error, or a body that ended
            # when the socket did) is no answer. Never resent: it may have been received.
            error = self._expired(method, path)
        elapsed = time.monotonic() - start
        if error is not None:
            logger.debug(
                "%s %s phones=%d failed after %.3f s: %s",
                *(method, path, n_phones, elapsed, type(error).__name__),
            )
            raise error from failure
        logger.debug(
            "%s %s phones=%d -> HTTP %d in %.3f s (%d bytes)",
            *(method, path, n_phones, resp.status_code, elapsed, len(body)),
        )
        return resp.status_code, body, resp.headers.get("Retry-After")

    def _expired(self, method: str, path: str) -> AmbiguousSendError:
        return AmbiguousSendError(
            f"{method} {path}: no complete answer within the deadline of {self.deadline:g} s; "
            "the request may have been processed"
        )

    def _read_body(self, resp: requests.Response, exchange: Exchange) -> bytes:
        # The read timeout bounds each socket read; this bounds a body that trickles in.
        deadline = time.monotonic() + self.timeout[1]
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise ProtocolError(
                f"response body too large ({declared} bytes, bound {MAX_RESPONSE_BYTES})",
                http_status=resp.status_code,
            )
        chunks: list[bytes] = []
        size = 0
        # read1 returns whatever one socket read brings (iter_content would block until
        # a whole chunk is in), so the deadline is checked while a body trickles in.
        while chunk := resp.raw.read1(_CHUNK, decode_content=True):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise ProtocolError(
                    f"response body too large (over {MAX_RESPONSE_BYTES} bytes)",
                    http_status=resp.status_code,
                )
            if time.monotonic() > deadline:
                raise AmbiguousSendError(
                    f"the response took longer than {self.timeout[1]} s to arrive",
                    http_status=resp.status_code,
                )
            if exchange.expired:  # with a session passed in, nothing shut the socket
                break  # _once raises the deadline's error
            chunks.append(chunk)
        return b"".join(chunks)

    def _refusal_delay(self, retry_after: str | None, refusal: int) -> float:
        if retry_after is not None:
            value = retry_after.strip()
            seconds: float | None = None
            if value.isdigit():
                seconds = float(value)
            else:
                try:
                    seconds = parsedate_to_datetime(value).timestamp() - time.time()
                except (TypeError, ValueError, IndexError):
                    seconds = None
            if seconds is not None:
                return min(max(seconds, 0.0), RETRY_AFTER_CAP)
        # No usable Retry-After: jittered exponential backoff.
        base = max(self.backoff_factor, 0.05) * 2.0**refusal
        return min(base, RETRY_AFTER_CAP) * self._random.uniform(0.5, 1.5)

    def _translate(self, exc: BaseException, method: str, path: str) -> MassivaError:
        """The one place where requests/urllib3 failures become massiva-frames errors.

        By type, never by message: a connect-phase failure (the request never left) is a
        :class:`ConnectError`; everything after the connection was made (read timeout,
        reset, a body cut off) is an :class:`AmbiguousSendError`.
        """
        secrets = (self._clave,)
        chain = list(_causes(exc))
        # The innermost urllib3/OS error says what happened without the URL.
        inner = next(
            (e for e in chain if not isinstance(e, (requests.RequestException, u3.MaxRetryError))),
            exc,
        )
        reason = mask(f"{type(inner).__name__}: {inner}", secrets)[:300]
        if isinstance(exc, _INVALID_REQUEST):
            return InputError(f"{method} {path}: invalid request: {reason}")
        if isinstance(exc, (requests.exceptions.ContentDecodingError, u3.DecodeError)):
            return ProtocolError(f"{method} {path}: response could not be decoded: {reason}")
        never_sent = isinstance(exc, requests.ConnectTimeout) or any(
            # NewConnectionError is a ConnectTimeoutError; a refused certificate stops the
            # handshake before anything is sent.
            isinstance(e, (u3.ConnectTimeoutError, ssl.SSLCertVerificationError))
            for e in chain
        )
        read_timeout = any(isinstance(e, u3.ReadTimeoutError) for e in chain)
        if never_sent and not read_timeout:
            attempts = self.connect_retries + 1 if self._owns_session else None
            tries = f" after {attempts} attempts" if attempts and attempts > 1 else ""
            return ConnectError(f"{method} {path}: could not connect{tries}: {reason}")
        what = "no response within the read timeout" if read_timeout else "connection lost"
        return AmbiguousSendError(
            f"{method} {path}: {what} after the request was sent; "
            f"it may have been processed: {reason}"
        )


def _encodable(value: str, encoding: str) -> bool:
    try:
        value.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True
