"""One total deadline per HTTP exchange, from connect to the last body byte, at the socket.

A socket timeout bounds each read, not their sum: a server that sends its status line and
then one header byte a second never trips it, and requests' own timeout only starts
counting the body once the headers are in. So each exchange of the client runs inside a
:class:`Exchange`: the connections made or reused during it register their socket, and a
watchdog thread, started with the exchange and joined when it ends, shuts those sockets
down when the deadline passes. The blocked read then returns at once and the exchange
fails like a dropped connection; the client reports it as an ambiguous outcome
(docs/protocol.md §5: the request may have been received).

The registration happens in :class:`DeadlineAdapter`'s connection classes, so it covers
the client's own session (not a session passed in, whose adapters are the caller's).
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager
from urllib3.poolmanager import pool_classes_by_scheme as _DEFAULT_POOLS

__all__ = ["DeadlineAdapter", "Exchange"]

_current = threading.local()


class Exchange:
    """The deadline of one exchange and the sockets it used; a context manager.

    Parameters
    ----------
    seconds : float or None
        From entering the block; None watches nothing (no thread is started).

    Attributes
    ----------
    expired : bool
        Whether the deadline passed while the block ran (its sockets were shut down).
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._over = threading.Event()
        self._watchdog: threading.Thread | None = None

    def __enter__(self) -> Exchange:
        if self.seconds is not None:
            self._watchdog = threading.Thread(
                target=self._watch, args=(time.monotonic() + self.seconds,),
                name="massiva-deadline", daemon=True,
            )  # fmt: skip
            self._watchdog.start()
        _current.exchange = self
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _current.exchange = None
        self._over.set()
        if self._watchdog is not None:
            self._watchdog.join()  # never left behind: it only waits on _over
        with self._lock:
            self._sockets.clear()

    def register(self, sock: socket.socket | None) -> None:
        """Watch ``sock`` (shut it down at once if the deadline already passed)."""
        if sock is None:
            return
        with self._lock:
            if sock not in self._sockets:
                self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _watch(self, deadline: float) -> None:
        if self._over.wait(max(deadline - time.monotonic(), 0.0)):
            return
        with self._lock:
            if self._over.is_set():
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the TLS object stays as the reading
    # thread left it; the read under it returns end-of-file and fails.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or never connected


def _register(sock: socket.socket | None) -> None:
    exchange: Exchange | None = getattr(_current, "exchange", None)
    if exchange is not None:
        exchange.register(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _register(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self.sock)  # a kept-alive connection, reused: it does not connect again
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _register(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: dict[str, type[HTTPConnectionPool]] = {
    "http": _WatchedHTTPPool,
    "https": _WatchedHTTPSPool,
}


def _watch_pools(manager: PoolManager) -> None:
    # Only urllib3's own pools are swapped: a SOCKS manager keeps its own classes.
    if manager.pool_classes_by_scheme == _DEFAULT_POOLS:
        manager.pool_classes_by_scheme = _WATCHED_POOLS


class DeadlineAdapter(HTTPAdapter):
    """An :class:`~requests.adapters.HTTPAdapter` whose connections an :class:`Exchange`
    can watch (through a proxy too); otherwise the same adapter."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _watch_pools(manager)
        return manager
