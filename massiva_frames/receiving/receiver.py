"""The callback receiver: a WSGI app served by waitress.

One path takes both kinds of callback (docs/protocol.md §2 status, §3 inbound), by GET or form
POST. A callback is answered 200 only once it is durably stored (see :mod:`.journal`);
a compactor thread moves stored events into the parquet dataset (see :mod:`.store`).

Answers::

    200 OK          stored (a repeat is stored again and dropped when read)
    400             malformed or incomplete: the reason names the field
    403             a token is configured and the request lacks it or has another
    404 / 405       another path / another method
    413             body over 64 KiB, or a value over 2,000 characters
    414             URL over 8 KiB
    415             a POST body that is not form-encoded
    503             storage failing or shutting down: the provider should retry later
    GET /health     200 {"status": "ok", ...}; 503 when the last commit failed

Connections (see :mod:`.server`): each has ``request_timeout`` seconds (10) to deliver a
complete request, and at ``connection_limit`` (500) open connections the one that has
waited longest for its request makes room for the newcomer, so idle or slow sockets
cannot lock callbacks out. TLS and per-address rate limits belong to a reverse proxy
(``deploy/nginx/massiva-receiver.conf``).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote

from ..errors import InputError, mask
from .event_journal import DurableLog, NullLog, StorageUnavailable, make_dirs, pending_rows
from .fields import CallbackRejected, classify, decode_form, event_key
from .instances import check_instance
from .server import (
    DEFAULT_CONNECTION_LIMIT,
    DEFAULT_REQUEST_TIMEOUT,
    GuardedServer,
    fd_room,
    poll_once,
)
from .store import compact

__all__ = ["CallbackApp", "Receiver", "receiver"]

logger = logging.getLogger("massiva_frames.receiving")

MAX_URL = 8 * 1024
MAX_BODY = 64 * 1024
#: request line and headers: a URL up to MAX_URL must reach the app (which answers 414)
MAX_HEADERS = 32 * 1024
TOKEN_HEADER = "HTTP_X_MASSIVA_TOKEN"

StartResponse = Callable[..., Any]


class _Log(Protocol):
    durable: bool
    instance: str
    stored: int
    commits: int
    failures: int
    last_error: str | None

    def write(
        self, kind: str, values: Any, *, key: str, received_us: int
    ) -> None: ...  # pragma: no cover

    def queued(self) -> int: ...  # pragma: no cover

    def close(self, timeout: float = ...) -> None: ...  # pragma: no cover


def _charset(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


def _header_bytes(value: str) -> bytes:
    """The bytes a header value arrived as (PEP 3333: Latin-1 characters)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:  # a server that decoded it some other way
        return value.encode("utf-8")


