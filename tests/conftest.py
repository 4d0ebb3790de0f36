"""Shared fixtures: a fresh sandbox server, a callback sink, a scripted server, a free port,
a way to hold a callback journal's commits, :func:`require_or_skip` for tests of optional
tools (nginx, Chromium, PostgreSQL, Java, Dask, ...), and the engines (one local Spark
session and one Dask ``LocalCluster`` for the whole test session).

Every server here listens on 127.0.0.1 only and is stopped when the test ends. A
throwaway PostgreSQL cluster (``pg_server``, ``pg_url``) comes from ``pg_server.py``;
:func:`require_or_skip` is how a test needs a program the machine may lack (Chromium,
nginx, PostgreSQL).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from pg_server import journal_at, pg_server, pg_url  # noqa: F401 - fixtures

from massiva_frames.sandbox import Sandbox, sandbox


def require_or_skip(name: str, available: bool, how: str) -> None:
    """Skip the calling test when ``name`` is missing, or fail it when ``name`` is required.

    A plain ``python -m pytest`` on a machine without the program reports a skip that says
    how to get it; ``MASSIVA_REQUIRE_<NAME>=1`` (``.ci/run`` sets it after installing the
    program) turns that skip into a failure, so a missing install step cannot pass as a skip.

    Parameters
    ----------
    name : str
        Short name of what is needed, e.g. ``"browser"``; upper-cased for the variable.
    available : bool
        Whether it is there.
    how : str
        How to get it, e.g. ``"apt-get install chromium"``.

    Examples
    --------
    >>> require_or_skip("browser", Path("/usr/bin/chromium").exists(), "apt-get install chromium")
    """
    if available:
        return
    variable = f"MASSIVA_REQUIRE_{name.upper()}"
    message = f"{name} is not available; to run this test: {how}"
    if os.environ.get(variable, "").strip() not in ("", "0"):
        pytest.fail(f"{message} ({variable} is set, so this is a failure)", pytrace=False)
    pytest.skip(f"{message} (set {variable}=1 to make its absence a failure)")


@pytest.fixture
def sandbox_server() -> Iterator[Sandbox]:
    """A fresh :class:`~massiva_frames.sandbox.Sandbox` on a free port, default settings.

    Account ``sb.usuario``/``sb.clave`` with 1000 credits, callbacks off (set them with
    ``sb.set_callback_urls``), ``callback_delay=0.5``, ``fail_ratio=0.1``, ``seed=0``.
    Pass ``sb.base_url`` to the client.
    """
    with sandbox() as sb:
        yield sb


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (nothing listens on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Sink:
    """A tiny HTTP server that records every GET (callbacks) and answers 200 ``OK``.

    ``hits`` holds ``(path, [(key, value), ...])`` in arrival order, keys in the order
    sent; ``fail_next(n, status)`` makes the next ``n`` requests answer ``status``.
    """

    def __init__(self) -> None:
        self.hits: list[tuple[str, list[tuple[str, str]]]] = []
        self.failures = 0
        self._fail_left = 0
        self._fail_status = 500
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on keep-alive

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                with sink._lock:
                    if sink._fail_left > 0:
                        sink._fail_left -= 1
                        sink.failures += 1
                        status = sink._fail_status
                    else:
                        status = 200
                        sink.hits.append((parts.path, parse_qsl(parts.query, True)))
                body = b"OK" if status == 200 else b"error"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/recepcionsms"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self._thread.daemon = True
        self._thread.start()

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer ``status`` to the next ``n`` requests (they are not recorded in hits)."""
        with self._lock:
            self._fail_left = n
            self._fail_status = status

    def params(self) -> list[dict[str, str]]:
        """The recorded hits' parameters as dicts."""
        with self._lock:
            return [dict(p) for _, p in self.hits]

    def wait_for(self, n: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``n`` hits arrived; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.hits) >= n:
                    return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def http_sink() -> Iterator[Sink]:
    """A :class:`Sink` callback receiver on a free port; ``http_sink.url`` ends in /recepcionsms."""
    sink = Sink()
    try:
        yield sink
    finally:
        sink.close()


class Scripted:
    """A tiny HTTP server answering every request with ``respond(handler)``.

    ``hits`` counts the requests; ``bodies`` and ``content_types`` keep what each sent.
    """

    def __init__(self, respond: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.hits = 0
        self.bodies: list[bytes] = []
        self.content_types: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                outer.hits += 1
                length = int(self.headers.get("Content-Length") or 0)
                outer.bodies.append(self.rfile.read(length))
                outer.content_types.append(self.headers.get("Content-Type"))
                respond(self)

            do_GET = do_POST = handle_one  # noqa: N815

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
        self.thread.join(5)


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[BaseHTTPRequestHandler], None]], Scripted]]:
    """Start :class:`Scripted` servers (``scripted(respond)``); all closed after the test."""
    servers: list[Scripted] = []

    def start(respond: Callable[[BaseHTTPRequestHandler], None]) -> Scripted:
        servers.append(Scripted(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class HeldConnection:
    """A callback journal's connection, held at ``BEGIN IMMEDIATE`` until ``release`` is set.

    ``entered`` is set once a commit is held; ``ids`` holds the callback ids it carries.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.entered = threading.Event()
        self.release = threading.Event()
        self.ids: set[str] = set()
        self._holding = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "BEGIN IMMEDIATE" and not self.release.is_set():
            self._holding = True
            self.entered.set()
            assert self.release.wait(30), "the test never released the writer"
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        rows = list(rows)
        if self._holding:  # the held transaction's events
            self.ids |= {str(row[2]) for row in rows}
            self._holding = False
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.fixture
def hold_commits() -> Iterator[Callable[[Any], HeldConnection]]:
    """``hold_commits(log)`` holds a ``DurableLog``'s next commit until ``.release.set()``.

    Every hold is released when the test ends.
    """
    held: list[HeldConnection] = []

    def hold(log: Any) -> HeldConnection:
        connection = HeldConnection(log._conn)
        log._conn = connection
        held.append(connection)
        return connection

    yield hold
    for connection in held:
        connection.release.set()


SPARK_HOW = "pip install 'massiva-frames[spark]' and apt-get install openjdk-17-jre-headless"
DASK_HOW = "pip install 'massiva-frames[dask]'"


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    """One local Spark session (2 cores, UTC, few shuffle partitions) for every test."""
    available = importlib.util.find_spec("pyspark") is not None and shutil.which("java") is not None
    require_or_skip("spark", available, SPARK_HOW)
    import warnings

    from pyspark.sql import SparkSession

    # The Python workers must run this interpreter (the one with massiva_frames).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = (
            SparkSession.builder.master("local[2]")
            .appName("massiva-frames-tests")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.default.parallelism", "2")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.memory", "1g")
            .getOrCreate()
        )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A Dask ``LocalCluster`` of 2 worker processes (1 thread each) and its client."""
    available = all(importlib.util.find_spec(m) is not None for m in ("dask", "distributed"))
    require_or_skip("dask", available, DASK_HOW)
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        memory_limit="1GiB",
        host="127.0.0.1",
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
