"""The receiver under connection exhaustion: request deadline, eviction at the limit.

Live receivers on 127.0.0.1 and raw sockets that send nothing, or a byte at a time;
real callbacks must be answered promptly however many of those are open.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from massiva_frames.errors import InputError
from massiva_frames.faces.commands import receive as receive_command
from massiva_frames.receiving import Receiver, read_callbacks, receiver
from massiva_frames.receiving.server import DEFAULT_CONNECTION_LIMIT, DEFAULT_REQUEST_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent


def _load_scenarios() -> ModuleType:
    path = ROOT / "benchmarks" / "scenarios_network.py"
    spec = importlib.util.spec_from_file_location("massiva_scenarios_network", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


scenarios = _load_scenarios()


def _callback(rc: Receiver, i: int, timeout: float = 10.0) -> tuple[int | None, float]:
    result: tuple[int | None, float] = scenarios.timed_callback(
        rc.host, rc.port, f"id={i}&estatus=1", timeout
    )
    return result


def _answer(sock: socket.socket) -> bytes:
    """One whole answer of the receiver (its body is ``OK``)."""
    data = b""
    while b"\r\n\r\nOK\n" not in data:
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def _closed_within(sock: socket.socket, seconds: float, trickle: float | None = None) -> float:
    """Seconds until the server closed ``sock`` (sending a byte every ``trickle`` s
    meanwhile); ``seconds`` is the most this waits."""
    start = time.monotonic()
    sock.settimeout(trickle or seconds)
    sent = 0
    header = b"GET /recepcionsms?id=1&estatus=1 HTTP/1.1\r\nHost: x\r\nX-Pad: "
    while time.monotonic() - start < seconds:
        if trickle is not None:
            try:
                sock.send(header[sent : sent + 1] or b"a")
                sent += 1
            except OSError:
                return time.monotonic() - start
        try:
            if sock.recv(1024) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
    return float("inf")


@pytest.fixture
def quick(tmp_path: Path) -> Iterator[Receiver]:
    with receiver(tmp_path / "logs", request_timeout=1.0, compact_interval=3600) as rc:
        yield rc


@pytest.mark.parametrize("trickle", [None, 0.2], ids=["silent", "a byte every 0.2 s"])
def test_a_connection_that_does_not_deliver_its_request_is_closed(
    quick: Receiver, trickle: float | None
) -> None:
    with socket.create_connection((quick.host, quick.port), timeout=5) as sock:
        closed = _closed_within(sock, 10.0, trickle)
    # 1 s deadline, checked every second: closed between 1 and ~2 s, bytes or not.
    assert 0.9 < closed < 3.5
    assert quick._server.expired >= 1


def test_a_slow_but_timely_request_is_served(quick: Receiver) -> None:
    request = b"GET /recepcionsms?id=7&estatus=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((quick.host, quick.port), timeout=5) as sock:
        for i in range(0, len(request), 6):  # ~0.5 s in all
            sock.send(request[i : i + 6])
            time.sleep(0.05)
        assert _answer(sock).startswith(b"HTTP/1.1 200")
    assert read_callbacks(quick.logdir)["message_id"].tolist() == [7]


def test_a_kept_alive_connection_has_the_deadline_between_requests(quick: Receiver) -> None:
    request = b"GET /recepcionsms?id=%d&estatus=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((quick.host, quick.port), timeout=5) as sock:
        for i in range(3):  # each within the deadline of the previous answer
            sock.sendall(request % i)
            assert _answer(sock).startswith(b"HTTP/1.1 200")
            time.sleep(0.4)
        closed = _closed_within(sock, 10.0)
    assert 0.4 < closed < 3.5
    assert read_callbacks(quick.logdir)["message_id"].tolist() == [0, 1, 2]


def test_a_request_being_served_is_never_cut(tmp_path: Path) -> None:
    # Storage slower than the deadline: the request is complete, so it is being served.
    with receiver(tmp_path / "logs", request_timeout=0.5, compact_interval=3600) as rc:
        write = rc.app.log.write

        def slow_write(*args: Any, **kwargs: Any) -> None:
            time.sleep(2.0)
            write(*args, **kwargs)

        rc.app.log.write = slow_write  # type: ignore[method-assign]
        status, seconds = _callback(rc, 5)
        assert status == 200 and 1.9 < seconds < 5
    assert read_callbacks(tmp_path / "logs")["message_id"].tolist() == [5]


def test_at_the_limit_the_longest_waiting_connection_makes_room(tmp_path: Path) -> None:
    with receiver(tmp_path / "logs", connection_limit=20, request_timeout=60,
                  compact_interval=3600) as rc:  # fmt: skip
        socks = []
        try:
            for _ in range(60):  # three times the limit, silent
                socks.append(socket.create_connection((rc.host, rc.port), timeout=5))
                time.sleep(0.01)
            statuses = [_callback(rc, i, timeout=5.0) for i in range(10)]
            assert [s for s, _ in statuses] == [200] * 10
            assert max(t for _, t in statuses) < 2.0
            assert rc._server.evicted >= 40
            # the first ones opened were the first closed; the last ones are still open
            assert _closed_within(socks[0], 1.0) < 1.0
            socks[-1].settimeout(0.3)
            with pytest.raises(TimeoutError):
                socks[-1].recv(1)
        finally:
            for sock in socks:
                sock.close()
    assert sorted(read_callbacks(tmp_path / "logs")["message_id"]) == list(range(10))


def test_connections_being_served_are_not_evicted(tmp_path: Path) -> None:
    # Every connection is being served (storage stalled): a newcomer waits in the
    # listen backlog instead of evicting one, and is answered once a slot frees.
    with receiver(tmp_path / "logs", connection_limit=2, request_timeout=60,
                  compact_interval=3600) as rc:  # fmt: skip
        release = threading.Event()
        write = rc.app.log.write

        def stalled_write(*args: Any, **kwargs: Any) -> None:
            release.wait(20)
            write(*args, **kwargs)

        rc.app.log.write = stalled_write  # type: ignore[method-assign]
        results: dict[int, tuple[int | None, float]] = {}
        threads = [
            threading.Thread(target=lambda i=i: results.__setitem__(i, _callback(rc, i, 30)))
            for i in range(3)
        ]
        for t in threads[:2]:
            t.start()
        time.sleep(0.5)  # both being served
        threads[2].start()
        time.sleep(1.0)
        assert results == {} and rc._server.evicted == 0
        release.set()
        for t in threads:
            t.join(30)
    assert sorted(status for status, _ in results.values()) == [200, 200, 200]
    assert sorted(read_callbacks(tmp_path / "logs")["message_id"]) == [0, 1, 2]


def test_callbacks_are_answered_under_a_flood(tmp_path: Path) -> None:
    with receiver(tmp_path / "logs", connection_limit=100, request_timeout=5,
                  compact_interval=3600) as rc:  # fmt: skip
        flood = scenarios.Flood(rc.host, rc.port, idle=150, slow=50).start()
        try:
            time.sleep(1.0)
            assert flood.held >= 80  # the flood holds (about) the limit
            timings = [_callback(rc, i, timeout=20.0) for i in range(20)]
        finally:
            flood.stop()
    assert [s for s, _ in timings] == [200] * 20
    assert max(t for _, t in timings) < 5.0  # waitress stock: minutes
    assert sorted(read_callbacks(tmp_path / "logs")["message_id"]) == list(range(20))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"connection_limit": 0}, "connection_limit"),
        ({"connection_limit": 1.5}, "connection_limit"),
        ({"connection_limit": True}, "connection_limit"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"request_timeout": "10"}, "request_timeout"),
    ],
)
def test_bad_limits_are_refused(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        Receiver(tmp_path / "logs", **kwargs)


def test_the_limit_is_lowered_to_what_ulimit_allows(tmp_path: Path) -> None:
    code = (
        "import logging, resource, sys;"
        "logging.basicConfig(stream=sys.stdout, format='%(message)s');"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (150, 150));"
        "from massiva_frames.receiving import Receiver;"
        f"rc = Receiver({str(tmp_path / 'logs')!r}, connection_limit=500);"
        "print(rc.connection_limit); rc.close()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, check=True).stdout  # fmt: skip
    assert "connection_limit lowered from 500 to 86" in out
    assert out.strip().splitlines()[-1] == "86"


def test_the_cli_options_and_their_defaults() -> None:
    import argparse

    assert receive_command.DEFAULT_CONNECTION_LIMIT == DEFAULT_CONNECTION_LIMIT
    assert receive_command.DEFAULT_REQUEST_TIMEOUT == DEFAULT_REQUEST_TIMEOUT
    parser = argparse.ArgumentParser()
    receive_command.add_arguments(parser)
    args = parser.parse_args(["--dir", "x"])
    assert (args.connection_limit, args.request_timeout) == (500, 10.0)
    args = parser.parse_args(["--dir", "x", "--connection-limit", "50", "--request-timeout", "2"])
    assert (args.connection_limit, args.request_timeout) == (50, 2.0)
    args.compact_interval, args.threads = 5.0, 8
    args.connection_limit = 0
    assert receive_command.run(args) == 2  # usage


class _Endpoint:
    """A stand-in for a waitress channel: one socket, always readable, records events."""

    accepting = False

    def __init__(self, sock: socket.socket, on_read: Any = None) -> None:
        self.sock = sock
        self.events: list[str] = []
        self.on_read = on_read

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def handle_read_event(self) -> None:
        self.events.append("read")
        if self.on_read is not None:
            self.on_read()

    def handle_write_event(self) -> None:
        self.events.append("write")

    def handle_expt_event(self) -> None:
        self.events.append("expt")

    def handle_close(self) -> None:
        self.events.append("close")

    def handle_error(self) -> None:
        self.events.append("error")


def _stale_event_setup() -> tuple[dict[int, Any], _Endpoint, list[socket.socket], int]:
    """A map where handling the first ready socket closes the second and puts a new
    connection on its descriptor number, as an eviction before an accept does."""
    import os

    first, first_peer = socket.socketpair()
    second, second_peer = socket.socketpair()
    first_peer.send(b"x")
    second_peer.send(b"x")  # the old connection has an event pending too
    fd = second.fileno()
    newcomer = _Endpoint(socket.socket())
    table: dict[int, Any] = {}

    def evict_and_accept() -> None:
        second.close()  # frees the number ...
        os.dup2(newcomer.sock.fileno(), fd)  # ... the kernel hands to the next socket
        table[fd] = newcomer

    table[first.fileno()] = _Endpoint(first, on_read=evict_and_accept)
    table[fd] = _Endpoint(second)
    return table, newcomer, [first, first_peer, second_peer, newcomer.sock], fd


def test_an_event_of_a_closed_connection_never_reaches_its_successor() -> None:
    import os

    from waitress import wasyncore

    from massiva_frames.receiving.server import poll_once

    # waitress's own turn hands the old event to the newcomer (whose read then fails and
    # closes it: a real callback reset before it is read); poll_once does not.
    turns = {"poll_once": lambda m: poll_once(m, 1.0), "poll2": lambda m: wasyncore.poll2(1.0, m)}
    for name, expected in (("poll_once", []), ("poll2", ["read"])):
        table, newcomer, socks, fd = _stale_event_setup()
        try:
            turns[name](table)
            assert newcomer.events == expected, name
        finally:
            for sock in socks:
                sock.close()
            with contextlib.suppress(OSError):
                os.close(fd)  # the copy put on the old number


def test_the_loop_leaves_a_running_tasks_output_to_its_worker() -> None:
    """While a task runs, its worker sends its own answer (waitress flushes in write_soon):
    the loop does not poll the channel for writing, which only spun (poll returning at
    once, the GIL taken from the worker) until the task ended. It does once the task
    has ended, and for a big answer the worker could not send."""
    from waitress import wasyncore

    from massiva_frames._waitress import LOOP_FLUSHES
    from massiva_frames.receiving import server as guarded

    socket_map: dict[int, Any] = {}
    server = guarded.GuardedServer(
        lambda environ, start_response: [b""],
        request_timeout=10,
        map=socket_map,
        host="127.0.0.1",
        port=0,
        threads=1,
        asyncore_use_poll=True,
    )
    client = socket.create_connection(("127.0.0.1", int(server.effective_port)), timeout=5)
    try:
        server.handle_accept()
        (channel,) = server.channels()
        assert not channel.writable()  # nothing to send
        channel.total_outbufs_len = 140  # an answer's head, the worker sending it
        channel.requests = [object()]  # its task still running
        assert not channel.writable()
        channel.total_outbufs_len = LOOP_FLUSHES  # more than the worker sent
        assert channel.writable()
        channel.total_outbufs_len = 140
        channel.will_close = True  # being closed: the loop finishes it
        assert channel.writable()
        channel.will_close = False
        channel.requests = []  # the task ended with output left: the loop sends it
        assert channel.writable()
        channel.total_outbufs_len = 0
    finally:
        client.close()
        server.task_dispatcher.shutdown()
        wasyncore.close_all(socket_map)
