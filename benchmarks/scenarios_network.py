"""Network chaos scenarios: a receiver under a connection flood, a provider that trickles.

1. :func:`receiver_flood`: ``massiva-frames receive`` (a subprocess) while hundreds of
   connections are held open against it, some silent, some sending a header byte a
   second, reopened as soon as the receiver closes them. Real callbacks (a new
   connection each, as a provider sends them) are timed before and during the attack:
   p50/p99/max latency, how many were answered, stored once, lost. ``stock=True`` runs
   the same attack against the same application on waitress's stock settings (the
   receiver before its connection guard), with a short client timeout.
2. :func:`trickling_provider`: a send through a provider that answers its status line
   and then one header byte a second. The client's total deadline ends each request; the
   send finishes within the deadline (per round of concurrent requests), every row is
   ``unknown``, and a re-run on the same journal sends nothing.

Each function returns a dataclass of figures; ``python benchmarks/scenarios_network.py
[--quick] [--stock]`` prints them. ``--quick`` uses the sizes tests/test_scenarios_network.py
runs (under a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import logging
import math
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = [
    "FULL",
    "QUICK",
    "Flood",
    "FloodFigures",
    "Sizes",
    "TrickleFigures",
    "main",
    "receiver_flood",
    "timed_callback",
    "trickling_provider",
]

ROOT = Path(__file__).resolve().parent.parent
#: a request line and headers that never end: the slow connections send it byte by byte
_ENDLESS = b"GET /recepcionsms?id=1&estatus=1 HTTP/1.1\r\nHost: receiver\r\nX-Pad: "


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is."""

    idle: int = 400
    slow: int = 200
    connection_limit: int = 500
    callbacks: int = 200
    warmup_seconds: float = 3.0
    trickle_rows: int = 2_000
    trickle_deadline: float = 3.0


FULL = Sizes()
QUICK = Sizes(idle=200, slow=100, connection_limit=200, callbacks=60, warmup_seconds=2.0,
              trickle_rows=300, trickle_deadline=1.5)  # fmt: skip


# --- the attack -------------------------------------------------------------------------


