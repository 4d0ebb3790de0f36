"""The :class:`Sandbox`: a real HTTP server (waitress) that behaves like the Massiva API."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask

from .._waitress import QuietChannel
from ..errors import InputError
from .app import DropConnection, SandboxApp
from .dispatcher import Dispatcher
from .faults import FaultPlan
from .state import LINES, SandboxState

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Sandbox", "SandboxOptions", "sandbox"]

logger = logging.getLogger("massiva_frames.sandbox")


class _Unset:
    pass


_UNSET: Any = _Unset()


class SandboxOptions(TypedDict, total=False):
    """The keyword options of :class:`Sandbox`, which :func:`sandbox` passes on.

    The names and types of ``Sandbox(...)``'s keywords, all optional; their defaults and
    meanings are :class:`Sandbox`'s. Type a dict of options with it, or read it as the
    list of what ``sandbox(...)`` accepts.

    Examples
    --------
    >>> options: SandboxOptions = {"credits": 50, "fail_ratio": 0.0}
    >>> with sandbox(**options) as sb:  # doctest: +SKIP
    ...     sb.credits()
    50
    """

    host: str
    port: int
    usuario: str
    clave: str
    credits: int
    company_credits: int | None
    plan_active: bool
    status_url: str | None
    inbound_url: str | None
    callback_delay: float
    fail_ratio: float
    reply_ratio: float
    seed: int
    threads: int
    hang_seconds: float
    max_url_length: int | None
    callback_workers: int
    callback_attempts: int
    callback_jitter: float


def _check_url(name: str, url: str | None) -> str | None:
    if url is not None and not url.lower().startswith(("http://", "https://")):
        raise InputError(f"{name} must be an http:// or https:// URL")
    return url


class _DroppingTask(WSGITask):
    """A WSGI task that can end in a dropped connection instead of a response."""

    def execute(self) -> None:
        try:
            super().execute()
        except DropConnection:
            # SO_LINGER 0: closing sends a TCP RST, the client sees "connection reset".
            sock = self.channel.socket
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # Nothing was written; make finish() write nothing either, then close.
            self.wrote_header = True
            self.close_on_finish = True


class _Channel(QuietChannel):
    task_class = _DroppingTask


class _Server(TcpWSGIServer):
    channel_class = _Channel


class Sandbox:
    """A local server that behaves like the Massiva API (see :mod:`massiva_frames.sandbox`).

    Use :func:`sandbox` (a context manager) or call :meth:`start` and :meth:`stop`. Every
    option is a keyword; :class:`SandboxOptions` lists them as a type.

    Parameters
    ----------
    host : str, default "127.0.0.1"
        The address to bind.
    port : int, default 0
        The port to bind; 0 takes a free one (read it back from :attr:`base_url`).
    usuario : str, default "demo@massiva.test"
        The login of the sandbox's account (:meth:`add_account` adds more).
    clave : str, default "demo"
        Its password.
    credits : int, default 1000
        The account's SMS credits; an accepted message takes one.
    company_credits : int or None, default None
        The company's SMS credits, shared by every account; None: no limit of its own.
    plan_active : bool, default True
        Whether the company's SMS plan is active (inactive: status -4).
    status_url, inbound_url : str or None, default None
        Where final-status and inbound-SMS callbacks go (``http://`` or ``https://``);
        None sends none (:meth:`set_callback_urls` changes them).
    callback_delay : float, default 0.5
        Seconds from acceptance to dispatch (the status callback), and from dispatch to
        a reply's inbound callback.
    fail_ratio : float, default 0.1
        Share of accepted messages whose final status is failed (0 to 1).
    reply_ratio : float, default 0.0
        Share of delivered messages whose recipient replies (0 to 1).
    seed : int, default 0
        Seed of every random draw (each message's fate, ratio-armed faults).
    threads : int, default 16
        HTTP worker threads.
    hang_seconds : float, default 60.0
        Longest a ``hang`` fault holds a request.
    max_url_length : int or None, default 2048
        GET URLs longer than this are answered 414 (the provider's bound); None lifts it.
    callback_workers : int, default 4
        Threads delivering callbacks.
    callback_attempts : int, default 5
        Attempts to deliver one callback (refused, timed out or not 200) before giving up.
    callback_jitter : float, default 0.0
        Up to this many seconds added to each message's ``callback_delay``, spread over
        the messages by id (the same message always gets the same share).

    Raises
    ------
    InputError
        A ratio outside 0 to 1, or a callback URL that is not ``http(s)://``.

    Examples
    --------
    >>> with Sandbox(credits=10) as sb:  # doctest: +SKIP
    ...     sb.credits()
    10
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        usuario: str = "demo@massiva.test",
        clave: str = "demo",
        credits: int = 1000,
        company_credits: int | None = None,
        plan_active: bool = True,
        status_url: str | None = None,
        inbound_url: str | None = None,
        callback_delay: float = 0.5,
        fail_ratio: float = 0.1,
        reply_ratio: float = 0.0,
        seed: int = 0,
        threads: int = 16,
        hang_seconds: float = 60.0,
        max_url_length: int | None = 2048,
        callback_workers: int = 4,
        callback_attempts: int = 5,
        callback_jitter: float = 0.0,
    ) -> None:
        for name, ratio in (("fail_ratio", fail_ratio), ("reply_ratio", reply_ratio)):
            if not 0.0 <= ratio <= 1.0:
                raise InputError(f"{name} must be between 0 and 1, got {ratio!r}")
        self.host = host
        self.port = port
        self.usuario = usuario
        self._clave = clave
        self.threads = threads
        self._status_url = _check_url("status_url", status_url)
        self._inbound_url = _check_url("inbound_url", inbound_url)
        self._state = SandboxState(
            company_credits=company_credits,
            plan_active=plan_active,
            fail_ratio=fail_ratio,
            reply_ratio=reply_ratio,
            seed=seed,
        )
        self._state.add_account(usuario, clave, credits)
        self._faults = FaultPlan(seed=seed)
        self._dispatcher = Dispatcher(
            self._state,
            self._urls,
            delay=callback_delay,
            jitter=callback_jitter,
            workers=callback_workers,
            max_attempts=callback_attempts,
        )
        self._stop_event = threading.Event()
        self._app = SandboxApp(
            self._state,
            self._faults,
            on_accept=self._dispatcher.schedule,
            stop=self._stop_event,
            hang_seconds=hang_seconds,
            max_url_length=max_url_length,
        )
        self._map: dict[int, Any] = {}
        self._server: _Server | None = None
        self._tasks: ThreadedTaskDispatcher | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_stop = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> Sandbox:
        """Bind the port, start serving and dispatching; returns ``self``."""
        if self._server is not None:
            return self
        adj = Adjustments(
            host=self.host,
            port=self.port,
            threads=self.threads,
            # Read ahead one request so a client that gave up is noticed during a hang.
            channel_request_lookahead=1,
            asyncore_use_poll=True,
            # A 500-phone POST body is ~30 KB: read it in one go, not in 8 KB pieces.
            recv_bytes=65536,
            ident="massiva-sandbox",
        )
        tasks = ThreadedTaskDispatcher()
        tasks.set_thread_count(self.threads)
        self._server = _Server(self._app, map=self._map, dispatcher=tasks, adj=adj)
        self._tasks = tasks
        self.port = int(self._server.getsockname()[1])
        self._dispatcher.start()
        self._loop_thread = threading.Thread(target=self._loop, name="sandbox-http", daemon=True)
        self._loop_thread.start()
        logger.info("sandbox serving on %s", self.base_url)
        return self

    def _loop(self) -> None:
        from waitress import wasyncore

        try:
            while not self._loop_stop.is_set():
                wasyncore.loop(timeout=0.2, map=self._map, use_poll=True, count=1)
        finally:
            # Close in the loop's own thread: channels first (wakes writers), then the rest.
            for obj in list(self._map.values()):
                with contextlib.suppress(Exception):
                    if isinstance(obj, HTTPChannel):
                        obj.handle_close()
            for obj in list(self._map.values()):
                with contextlib.suppress(Exception):
                    obj.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and dispatching; joins every thread (bounded by ``timeout``)."""
        if self._server is None:
            return
        self._stop_event.set()  # ends hangs and latencies
        self._loop_stop.set()
        with contextlib.suppress(Exception):
            self._server.pull_trigger()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout)
        if self._tasks is not None:
            self._tasks.shutdown(cancel_pending=True, timeout=max(1, int(timeout)))
        self._dispatcher.stop(timeout)
        self._server = None
        logger.info("sandbox on port %s stopped", self.port)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<Sandbox {self.base_url} usuario={self.usuario!r} {state}>"

    # -- addresses and accounts -----------------------------------------------------------
    @property
    def clave(self) -> str:
        """The default account's password (a local test value)."""
        return self._clave

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/webservices``: pass it to ``MassivaClient(base_url=...)``."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/webservices"

    @property
    def send_url(self) -> str:
        """The SendSms URL."""
        return f"{self.base_url}/SendSms"

    @property
    def credit_url(self) -> str:
        """The obtenerCreditoDisponible URL."""
        return f"{self.base_url}/obtenerCreditoDisponible"

    def add_account(self, usuario: str, clave: str, *, credits: int = 1000) -> None:
        """Add (or replace) an account sharing the company's plan and credits."""
        self._state.add_account(usuario, clave, credits)

    def credits(self, usuario: str | None = None) -> int:
        """The SMS credits left to ``usuario`` (default: the sandbox's account)."""
        with self._state.lock:
            account = self._state.accounts.get(usuario or self.usuario)
            if account is None:
                raise InputError(f"no account {usuario!r} in the sandbox")
            return account.credits

    @property
    def company_credits(self) -> int | None:
        """The company's SMS credits left (None: unlimited)."""
        return self._state.company_credits

    def set_credits(
        self, n: int, *, company: int | None | Any = _UNSET, usuario: str | None = None
    ) -> None:
        """Set a user's credits to ``n``; ``company=`` also sets the company's (None: unlimited)."""
        with self._state.lock:
            account = self._state.accounts.get(usuario or self.usuario)
            if account is None:
                raise InputError(f"no account {usuario!r} in the sandbox")
            account.credits = int(n)
            if company is not _UNSET:
                self._state.company_credits = None if company is None else int(company)

    def set_plan(self, active: bool) -> None:
        """Activate or deactivate the company's SMS plan (inactive: status -4)."""
        self._state.plan_active = bool(active)

    # -- records --------------------------------------------------------------------------
    def messages(self) -> pd.DataFrame:
        """Every message the sandbox accepted, one row each.

        Columns: ``id`` (int), ``sid``, ``phone``, ``text``, ``usuario``, ``accepted_at``
        (UTC), ``final`` (``pending``/``delivered``/``failed``), ``updated_at`` (UTC or
        NaT), ``line``, ``request_no`` (see :meth:`requests`), ``grupo``.
        """
        return self._state.messages_frame()

    def contacts(self, group: str | None = None, *, usuario: str | None = None) -> pd.DataFrame:
        """The contact groups: every phone a SendSms request saved (docs/protocol.md §1.1).

        Each accepted phone that is not yet in its account's address book is saved to the
        request's ``grupo`` (``CONTACTOS`` without one); a phone already saved keeps its
        group. Rejected phones and refused requests save nothing.

        Parameters
        ----------
        group : str, optional
            Only this group's contacts.
        usuario : str, optional
            Only this account's contacts (default: every account's).

        Returns
        -------
        DataFrame
            One row per saved phone, in the order they were saved: ``group``, ``phone``,
            ``usuario`` (the account), ``added_at`` (UTC), ``request_no`` (the request
            that saved it, see :meth:`requests`).

        Examples
        --------
        >>> client.send_batch(["584141234567"], "Hola", "clientes")  # doctest: +SKIP
        >>> sb.contacts("clientes")["phone"].tolist()  # doctest: +SKIP
        ['584141234567']
        """
        frame = self._state.contacts_frame()
        if group is not None:
            frame = frame[frame["group"] == group]
        if usuario is not None:
            frame = frame[frame["usuario"] == usuario]
        return frame.reset_index(drop=True)

    def requests(self) -> pd.DataFrame:
        """Every HTTP request received, in order (the password is never recorded).

        Columns: ``request_no``, ``received_at``, ``method``, ``path``, ``usuario``,
        ``n_phones``, ``n_texts``, ``charset``, ``url_length``, ``http_status`` (0: no
        answer, the connection was dropped), ``api_status``, ``accepted``, ``fault``,
        ``recorded`` (messages of this request were accepted and recorded).
        """
        import pandas as pd

        recs = self._state.request_records()
        cols = [
            "request_no",
            "received_at",
            "method",
            "path",
            "usuario",
            "n_phones",
            "n_texts",
            "charset",
            "url_length",
            "http_status",
            "api_status",
            "accepted",
            "fault",
            "recorded",
        ]
        dtypes = {
            "request_no": "int64",
            "method": "string",
            "path": "string",
            "usuario": "string",
            "n_phones": "int64",
            "n_texts": "int64",
            "charset": "string",
            "url_length": "Int64",
            "http_status": "int64",
            "api_status": "Int64",
            "accepted": "int64",
            "fault": "string",
            "recorded": "bool",
        }
        data = {c: [getattr(r, c) for r in recs] for c in cols}
        frame = pd.DataFrame({c: pd.Series(data[c], dtype=dtypes[c]) for c in dtypes})
        frame.insert(
            1,
            "received_at",
            pd.Series(data["received_at"], dtype="datetime64[us, UTC]"),
        )
        return frame

    def callbacks(self) -> pd.DataFrame:
        """Every callback created (status and inbound) and how its delivery went."""
        return self._dispatcher.frame()

    # -- faults ---------------------------------------------------------------------------
    def inject(
        self,
        fault: str,
        *,
        count: int | None = None,
        ratio: float | None = None,
        seed: int | None = None,
        **opts: Any,
    ) -> None:
        """Arm a fault for SendSms and credit requests.

        Parameters
        ----------
        fault : str
            ``latency`` (``seconds=``; with ``gate=`` a ``threading.Event``, held until
            it is set, at most ``seconds``), ``http500``/``http502`` (``before=``),
            ``http503``/``http429`` (``retry_after=``), ``hang`` (``seconds=``),
            ``reset`` (``before=``), ``truncated``, ``html``.
        count : int, optional
            Apply to the next ``count`` requests.
        ratio : float, optional
            Apply to each request with this probability (drawn from ``seed``).

        Examples
        --------
        >>> sb.inject("http503", count=2, retry_after=1)  # doctest: +SKIP
        """
        self._faults.inject(fault, count=count, ratio=ratio, seed=seed, **opts)

    def clear_faults(self) -> None:
        """Disarm every fault."""
        self._faults.clear()

    # -- callbacks ------------------------------------------------------------------------
    def _urls(self) -> tuple[str | None, str | None]:
        return self._status_url, self._inbound_url

    @property
    def status_url(self) -> str | None:
        """Where final-status callbacks go (docs/protocol.md §2), or None."""
        return self._status_url

    @property
    def inbound_url(self) -> str | None:
        """Where inbound-SMS callbacks go (docs/protocol.md §3), or None."""
        return self._inbound_url

    def set_callback_urls(
        self, status_url: str | None | Any = _UNSET, inbound_url: str | None | Any = _UNSET
    ) -> None:
        """Set the callback URLs; an argument left out keeps its value, None disables."""
        if status_url is not _UNSET:
            self._status_url = _check_url("status_url", status_url)
        if inbound_url is not _UNSET:
            self._inbound_url = _check_url("inbound_url", inbound_url)

    def send_inbound(
        self, phone: str, msg: str, *, linea: str | None = None, usuario: str | None = None
    ) -> None:
        """Emit an inbound-SMS callback now: ``msg``, ``phone``, ``linea``, ``email``.

        Examples
        --------
        >>> sb.send_inbound("584141234567", "BAJA")  # doctest: +SKIP
        >>> sb.wait_callbacks(5)  # doctest: +SKIP
        True
        """
        if not self._inbound_url:
            raise InputError("the sandbox has no inbound_url (set_callback_urls(inbound_url=...))")
        params = {
            "msg": msg,
            "phone": phone,
            "linea": linea or LINES[0],
            "email": usuario or self.usuario,
        }
        self._dispatcher.emit("inbound", self._inbound_url, params)

    def wait_callbacks(self, timeout: float = 10) -> bool:
        """Wait until every due callback is delivered or given up; False on timeout."""
        return self._dispatcher.wait(timeout)

    def dispatch_now(self) -> None:
        """Make every pending message due for dispatch now."""
        self._dispatcher.dispatch_now()


@contextlib.contextmanager
def sandbox(**options: Unpack[SandboxOptions]) -> Iterator[Sandbox]:
    """Run a :class:`Sandbox` for the duration of a ``with`` block.

    Parameters
    ----------
    **options
        The keyword options of :class:`Sandbox`, with its defaults: ``host``, ``port``,
        ``usuario``, ``clave``, ``credits``, ``company_credits``, ``plan_active``,
        ``status_url``, ``inbound_url``, ``callback_delay``, ``fail_ratio``,
        ``reply_ratio``, ``seed``, ``threads``, ``hang_seconds``, ``max_url_length``,
        ``callback_workers``, ``callback_attempts``, ``callback_jitter``
        (:class:`SandboxOptions`).

    Yields
    ------
    Sandbox
        The running sandbox; stopped when the block ends.

    Examples
    --------
    >>> from massiva_frames.sandbox import sandbox
    >>> with sandbox(credits=50) as sb:  # doctest: +SKIP
    ...     client = MassivaClient(sb.usuario, sb.clave, base_url=sb.base_url)
    ...     client.credits()
    50
    """
    sb = Sandbox(**options)
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()