class CallbackApp:
    """The WSGI application; ``log`` is a :class:`.DurableLog` (or a ``NullLog``).

    Parameters
    ----------
    log : DurableLog or NullLog
        Where accepted callbacks go; ``write`` returns once the event is durable.
    path : str
        The one path that takes callbacks (both kinds).
    token : str or None
        When set, callbacks must carry it (``token`` parameter or ``X-Massiva-Token``).
    logdir : Path or None
        For the health endpoint's count of events awaiting compaction.
    """

    def __init__(
        self,
        log: _Log,
        *,
        path: str = "/recepcionsms",
        token: str | None = None,
        logdir: Path | None = None,
    ) -> None:
        self.log = log
        self.path = "/" + path.strip("/")
        self._token = token.encode("utf-8") if token else None
        self._logdir = logdir
        self.closing = False
        self.inflight = 0
        self.rejected = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            self.inflight += 1
        try:
            try:
                code, body, extra = self._handle(environ)
            except CallbackRejected as exc:
                code, body, extra = exc.code, exc.reason, []
                with self._lock:
                    self.rejected += 1
                # The reason only, never the URL or a value: they may hold the token.
                logger.warning("refused a callback: %d %s", code, exc.reason)
            except StorageUnavailable as exc:
                code, body, extra = 503, f"not stored, retry later: {exc}", [("Retry-After", "5")]
            except Exception:  # a bug must not become a 500 nor stop the service
                logger.exception("unexpected error while handling a callback")
                code, body, extra = 503, "internal error, retry later", [("Retry-After", "5")]
            data = (body + "\n").encode("utf-8")
            ctype = "application/json" if body.startswith("{") else "text/plain; charset=utf-8"
            headers = [("Content-Type", ctype), ("Content-Length", str(len(data))), *extra]
            start_response(f"{code} {_REASONS.get(code, 'Error')}", headers)
            return [data]
        finally:
            with self._lock:
                self.inflight -= 1

    def _handle(self, environ: dict[str, Any]) -> tuple[int, str, list[tuple[str, str]]]:
        received_us = time.time_ns() // 1000
        raw_uri: str = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
        if len(raw_uri) > MAX_URL:
            raise CallbackRejected(414, f"URL longer than {MAX_URL} bytes")
        path = "/" + environ.get("PATH_INFO", "").strip("/")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/health" and path != self.path:
            if method not in ("GET", "HEAD"):
                raise CallbackRejected(405, "use GET")
            return self._health()
        if path != self.path:
            raise CallbackRejected(404, f"unknown path; callbacks go to {self.path}")
        if method not in ("GET", "POST"):
            raise CallbackRejected(405, "use GET or POST")
        if self.closing:
            raise StorageUnavailable("the receiver is shutting down")
        # PEP 3333: QUERY_STRING holds the raw bytes as Latin-1 characters.
        params = decode_form(environ.get("QUERY_STRING", "").encode("latin-1"))
        if method == "POST":
            params.update(self._form(environ))
        header: str | None = environ.get(TOKEN_HEADER)
        param = params.pop("token", None)  # never stored, whatever the configuration
        if self._token is not None:
            # PEP 3333: a header value is its raw bytes read as Latin-1 (so a UTF-8 token
            # arrives as mojibake); a parameter was decoded by decode_form already.
            given = _header_bytes(header) if header else (param or "").encode("utf-8")
            if not hmac.compare_digest(given, self._token):
                raise CallbackRejected(403, "missing or wrong token")
        kind, values = classify(params)
        self.log.write(kind, values, key=event_key(kind, values), received_us=received_us)
        return 200, "OK", []

    def _form(self, environ: dict[str, Any]) -> dict[str, str]:
        content_type: str = environ.get("CONTENT_TYPE", "")
        media = content_type.split(";")[0].strip().lower()
        if media and media not in ("application/x-www-form-urlencoded", "text/plain"):
            raise CallbackRejected(415, "POST a form (application/x-www-form-urlencoded)")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise CallbackRejected(400, "bad Content-Length") from None
        if length > MAX_BODY:
            raise CallbackRejected(413, f"body longer than {MAX_BODY} bytes")
        body: bytes = environ["wsgi.input"].read(length) if length > 0 else b""
        return decode_form(body.strip(), charset=_charset(content_type))

    def _health(self) -> tuple[int, str, list[tuple[str, str]]]:
        healthy = self.log.last_error is None  # reset by the next successful commit
        info = {
            "status": "ok" if healthy else "failing",
            "instance": self.log.instance,
            "durable": self.log.durable,
            "stored": self.log.stored,
            "commits": self.log.commits,
            "rejected": self.rejected,
            "queued": self.log.queued(),
            "pending": pending_rows(self._logdir) if self._logdir is not None else 0,
            "storage_failures": self.log.failures,
        }
        return (200 if healthy else 503), json.dumps(info), []


_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    503: "Service Unavailable",
}


