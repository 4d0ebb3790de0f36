"""Delayed dispatch of accepted messages and delivery of the provider's callbacks.

One scheduler thread keeps a heap of due jobs. A *dispatch* job decides a message's
final status (its fate was drawn when it was accepted) and queues the status callback
(docs/protocol.md §2) and, for a share of delivered messages, an inbound reply
(docs/protocol.md §3); a
*dispatch_group* job does the same for the ids of a request that share one due time
(no jitter), so a 500-phone request costs one heap entry, not 500. A
small pool of worker threads, each keeping its connections alive, delivers the
callbacks; a failed delivery (connection refused, timeout, non-200) goes back on the
heap with exponential backoff, a bounded number of times. Like the provider, the
sandbox may therefore deliver the same callback twice.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from .state import CARACAS, SandboxState

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CallbackRecord", "Dispatcher", "callback_url"]

logger = logging.getLogger("massiva_frames.sandbox")
_UTC = "datetime64[us, UTC]"
#: Heap entries that dispatch messages: one id ("dispatch") or a request's ids sharing
#: one due time ("dispatch_group"); the others ("deliver") carry a callback.
_DISPATCH_KINDS = frozenset({"dispatch", "dispatch_group"})


class _Poster:
    """GETs URLs over kept-alive ``http.client`` connections, one per host.

    Twice the rate of a ``requests.Session`` on loopback; a worker owns one.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._conns: dict[tuple[str, str], http.client.HTTPConnection] = {}

    def _connect(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        if scheme == "https":
            return http.client.HTTPSConnection(netloc, timeout=self.timeout)
        return http.client.HTTPConnection(netloc, timeout=self.timeout)

    def get(self, url: str) -> int:
        """GET ``url``, read the body, return the HTTP status (raises OSError/HTTPException)."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        reused = key in self._conns
        while True:
            conn = self._conns.get(key) or self._conns.setdefault(key, self._connect(*key))
            try:
                conn.request("GET", target, headers={"User-Agent": "massiva-sandbox"})
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                del self._conns[key]
                if reused:  # a kept-alive connection the server had closed: once more
                    reused = False
                    continue
                raise
            if resp.will_close:
                conn.close()
                del self._conns[key]
            return resp.status

    def close(self) -> None:
        """Close every connection."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


def callback_url(base: str, params: dict[str, str]) -> str:
    """Append ``params`` to ``base`` with ``?`` or, when it has a query already, ``&``.

    Examples
    --------
    >>> callback_url("http://h/r?token=t", {"id": "1", "detalle": "ERROR EN ENVIO"})
    'http://h/r?token=t&id=1&detalle=ERROR+EN+ENVIO'
    """
    query = urlencode(params)
    if "?" not in base:
        return f"{base}?{query}"
    if base.endswith(("?", "&")):
        return base + query
    return f"{base}&{query}"


@dataclass
class CallbackRecord:
    """One callback the sandbox owes: what it carries and how delivery went."""

    kind: str  # "status" | "inbound"
    message_id: int | None
    params: dict[str, str]
    url: str = field(repr=False)
    attempts: int = 0
    delivered: bool = False
    gave_up: bool = False
    http_status: int | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    delivered_at: datetime | None = None


class Dispatcher:
    """Schedules dispatches and delivers callbacks in background threads.

    Parameters
    ----------
    state
        The sandbox's books (messages are finalised there).
    urls
        Returns the current ``(status_url, inbound_url)``; read at dispatch time.
    delay
        Seconds between acceptance and dispatch (also before an inbound reply).
    jitter
        Up to this many seconds more, per message (spread like real carriers' delays;
        derived from the message id, so a run is reproducible).
    workers
        Threads delivering callbacks.
    max_attempts, backoff
        A failed delivery is retried after ``backoff * 2**(attempt-1)`` seconds (capped
        at 2 s) until ``max_attempts`` attempts were made.
    """

    def __init__(
        self,
        state: SandboxState,
        urls: Callable[[], tuple[str | None, str | None]],
        *,
        delay: float = 0.5,
        jitter: float = 0.0,
        workers: int = 4,
        max_attempts: int = 5,
        backoff: float = 0.1,
        timeout: tuple[float, float] = (2.0, 5.0),
    ) -> None:
        self.state = state
        self.urls = urls
        self.delay = delay
        self.jitter = jitter
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.timeout = timeout
        self._n_workers = workers
        self._lock = threading.Lock()
        # Two conditions on one lock: the scheduler is woken by new work, waiters only
        # when nothing is outstanding (waking them per callback would cost O(n) each).
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self._ready: queue.SimpleQueue[CallbackRecord | None] = queue.SimpleQueue()
        self._outstanding = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._records: list[CallbackRecord] = []

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler and the delivery workers."""
        sched = threading.Thread(target=self._schedule_loop, name="sandbox-scheduler", daemon=True)
        self._threads = [sched]
        for i in range(self._n_workers):
            t = threading.Thread(target=self._work_loop, name=f"sandbox-callback-{i}", daemon=True)
            self._threads.append(t)
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every thread; pending dispatches and callbacks are abandoned."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            self._idle.notify_all()
        for _ in range(self._n_workers):
            self._ready.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # -- scheduling -----------------------------------------------------------------------
    def _push(self, due: float, kind: str, payload: Any) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), kind, payload))

    def schedule(self, ids: tuple[int, ...]) -> None:
        """Dispatch the messages ``ids`` after the delay."""
        due = time.monotonic() + self.delay
        with self._lock:
            if self.jitter > 0:
                for mid in ids:
                    self._push(due + self._jitter_of(mid), "dispatch", mid)
            elif ids:
                # One due time for all: one entry, dispatched in id order like single ones.
                self._push(due, "dispatch_group", tuple(ids))
            self._outstanding += len(ids)
            self._wake.notify()

    def _jitter_of(self, mid: int) -> float:
        if self.jitter <= 0:
            return 0.0
        # Knuth's multiplicative hash: a fixed, well-spread fraction per message id.
        return self.jitter * ((mid * 2654435761) % 2**32) / 2**32

    def emit(self, kind: str, url: str, params: dict[str, str], *, delay: float = 0.0) -> None:
        """Deliver one callback to ``url`` after ``delay`` seconds."""
        rec = CallbackRecord(kind, None, params, url)
        with self._lock:
            self._records.append(rec)
            self._outstanding += 1
            self._push(time.monotonic() + delay, "deliver", rec)
            self._wake.notify()

    def dispatch_now(self) -> None:
        """Make every pending dispatch due now (retries keep their backoff)."""
        now = time.monotonic()
        with self._lock:
            self._heap = [
                (now if kind in _DISPATCH_KINDS else due, seq, kind, payload)
                for due, seq, kind, payload in self._heap
            ]
            heapq.heapify(self._heap)
            self._wake.notify()

    def wait(self, timeout: float = 10.0) -> bool:
        """Wait until every callback due before the deadline is delivered or given up.

        Returns False when the timeout expires first. Dispatches scheduled after the
        deadline do not hold it back (call :meth:`dispatch_now` first to include them).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if self._outstanding == 0:
                    return True
                now = time.monotonic()
                later = 0  # messages whose dispatch is due after the deadline
                for due, _, kind, payload in self._heap:
                    if due > deadline:
                        if kind == "dispatch":
                            later += 1
                        elif kind == "dispatch_group":
                            later += len(payload)
                if later == self._outstanding:
                    return True
                if now >= deadline:
                    return False
                self._idle.wait(min(deadline - now, 0.05))

    def records(self) -> list[CallbackRecord]:
        """Every callback created so far, in creation order."""
        with self._lock:
            return list(self._records)

    def frame(self) -> pd.DataFrame:
        """The callbacks as a DataFrame (the receiving URL is left out: it may hold a token)."""
        import pandas as pd

        recs = self.records()
        return pd.DataFrame(
            {
                "kind": pd.Series([r.kind for r in recs], dtype="string"),
                "message_id": pd.Series([r.message_id for r in recs], dtype="Int64"),
                "params": [dict(r.params) for r in recs],
                "attempts": pd.Series([r.attempts for r in recs], dtype="int64"),
                "delivered": pd.Series([r.delivered for r in recs], dtype="bool"),
                "gave_up": pd.Series([r.gave_up for r in recs], dtype="bool"),
                "http_status": pd.Series([r.http_status for r in recs], dtype="Int64"),
                "error": pd.Series([r.error for r in recs], dtype="string"),
                "created_at": pd.Series([r.created_at for r in recs], dtype=_UTC),
                "delivered_at": pd.Series([r.delivered_at for r in recs], dtype=_UTC),
            }
        )

    # -- threads --------------------------------------------------------------------------
    def _schedule_loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and (
                    not self._heap or self._heap[0][0] > time.monotonic()
                ):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(wait)
                if self._stopping:
                    return
                due: list[tuple[str, Any]] = []
                # Up to about 1,000 jobs per turn of the lock (a group counts its ids).
                n_due = 0
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now and n_due < 1000:
                    _, _, kind, payload = heapq.heappop(self._heap)
                    due.append((kind, payload))
                    n_due += len(payload) if kind == "dispatch_group" else 1
            for kind, payload in due:
                if kind == "dispatch":
                    self._dispatch(payload)
                elif kind == "dispatch_group":
                    for mid in payload:
                        self._dispatch(mid)
                else:
                    self._ready.put(payload)

    def _dispatch(self, mid: int) -> None:
        now = datetime.now(UTC)
        msg = self.state.finalize(mid, now)
        status_url, inbound_url = self.urls()
        new: list[tuple[float, CallbackRecord]] = []
        if msg is not None and status_url:
            # docs/protocol.md §2: id, estatus, fecha_actualizacion (local time), usuario, detalle.
            params = {
                "id": str(msg.id),
                "estatus": "2" if msg.fails else "1",
                "fecha_actualizacion": f"{now.astimezone(CARACAS):%Y-%m-%d %H:%M:%S}",
                "usuario": msg.usuario,
                "detalle": "ERROR EN ENVIO" if msg.fails else f"+{msg.line}",
            }
            new.append((0.0, CallbackRecord("status", msg.id, params, status_url)))
        if msg is not None and msg.reply is not None and inbound_url:
            # docs/protocol.md §3: msg, phone, linea, email.
            params = {"msg": msg.reply, "phone": msg.phone, "linea": msg.line, "email": msg.usuario}
            new.append((self.delay, CallbackRecord("inbound", msg.id, params, inbound_url)))
        with self._lock:
            for delay, rec in new:
                self._records.append(rec)
                if delay <= 0:
                    self._ready.put(rec)
                else:
                    self._push(time.monotonic() + delay, "deliver", rec)
            self._outstanding += len(new) - 1
            if len(new) > 1 or (new and new[0][0] > 0):
                self._wake.notify()
            if self._outstanding == 0:
                self._idle.notify_all()

    def _work_loop(self) -> None:
        poster = _Poster(self.timeout[1])
        try:
            while True:
                rec = self._ready.get()
                if rec is None:
                    return
                self._deliver(poster, rec)
        finally:
            poster.close()

    def _deliver(self, poster: _Poster, rec: CallbackRecord) -> None:
        rec.attempts += 1
        try:
            rec.http_status = poster.get(callback_url(rec.url, rec.params))
            ok = rec.http_status == 200
            rec.error = None if ok else f"HTTP {rec.http_status}"
        except (OSError, http.client.HTTPException) as exc:
            ok = False
            rec.error = type(exc).__name__
        with self._lock:
            if ok:
                rec.delivered = True
                rec.delivered_at = datetime.now(UTC)
            elif rec.attempts < self.max_attempts and not self._stopping:
                pause = min(2.0, self.backoff * 2 ** (rec.attempts - 1))
                self._push(time.monotonic() + pause, "deliver", rec)
                self._wake.notify()
                return
            else:
                rec.gave_up = True
                logger.warning(
                    "%s callback for message %s given up after %d attempt(s): %s",
                    rec.kind,
                    rec.message_id,
                    rec.attempts,
                    rec.error,
                )
            self._outstanding -= 1
            if self._outstanding == 0:
                self._idle.notify_all()