class Flood:
    """Hold ``idle`` silent and ``slow`` trickling connections open to ``host:port``.

    One thread; a connection the server closes is reopened (at most ``opens_per_tick``
    every 20 ms), as an attacker would. A slow connection sends the next byte of a
    never-ending header every ``interval`` seconds.

    Attributes
    ----------
    opened, closed_by_server : int
        Connections made, and closed by the server, since the start.
    held_min, held_mean : int, float
        The fewest, and the mean number of, connections held open since :meth:`measure`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        idle: int,
        slow: int,
        interval: float = 1.0,
        opens_per_tick: int = 40,
    ) -> None:
        self.addr = (host, port)
        self.targets = {"idle": idle, "slow": slow}
        self.interval = interval
        self.opens_per_tick = opens_per_tick
        self.opened = 0
        self.closed_by_server = 0
        self.held_min = 0
        self._held_sum = 0
        self._samples = 0
        self._measuring = False
        self._socks: dict[socket.socket, list[Any]] = {}  # sock -> [kind, next send, sent]
        self._sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)

    @property
    def held(self) -> int:
        """Connections open right now."""
        return len(self._socks)

    def start(self, settle: float = 10.0) -> Flood:
        """Start, and wait (at most ``settle`` s) until every connection is open."""
        self._thread.start()
        until = time.monotonic() + settle
        total = sum(self.targets.values())
        while self.held < total and time.monotonic() < until:
            time.sleep(0.02)
        return self

    @property
    def held_mean(self) -> float:
        """Mean connections held open since :meth:`measure` (sampled every 20 ms)."""
        return self._held_sum / self._samples if self._samples else float(self.held)

    def measure(self) -> None:
        """From now on, keep the fewest connections held at once in ``held_min``."""
        self.held_min = self.held
        self._measuring = True

    def stop(self) -> None:
        """Stop and close every connection."""
        self._stop.set()
        self._thread.join(30)
        for sock in list(self._socks):
            self._drop(sock, by_server=False)
        self._sel.close()

    def _open(self, kind: str) -> None:
        try:
            sock = socket.create_connection(self.addr, timeout=1.0)
        except OSError:
            return
        sock.setblocking(False)
        self._socks[sock] = [kind, time.monotonic() + self.interval, 0]
        self._sel.register(sock, selectors.EVENT_READ)
        self.opened += 1

    def _drop(self, sock: socket.socket, *, by_server: bool) -> None:
        if self._socks.pop(sock, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)
        sock.close()
        self.closed_by_server += by_server

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._socks:
                events = self._sel.select(timeout=0.02)
            else:
                events = []
                time.sleep(0.02)
            for key, _ in events:
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:  # closed by the server (an answer would be a refusal: 4xx)
                    self._drop(sock, by_server=True)
            now = time.monotonic()
            for sock, state in list(self._socks.items()):
                if state[0] == "slow" and state[1] <= now:
                    sent = state[2]
                    byte = _ENDLESS[sent : sent + 1] or b"a"
                    try:
                        sock.send(byte)
                    except OSError:
                        self._drop(sock, by_server=True)
                        continue
                    state[1], state[2] = now + self.interval, sent + 1
            if self._measuring:
                self.held_min = min(self.held_min, self.held)
                self._held_sum += self.held
                self._samples += 1
            opens = 0
            for kind, target in self.targets.items():
                have = sum(1 for s in self._socks.values() if s[0] == kind)
                while have < target and opens < self.opens_per_tick:
                    self._open(kind)
                    have, opens = have + 1, opens + 1


# --- real callbacks ---------------------------------------------------------------------


def timed_callback(
    host: str, port: int, query: str, timeout: float, errors: list[str] | None = None
) -> tuple[int | None, float]:
    """One status callback on a new connection: (HTTP status or None, seconds).

    A failure's ``Type: message`` is appended to ``errors`` when given.
    """
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", f"/recepcionsms?{query}")
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.monotonic() - start
    except (OSError, http.client.HTTPException) as exc:
        if errors is not None:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
        return None, time.monotonic() - start
    finally:
        conn.close()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class FloodFigures:
    """Callback latencies without and under the attack, and what happened to them."""

    server: str
    idle: int
    slow: int
    connection_limit: int | None
    request_timeout: float | None
    callbacks: int = 0
    answered: int = 0  # 200 within the client timeout
    stored: int = 0  # answered and found once in the logs
    lost: int = 0  # answered 200, not stored
    duplicated: int = 0
    held_min: int = 0  # fewest attack connections open at once while callbacks ran
    held_mean: float = 0.0  # their mean number
    closed_by_server: int = 0
    p50_quiet: float = math.nan
    p99_quiet: float = math.nan
    p50: float = math.nan
    p99: float = math.nan
    max: float = math.nan
    client_timeout: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The figures as a plain dict."""
        return asdict(self)


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise RuntimeError(f"the receiver exited with {proc.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return
        conn.close()
        time.sleep(0.05)
    raise RuntimeError("the receiver did not become healthy")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# The receiver's application on waitress's stock settings: the receiver before its guard.
_STOCK = """
import signal, sys
from waitress.server import create_server
from massiva_frames.receiving.event_journal import DurableLog
from massiva_frames.receiving.receiver import CallbackApp
log = DurableLog(sys.argv[1])
server = create_server(CallbackApp(log), host="127.0.0.1", port=int(sys.argv[2]), threads=8)
signal.signal(signal.SIGTERM, lambda *a: server.close() or log.close() or sys.exit(0))
server.run()
"""


def _start_receiver(
    logdir: Path, port: int, stock: bool, limit: int, request_timeout: float
) -> subprocess.Popen[bytes]:
    if stock:
        cmd = [sys.executable, "-c", _STOCK, str(logdir), str(port)]
    else:
        cmd = [
            sys.executable, "-m", "massiva_frames.faces.cli", "receive", "--dir", str(logdir),
            "--port", str(port), "--connection-limit", str(limit),
            "--request-timeout", str(request_timeout),
        ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(port, proc)
    except BaseException:
        proc.kill()
        proc.wait(30)
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def receiver_flood(
    sizes: Sizes = QUICK,
    workdir: Path | None = None,
    *,
    stock: bool = False,
    request_timeout: float = 10.0,
    client_timeout: float | None = None,
    pace: float = 0.02,
    give_up_after: int = 3,
) -> FloodFigures:
    """Time real callbacks while ``sizes.idle + sizes.slow`` connections are held open.

    ``client_timeout`` bounds each callback (default: 60 s, or 5 s with ``stock=True``,
    whose callbacks would otherwise wait minutes); ``pace`` is the pause between them;
    after ``give_up_after`` unanswered callbacks in a row the attack stops (the figures
    then show fewer answered than tried).
    """
    import pandas as pd

    from massiva_frames.receiving import read_callbacks

    started = time.monotonic()
    timeout = client_timeout if client_timeout is not None else (5.0 if stock else 60.0)
    fig = FloodFigures(
        server="waitress stock settings" if stock else "massiva-frames receive",
        idle=sizes.idle,
        slow=sizes.slow,
        connection_limit=None if stock else sizes.connection_limit,
        request_timeout=None if stock else request_timeout,
        client_timeout=timeout,
    )
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        logdir = Path(tmp) / "logs"
        port = _free_port()
        proc = _start_receiver(logdir, port, stock, sizes.connection_limit, request_timeout)
        ids: dict[int, int] = {}
        quiet: list[float] = []
        loud: list[float] = []
        errors: list[str] = []
        try:
            n_quiet = min(50, sizes.callbacks)
            for i in range(n_quiet):
                status, seconds = timed_callback("127.0.0.1", port, f"id={i}&estatus=1", timeout)
                ids[i] = status or 0
                quiet.append(seconds)
            flood = Flood("127.0.0.1", port, idle=sizes.idle, slow=sizes.slow).start()
            try:
                time.sleep(sizes.warmup_seconds)  # slow ones have sent a few bytes by now
                flood.measure()
                n_stock = min(sizes.callbacks, 5)  # each may wait the whole timeout
                unanswered = 0
                for i in range(n_quiet, n_quiet + (n_stock if stock else sizes.callbacks)):
                    query = f"id={i}&estatus=1"
                    status, seconds = timed_callback("127.0.0.1", port, query, timeout, errors)
                    ids[i] = status or 0
                    loud.append(seconds)
                    unanswered = 0 if status == 200 else unanswered + 1
                    if unanswered >= give_up_after:
                        fig.notes.append(f"gave up after {unanswered} unanswered callbacks")
                        break
                    time.sleep(pace)
                fig.held_min, fig.held_mean = flood.held_min, flood.held_mean
            finally:
                flood.stop()
            fig.closed_by_server = flood.closed_by_server
        finally:
            _stop(proc)
        fig.callbacks = len(loud)
        fig.notes += [f"unanswered: {e}" for e in errors[:5]]
        answered = {i for i, status in ids.items() if status == 200}
        fig.answered = len(answered & set(range(n_quiet, n_quiet + len(loud))))
        status_log = read_callbacks(logdir, kind="status")
        raw = pd.Series(status_log["message_id"].dropna().astype(int))
        counts = raw.value_counts()
        stored = set(counts.index)
        fig.stored = len(answered & stored & set(range(n_quiet, n_quiet + len(loud))))
        fig.lost = len(answered - stored)
        fig.duplicated = int((counts > 1).sum())
    fig.p50_quiet, fig.p99_quiet = _percentile(quiet, 0.5), _percentile(quiet, 0.99)
    fig.p50, fig.p99 = _percentile(loud, 0.5), _percentile(loud, 0.99)
    fig.max = max(loud, default=math.nan)
    fig.seconds = time.monotonic() - started
    return fig


# --- a provider that trickles its headers -----------------------------------------------


class _TricklingProvider:
    """Answers the credit query at once, and SendSms with a status line and then one
    header byte every ``every`` seconds (for at most ``limit`` seconds)."""

    def __init__(self, every: float = 1.0, limit: float = 120.0) -> None:
        self.sends = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = b"<respuesta><creditos>1000000</creditos><mensaje>ok</mensaje></respuesta>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.sends += 1
                self.close_connection = True
                until = time.monotonic() + limit
                try:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    while time.monotonic() < until:
                        self.wfile.write(b"X")
                        self.wfile.flush()
                        time.sleep(every)
                except OSError:
                    pass  # the client gave up at its deadline

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/webservices"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@dataclass
class TrickleFigures:
    """A send through a header-trickling provider: how long, and what became of the rows."""

    rows: int
    requests: int = 0
    deadline: float = 0.0
    bound: float = 0.0  # the longest the send may take: rounds x deadline + slack
    seconds: float = 0.0
    unknown: int = 0
    accepted: int = 0
    resent: int = 0  # requests a re-run on the same journal made (must be 0)
    hangs: int = 0  # 1 when the send took longer than the bound
    deadline_threads_left: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The figures as a plain dict."""
        return asdict(self)


def trickling_provider(
    sizes: Sizes = QUICK, workdir: Path | None = None, *, concurrency: int = 4
) -> TrickleFigures:
    """Send ``sizes.trickle_rows`` rows through a provider that trickles its headers."""
    import pandas as pd

    from massiva_frames.sending.campaign import send
    from massiva_frames.wire.client import MassivaClient

    rows, deadline = sizes.trickle_rows, sizes.trickle_deadline
    fig = TrickleFigures(rows=rows, deadline=deadline)
    df = pd.DataFrame({"phone": [f"0414{1000000 + i:07d}" for i in range(rows)]})
    provider = _TricklingProvider()
    try:
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            journal = Path(tmp) / "sends.db"
            with MassivaClient(
                "chaos@massiva.test", "pw", provider.base_url, timeout=(2, 30), deadline=deadline
            ) as client:
                start = time.monotonic()
                results = send(df, client=client, template="Hola", journal=journal,
                               concurrency=concurrency, progress=False)  # fmt: skip
                fig.seconds = time.monotonic() - start
                fig.requests = provider.sends
                rounds = math.ceil(fig.requests / concurrency)
                fig.bound = rounds * deadline + 5.0
                fig.hangs = int(fig.seconds > fig.bound)
                fig.unknown = int((results["state"] == "unknown").sum())
                fig.accepted = int((results["state"] == "accepted").sum())
                send(df, client=client, template="Hola", journal=journal, progress=False)
                fig.resent = provider.sends - fig.requests
    finally:
        provider.close()
    fig.deadline_threads_left = sum(
        1 for t in threading.enumerate() if t.name == "massiva-deadline"
    )
    return fig


# --- command line -----------------------------------------------------------------------


def _show(title: str, figures: dict[str, Any]) -> None:
    print(title)
    for name, value in figures.items():
        if isinstance(value, float):
            value = f"{value:.3f}"
        print(f"  {name:24} {value}")


def main(argv: list[str] | None = None) -> int:
    """Run both scenarios and print their figures; exit 1 if a guarantee failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the sizes the tests use")
    parser.add_argument(
        "--stock", action="store_true", help="also flood waitress's stock settings (~1 min)"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sizes = QUICK if args.quick else FULL
    logging.getLogger("massiva_frames").setLevel(logging.ERROR)  # the figures say it all
    flood = receiver_flood(sizes)
    _show("receiver under a connection flood, over its limit", flood.as_dict())
    roomy = replace(sizes, connection_limit=sizes.idle + sizes.slow + 100)
    under = receiver_flood(roomy)
    _show("the same flood under the limit (closed at the request deadline only)", under.as_dict())
    failed = any(f.lost or f.duplicated or f.answered < f.callbacks for f in (flood, under))
    if args.stock:
        _show(
            "the same flood, waitress stock settings", receiver_flood(sizes, stock=True).as_dict()
        )
    trickle = trickling_provider(sizes)
    _show("a provider that trickles its headers", trickle.as_dict())
    failed = failed or trickle.hangs or trickle.resent or trickle.accepted
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
