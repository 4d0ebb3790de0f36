"""The receiver's HTTP server: waitress, kept bounded and fair when connections run out.

waitress on its own stops accepting at ``connection_limit`` open connections (100 by
default) and closes a connection only after ``channel_timeout`` (120 s) without a byte:
a hundred sockets that send nothing, or a header byte a second, lock every callback out
for minutes. :class:`GuardedServer` keeps waitress's parser, threads and output
handling and changes two rules:

- **A request deadline.** A connection has ``request_timeout`` seconds to deliver each
  complete request (headers and body), counted from when it was accepted or its
  previous answer was handed over. A silent or trickling connection is closed when they
  pass, however often it sends a byte. Requests being served are never cut.
- **Room for the newcomer.** At ``connection_limit`` the server keeps accepting: each
  new connection closes the one that has waited longest for its request. A real
  callback sends its request as soon as it connects and is then being served, so it is
  answered however many idle or slow connections are open; the limit bounds memory and
  file descriptors only. Only when every connection is being served (storage stalled)
  do new ones wait in the listen backlog.

The event loop is :func:`poll_once`: ``poll`` (``select`` fails past 1,024
descriptors), and an event is handed only to the connection it was polled for.
"""

from __future__ import annotations

import heapq
import logging
import select
import time
from typing import Any, cast

from waitress import wasyncore
from waitress.server import TcpWSGIServer

from .._waitress import QuietChannel

__all__ = [
    "DEFAULT_CONNECTION_LIMIT",
    "DEFAULT_REQUEST_TIMEOUT",
    "GuardedServer",
    "fd_room",
    "poll_once",
]

logger = logging.getLogger("massiva_frames.receiving")

#: open connections at most (each: a file descriptor, and up to ~100 KiB while its
#: request arrives: 32 KiB of headers, 64 KiB of body)
DEFAULT_CONNECTION_LIMIT = 500
#: seconds a connection has to deliver each complete request
DEFAULT_REQUEST_TIMEOUT = 10.0
#: descriptors kept for the journal, the parquet files, the listener and the trigger
FD_RESERVE = 64
_LOG_EVERY = 60.0
_ACCEPTS_PER_WAKE = 32