class Receiver:
    """A callback receiver bound to ``host:port``, storing into ``logdir``.

    Use :func:`receiver` (a context manager) in code and tests; ``massiva-frames receive``
    runs one until SIGINT/SIGTERM.

    Parameters
    ----------
    logdir : path
        Where the journal and the parquet dataset live (created if missing).
    host, port : str, int
        Address to listen on; ``port=0`` picks a free port (see ``url``).
    token : str or None
        Shared secret the callbacks must carry (``?token=`` or ``X-Massiva-Token``).
    path : str
        The path the provider calls.
    threads : int
        waitress worker threads. They serve complete requests only, so idle or slow
        connections never hold one; 8 keep up with the disk's group commit.
    store : bool
        False answers without storing anything: only to measure the HTTP ceiling.
    compact_interval : float
        Seconds between background compactions.
    connection_limit : int
        Open connections at most (default 500). At the limit the connection that has
        waited longest for its request is closed to make room, so the limit bounds
        memory (up to ~100 KiB per connection while its request arrives) and file
        descriptors, not who gets served; lowered, with a warning, when ``ulimit -n``
        cannot hold it. Size it for the provider's concurrent callbacks plus the idle
        connections you tolerate: 500 is ~50 MB at worst.
    request_timeout : float
        Seconds a connection has to deliver each complete request, headers and body,
        from its accept or its previous answer (default 10): a connection that sends
        nothing, or a byte a second, is closed then. A callback takes milliseconds;
        keep it well above the provider's worst network round trip.
    instance : str or None
        This receiver's name among several serving ``logdir`` (letters, digits, ``_.-``):
        its journal is ``logdir/_journal/<instance>.db``, continued by a restart under
        the same name. None takes a journal no live receiver holds (``events``, a
        single receiver's) or a new one. A journal whose receiver died is compacted by
        any other; two live receivers with one name are refused (``InputError``).

    Attributes
    ----------
    instance : str
        The instance id (with ``store=False``, empty).
    url : str
        The callback URL to register with the provider (with ``?token=`` when set).
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        path: str = "/recepcionsms",
        threads: int = 8,
        store: bool = True,
        compact_interval: float = 5.0,
        connection_limit: int = DEFAULT_CONNECTION_LIMIT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        instance: str | None = None,
    ) -> None:
        if instance is not None:
            check_instance(instance)
        if isinstance(connection_limit, bool) or not isinstance(connection_limit, int):
            raise InputError(f"connection_limit must be an integer, got {connection_limit!r}")
        if connection_limit < 1:
            raise InputError(f"connection_limit must be >= 1, got {connection_limit!r}")
        if isinstance(request_timeout, bool) or not (
            isinstance(request_timeout, int | float) and request_timeout > 0
        ):
            raise InputError(f"request_timeout must be positive seconds, got {request_timeout!r}")
        limit = fd_room(connection_limit)
        if limit < connection_limit:
            logger.warning(
                "connection_limit lowered from %d to %d: the open-file limit (ulimit -n) "
                "cannot hold more",
                *(connection_limit, limit),
            )
        self.connection_limit = limit
        self.request_timeout = float(request_timeout)
        self.logdir = Path(logdir)
        try:
            make_dirs(self.logdir)
        except OSError as exc:
            raise InputError(f"cannot create the log directory {str(self.logdir)!r}") from exc
        self._token = token or None
        self._store = store
        self._compact_interval = compact_interval
        self._log: _Log = DurableLog(self.logdir, instance=instance) if store else NullLog()
        self.instance = self._log.instance
        self.app = CallbackApp(self._log, path=path, token=self._token, logdir=self.logdir)
        socket_map: dict[int, Any] = {}
        try:
            server: Any = GuardedServer(
                self.app,
                request_timeout=self.request_timeout,
                map=socket_map,
                host=host,
                port=port,
                threads=threads,
                ident="massiva-frames",
                max_request_body_size=MAX_BODY,
                max_request_header_size=MAX_HEADERS,
                connection_limit=limit,
                cleanup_interval=1,  # the request deadline is checked every second
                asyncore_use_poll=True,  # select() stops at 1,024 descriptors
            )
            self._server: Any = server  # waitress's attributes, typed loosely by its stubs
        except BaseException:
            from waitress import wasyncore

            wasyncore.close_all(socket_map)  # the half-made listening socket and trigger
            self._log.close()
            raise
        self.host = str(self._server.effective_host)
        self.port = int(self._server.effective_port)
        self._stop = threading.Event()
        self._loop_thread: threading.Thread | None = None
        self._compactor: threading.Thread | None = None
        self._serving = False
        self._finished = False
        self._closed = False

    @property
    def base_url(self) -> str:
        """``http://host:port`` (no path, no token), e.g. for ``/health``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The callback URL, with ``?token=...`` when a token is configured."""
        url = self.base_url + self.app.path
        if self._token:
            url += "?token=" + quote(self._token, safe="")
        return url

    def __repr__(self) -> str:
        return mask(f"<Receiver {self.url} logdir={str(self.logdir)!r}>", [self._token])

    def start(self) -> Receiver:
        """Serve in background threads; returns self."""
        if self._loop_thread is None and not self._serving:
            self._loop_thread = threading.Thread(
                target=self.serve_forever, name="massiva-receiver", daemon=True
            )
            self._loop_thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop`, then shut down cleanly."""
        from waitress import wasyncore

        if self._serving or self._finished:
            raise RuntimeError("this receiver is already serving or was closed")
        self._serving = True
        if self._store:
            self._compactor = threading.Thread(
                target=self._compact_loop, name="massiva-compactor", daemon=True
            )
            self._compactor.start()
        server = self._server
        try:
            while not self._stop.is_set():
                poll_once(server._map, 0.5)
            self._drain(wasyncore)
        finally:
            self._finish()

    def _drain(self, wasyncore: Any) -> None:
        """Stop accepting, finish the requests in flight, flush their answers."""
        server = self._server
        wasyncore.dispatcher.close(server)  # the listening socket only
        self.app.closing = True
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            channels = [c for c in server._map.values() if c is not server.trigger]
            busy = (
                self.app.inflight
                or server.task_dispatcher.queue
                or any(getattr(c, "total_outbufs_len", 0) for c in channels)
                or any(getattr(c, "requests", None) for c in channels)
            )
            if not busy:
                break
            poll_once(server._map, 0.05)

    def _finish(self) -> None:
        from waitress import wasyncore

        server = self._server
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        wasyncore.close_all(server._map)
        self._stop.set()
        self._log.close()
        if self._compactor is not None:
            self._compactor.join(timeout=60)
        if self._store:
            try:
                compact(self.logdir, timeout=60)
            except Exception:
                logger.exception("final compaction failed; events stay in the journal")
        self._finished = True

    def _compact_loop(self) -> None:
        while not self._stop.wait(self._compact_interval):
            try:
                compact(self.logdir, timeout=0)
            except TimeoutError:
                continue  # someone else is compacting
            except Exception:
                logger.exception("compaction failed; events stay in the journal")

    def stop(self) -> None:
        """Ask the serving loop to stop (safe from a signal handler or another thread)."""
        self._stop.set()
        try:
            self._server.pull_trigger()
        except OSError:
            pass

    def close(self, timeout: float = 60.0) -> None:
        """Stop, answer the requests in flight, commit, compact and close."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout)
        elif not self._serving:
            self._finish()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def receiver(
    logdir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    path: str = "/recepcionsms",
    threads: int = 8,
    store: bool = True,
    compact_interval: float = 5.0,
    connection_limit: int = DEFAULT_CONNECTION_LIMIT,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    instance: str | None = None,
) -> Receiver:
    """Start a callback receiver in this process; use it as a context manager.

    See :class:`Receiver` for the parameters.

    Examples
    --------
    >>> import massiva_frames as mf
    >>> with mf.receiver("callback-logs") as rc:  # doctest: +SKIP
    ...     print(rc.url)  # register this URL with the provider / the sandbox
    http://127.0.0.1:54321/recepcionsms
    """
    return Receiver(
        logdir,
        host=host,
        port=port,
        token=token,
        path=path,
        threads=threads,
        store=store,
        compact_interval=compact_interval,
        connection_limit=connection_limit,
        request_timeout=request_timeout,
        instance=instance,
    ).start()