class _GuardedChannel(QuietChannel):
    """A waitress channel that knows since when it waits for a complete request (and
    whose loop leaves a running task's answer to its worker: :class:`QuietChannel`).

    ``waiting_since`` (monotonic) is None while a request of it is being served.
    """

    server: GuardedServer

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
        self.waiting_since: float | None = time.monotonic()
        super().__init__(server, sock, addr, adj, map=map)

    def received(self, data: bytes) -> bool:
        served = len(self.requests)
        result: bool = super().received(data)
        if len(self.requests) > served:  # a request is complete: it is served now
            self.waiting_since = None
        return result

    def service(self) -> None:
        super().service()
        # Worker thread: its answer is handed over; the next request's time starts.
        self.waiting_since = time.monotonic()

    def del_channel(self, map: Any = None) -> None:
        super().del_channel(map)
        self.server.full = False  # a slot is free again

    def idle_since(self) -> float | None:
        """When it started waiting for a request, or None if it is being served."""
        since = self.waiting_since
        if since is None or self.requests or self.will_close:
            return None
        return since


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server with a request deadline and eviction at the limit.

    Parameters
    ----------
    application : WSGI callable
    request_timeout : float
        Seconds a connection has to deliver each complete request.
    **adjustments
        waitress adjustments (``host``, ``port``, ``threads``, ``connection_limit``, ...).

    Attributes
    ----------
    evicted, expired : int
        Connections closed to make room at the limit / for missing the deadline.
    """

    channel_class = _GuardedChannel

    def __init__(self, application: Any, *, request_timeout: float, **adjustments: Any) -> None:
        self.request_timeout = float(request_timeout)
        self.full = False
        self.evicted = 0
        self.expired = 0
        self._logged = {"evicted": 0.0, "expired": 0.0}
        super().__init__(application, **adjustments)

    def channels(self) -> list[_GuardedChannel]:
        """The open connections (a copy: closing one changes the server's table)."""
        table = cast(dict[int, _GuardedChannel], self.active_channels)
        return list(table.values())

    def readable(self) -> bool:
        now = int(time.time())
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return bool(self.accepting) and not self.full

    def maintenance(self, now: int) -> None:
        """waitress's idle rule, then the request deadline: close who missed it."""
        super().maintenance(now)
        cutoff = time.monotonic() - self.request_timeout
        late = [c for c in self.channels() if (t := c.idle_since()) is not None and t < cutoff]
        self.expired += len(late)
        for channel in late:
            channel.handle_close()
        if late:
            self._note("expired", f"closed {len(late)} connection(s) that did not deliver "
                       f"a request within {self.request_timeout:g} s")  # fmt: skip
        self.full = False

    def handle_accept(self) -> None:
        # Several per wake-up: under a flood of connections the listen backlog drains
        # faster, so a real callback waits behind fewer of them to be accepted.
        table = cast(dict[int, _GuardedChannel], self.active_channels)
        for turn in range(_ACCEPTS_PER_WAKE):
            if len(table) >= self.adj.connection_limit:
                if turn and not self._pending():
                    return  # nobody waits for a slot: close nothing
                if not self._evict():
                    self.full = True  # every connection is being served: newcomers wait
                    return
            before = len(table)
            super().handle_accept()
            if len(table) == before:  # nothing left to accept (or it failed)
                return

    def _pending(self) -> bool:
        """Whether a connection waits in the listen backlog (a poll, no waiting)."""
        if self.socket is None:
            return False
        poller = select.poll()
        poller.register(self.socket, select.POLLIN)
        return bool(poller.poll(0))

    def _evict(self) -> bool:
        """Close the connections that have waited longest for their request; False if
        none is waiting.

        A few at once (one scan makes room for the next accepts), never the newer half:
        a connection just accepted has had no chance to send its request yet.
        """
        waiting = [(since, c) for c in self.channels() if (since := c.idle_since()) is not None]
        if not waiting:
            return False
        batch = max(1, min(_ACCEPTS_PER_WAKE, self.adj.connection_limit // 16, len(waiting) // 2))
        for _, channel in heapq.nsmallest(batch, waiting, key=lambda pair: pair[0]):
            self.evicted += 1
            channel.handle_close()
        self._note("evicted", f"{self.adj.connection_limit} connections open: closing those "
                   "that waited longest for their request to make room")  # fmt: skip
        return True

    def _note(self, what: str, message: str) -> None:
        now = time.monotonic()
        if now - self._logged[what] >= _LOG_EVERY:
            self._logged[what] = now
            logger.warning("%s (%s so far: %d)", message, what, getattr(self, what))


def fd_room(connection_limit: int) -> int:
    """The connection limit this process can honour; raises its soft ``ulimit -n`` if needed.

    Returns ``connection_limit`` or, when the hard limit is lower, what fits under it.
    """
    try:
        import resource
    except ImportError:  # not a Unix: no such limit to raise
        return connection_limit
    needed = connection_limit + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return connection_limit
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (OSError, ValueError):
        pass
    return max(1, min(connection_limit, soft - FD_RESERVE))


def poll_once(socket_map: dict[int, Any], timeout: float) -> None:
    """One turn of the event loop: waitress's ``poll2``, minus its stale events.

    ``poll2`` looks each ready descriptor up in the map when dispatching. This server
    closes connections while a turn runs (the deadline check inside ``readable``, an
    eviction before an accept), and the kernel hands a closed descriptor's number to
    the next accepted socket: an event polled for the old connection (its hang-up, its
    last byte) would then close the new one, a real callback reset before it is read.
    Here an event goes only to the object it was polled for.
    """
    polled: dict[int, Any] = {}
    pollster = select.poll()
    for fd, obj in list(socket_map.items()):
        flags = 0
        if obj.readable():
            flags |= select.POLLIN | select.POLLPRI
        if obj.writable() and not obj.accepting:  # a listening socket is never writable
            flags |= select.POLLOUT
        if flags and _same(socket_map.get(fd), obj):  # readable() may have closed it
            pollster.register(fd, flags)
            polled[fd] = obj
    if not polled:
        time.sleep(timeout)
        return
    try:
        ready = pollster.poll(int(timeout * 1000))
    except InterruptedError:
        return
    for fd, flags in ready:
        if _same(socket_map.get(fd), polled[fd]):  # still the connection it is about
            wasyncore.readwrite(polled[fd], flags)


def _same(a: object, b: object) -> bool:
    return a is b
