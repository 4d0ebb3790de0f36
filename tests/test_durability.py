"""Durability observed at the storage layer: synced, then answered; synced, then dropped.

A killed process cannot catch a missing sync (data handed to the kernel survives a
process kill, not a power cut), so these tests watch the sync itself:

- the receiver's journal connection is wrapped: every ``COMMIT`` is recorded with the
  ``synchronous`` and ``journal_mode`` of the live connection at that moment, and the
  WSGI ``start_response`` is recorded too; no 200 may come before the commit of its
  event, made with ``synchronous=FULL`` in WAL mode (the WAL is synced on commit);
- compaction runs with ``os.fsync``, ``os.replace``, ``os.mkdir`` and its journal
  connection recorded: a parquet part is synced before its rename, its directory (and
  every directory created for it) after, and all of it before the rows leave the journal;
- with ``strace`` on the machine, the system calls of a real receiver process and of a
  real send are traced: an ``fdatasync`` of the WAL precedes each 200 written to a
  socket, and each SendSms request.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pandas as pd
import pytest
import requests

from massiva_frames.receiving import (
    Receiver,
    compact,
    event_journal,
    read_callbacks,
    receiver,
    store,
)
from massiva_frames.receiving.event_journal import DurableLog, journal_path, pending_rows
from massiva_frames.sandbox import sandbox
from massiva_frames.sending.campaign import send
from massiva_frames.sending.journal.sqlite import Journal, results_from_journal
from massiva_frames.wire.client import MassivaClient

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def pragmas(conn: Any) -> tuple[int, str]:
    """``(synchronous, journal_mode)`` of a live connection."""
    sync = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    return sync, mode


class CommitSpy:
    """Wraps the receiver journal's connection: records each commit and what it covered."""

    def __init__(self, conn: sqlite3.Connection, events: list[tuple[Any, ...]]) -> None:
        self._conn = conn
        self._events = events
        self._inserted: set[str] = set()

    def executemany(self, sql: str, rows: Iterable[Any]) -> sqlite3.Cursor:
        rows = list(rows)
        # (received_us, event_key, id, estatus, ...): the callback's id names it.
        self._inserted |= {str(row[2]) for row in rows}
        return self._conn.executemany(sql, rows)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        cursor = self._conn.execute(sql, *args)
        verb = sql.strip().upper()
        if verb == "COMMIT":
            sync, mode = pragmas(self._conn)
            self._events.append(("commit", frozenset(self._inserted), sync, mode))
            self._inserted = set()
        elif verb == "ROLLBACK":
            self._inserted = set()
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_no_200_leaves_before_its_event_is_committed_and_synced(tmp_path: Path) -> None:
    events: list[tuple[Any, ...]] = []
    lock = threading.Lock()
    with receiver(tmp_path / "logs", compact_interval=3600) as rc:
        log = rc._log
        log._conn = CommitSpy(log._conn, events)  # type: ignore[attr-defined]
        app = rc._server.application

        def spy_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            ident = parse_qs(environ.get("QUERY_STRING", "")).get("id", ["?"])[0]

            def answered(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
                with lock:  # the answer cannot leave before start_response is called
                    events.append(("answer", ident, int(status.split()[0])))
                return start_response(status, headers, *exc)

            return app(environ, answered)

        rc._server.application = spy_app

        def client(n: int) -> None:
            with requests.Session() as s:
                s.trust_env = False
                for i in range(15):
                    r = s.get(rc.url, params={"id": n * 100 + i, "estatus": 1}, timeout=10)
                    assert r.status_code == 200

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
    answers = [e for e in events if e[0] == "answer"]
    commits = [e for e in events if e[0] == "commit"]
    assert len(answers) == 60 and {e[2] for e in answers} == {200}
    assert commits and all(c[2:] == (FULL, "wal") for c in commits), commits[:3]
    synced: set[str] = set()
    for event in events:
        if event[0] == "commit":
            synced |= event[1]
        else:
            assert event[1] in synced, f"callback {event[1]} answered before its commit"
    assert len(read_callbacks(tmp_path / "logs")) == 60


def test_health_reports_the_journal_as_it_really_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "durable" is read back from the live connection, not a constant.
    with requests.Session() as http:
        http.trust_env = False
        with receiver(tmp_path / "a", compact_interval=3600) as rc:
            assert pragmas(rc._log._conn) == (FULL, "wal")  # type: ignore[attr-defined]
            assert http.get(rc.base_url + "/health", timeout=10).json()["durable"] is True
        with receiver(tmp_path / "b", store=False) as rc:
            assert http.get(rc.base_url + "/health", timeout=10).json()["durable"] is False
        real = event_journal.connect_journal

        def careless(path: Path, *, create: bool = False) -> sqlite3.Connection:
            conn = real(path, create=create)
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL not synced on commit
            return conn

        monkeypatch.setattr(event_journal, "connect_journal", careless)
        with receiver(tmp_path / "c", compact_interval=3600) as rc:
            assert http.get(rc.base_url + "/health", timeout=10).json()["durable"] is False


def test_every_durable_file_is_opened_wal_and_synchronous_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The receiver's journal, as the writer and as compaction open it.
    log = DurableLog(tmp_path / "logs")
    try:
        assert pragmas(log._conn) == (FULL, "wal")
    finally:
        log.close()
    conn = event_journal.connect_journal(journal_path(tmp_path / "logs"))
    try:
        assert pragmas(conn) == (FULL, "wal")
    finally:
        conn.close()
    # The send journal, opened directly and as send() holds it while it sends.
    with Journal(tmp_path / "direct.db") as jr:
        assert pragmas(jr.conn) == (FULL, "wal")
    seen: list[tuple[int, str]] = []
    close = Journal.close

    def spy_close(self: Journal) -> None:
        if self.path is not None:
            seen.append(pragmas(self.conn))
        close(self)

    monkeypatch.setattr(Journal, "close", spy_close)
    with sandbox(credits=100, callback_delay=60) as sb:
        with MassivaClient(sb.usuario, sb.clave, sb.base_url) as client:
            df = pd.DataFrame({"phone": ["04141234567", "04241234567"], "msg": "Hola"})
            results = send(df, client=client, text="msg", journal=tmp_path / "s.db", progress=False)
    assert (results["state"] == "accepted").all()
    assert seen == [(FULL, "wal")]


# --- compaction: parquet parts and their directories before the journal rows ----------


class StorageSpy:
    """Records fsync (by inode), renames, directory creations and journal deletions."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[Any, ...]] = []
        fsync, replace, mkdir = os.fsync, os.replace, os.mkdir
        connect = store.connect_journal
        events = self.events

        def spy_fsync(fd: int) -> None:
            st = os.fstat(fd)
            fsync(fd)
            events.append(("fsync", (st.st_dev, st.st_ino)))

        def spy_replace(src: Any, dst: Any, **kw: Any) -> None:
            replace(src, dst, **kw)
            events.append(("replace", Path(dst)))

        def spy_mkdir(path: Any, *args: Any, **kw: Any) -> None:
            mkdir(path, *args, **kw)
            events.append(("mkdir", Path(path)))

        class JournalSpy:
            def __init__(self, conn: sqlite3.Connection) -> None:
                self._conn = conn
                events.append(("journal", *pragmas(conn)))

            def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
                cursor = self._conn.execute(sql, *args)
                if sql.lstrip().upper().startswith("DELETE"):
                    # isolation_level=None: the DELETE is its own committed transaction.
                    events.append(("delete", sql.split()[2], cursor.rowcount))
                return cursor

            def __getattr__(self, name: str) -> Any:
                return getattr(self._conn, name)

        def spy_connect(path: Path, *, create: bool = False) -> JournalSpy:
            return JournalSpy(connect(path, create=create))

        monkeypatch.setattr(os, "fsync", spy_fsync)
        monkeypatch.setattr(os, "replace", spy_replace)
        monkeypatch.setattr(os, "mkdir", spy_mkdir)
        monkeypatch.setattr(store, "connect_journal", spy_connect)

    def synced_after(self, path: Path, position: int, before: int) -> bool:
        """Was ``path`` (its inode) fsynced between two positions of the record?"""
        st = path.stat()
        key = (st.st_dev, st.st_ino)
        return any(e == ("fsync", key) for e in self.events[position + 1 : before])

    def position(self, event: tuple[Any, ...]) -> int:
        return self.events.index(event)


def test_the_directories_a_receiver_creates_are_synced_in_their_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logdir = tmp_path / "a" / "b" / "logs"
    spy = StorageSpy(monkeypatch)
    rc = Receiver(logdir, compact_interval=3600)  # bound, not serving: nothing answered yet
    try:
        made = [(i, e[1]) for i, e in enumerate(spy.events) if e[0] == "mkdir"]
        a = tmp_path / "a"
        assert [p for _, p in made] == [a, a / "b", logdir, logdir / "_journal"]
        for at, directory in made:
            assert spy.synced_after(directory.parent, at, len(spy.events)), directory
        assert rc._log.durable  # type: ignore[attr-defined]
    finally:
        rc.close()


def _store_callbacks(logdir: Path, ids: Iterable[int]) -> None:
    log = DurableLog(logdir)
    try:
        day = 86_400_000_000
        for n, mid in enumerate(ids):
            values = (str(mid), "1", "2024-01-01 10:00:00", None, None)
            # two days: two partitions, each a new directory
            log.write(
                "status", values, key=f"k{mid}", received_us=1_704_103_200_000_000 + n % 2 * day
            )
    finally:
        log.close()


def test_parts_and_their_directories_are_synced_before_the_journal_drops_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logdir = tmp_path / "logs"
    _store_callbacks(logdir, range(1, 11))
    spy = StorageSpy(monkeypatch)
    stats = compact(logdir, merge=False)
    events = spy.events
    assert stats.moved == 10 and stats.files_written == 2
    assert ("journal", FULL, "wal") in events
    deletes = [i for i, e in enumerate(events) if e[0] == "delete"]
    assert deletes and all(events[i][2] > 0 for i in deletes)
    first_delete = deletes[0]
    parts = [(i, e[1]) for i, e in enumerate(events) if e[0] == "replace"]
    assert len(parts) == 2
    start = -1
    for at, part in parts:
        assert at < first_delete
        # the data before the rename (same inode), the directory entry after it
        assert spy.synced_after(part, start, at), f"{part.name} renamed before its data synced"
        assert spy.synced_after(part.parent, at, first_delete), f"{part.parent} not synced"
        start = at
    made = [(i, e[1]) for i, e in enumerate(events) if e[0] == "mkdir"]
    assert {p for _, p in made} >= {logdir / "status", *(p.parent for _, p in parts)}
    for at, directory in made:
        # a new directory's entry lives in its parent: synced too, before the drop
        assert spy.synced_after(directory.parent, at, first_delete), f"{directory} not synced"
    assert pending_rows(logdir) == 0
    assert sorted(read_callbacks(logdir)["message_id"]) == list(range(1, 11))


def test_a_merge_syncs_the_merged_part_before_removing_the_small_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logdir = tmp_path / "logs"
    for batch in range(3):
        _store_callbacks(logdir, [batch * 2 + 1, batch * 2 + 3])  # repeats across batches
        compact(logdir, merge=False)
    small = sorted(logdir.glob("status/day=*/part-*.parquet"))
    assert len(small) == 6
    unlinked: list[int] = []
    spy = StorageSpy(monkeypatch)
    unlink = os.unlink

    def spy_unlink(path: Any, *args: Any, **kw: Any) -> None:
        unlink(path, *args, **kw)
        unlinked.append(len(spy.events))
        spy.events.append(("unlink", Path(path)))

    monkeypatch.setattr(os, "unlink", spy_unlink)
    stats = compact(logdir, max_small_files=2)
    assert stats.files_merged == 6
    for at, merged in [(i, e[1]) for i, e in enumerate(spy.events) if e[0] == "replace"]:
        gone = [i for i in unlinked if spy.events[i][1].parent == merged.parent]
        assert gone and all(at < i for i in gone)
        assert spy.synced_after(merged, -1, at)
        assert spy.synced_after(merged.parent, at, min(gone))
    assert sorted(read_callbacks(logdir)["message_id"]) == [1, 3, 5, 7]


# --- system calls of real processes (strace) --------------------------------------------


def _strace() -> str:
    """The strace binary, or skip (fail when MASSIVA_REQUIRE_STRACE=1)."""
    path = shutil.which("strace")
    reason = "strace is not installed (apt-get install strace)"
    if path is not None:
        probe = subprocess.run(
            [path, "-f", "-qq", "-o", os.devnull, sys.executable, "-c", "pass"],
            capture_output=True,
            timeout=60,
        )
        if probe.returncode == 0:
            return path
        reason = "strace cannot trace here (ptrace not permitted)"
    if os.environ.get("MASSIVA_REQUIRE_STRACE") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


_LINE = re.compile(r"^(\d+)\s+(.*)$")
_ENTER = re.compile(r"^(\w+)\((.*?)(?: <unfinished \.\.\.>|\)\s+= (-?\d+).*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>.*\)\s+= (-?\d+)")


def syscalls(trace: Path) -> list[tuple[str, str, str, bool]]:
    """``(phase, name, arguments, ok)`` per syscall entry and exit, in the traced order.

    A call printed whole yields an ``enter`` and an ``exit``; one interrupted by another
    thread yields its ``enter`` at ``<unfinished ...>`` and its ``exit`` at ``resumed``.
    """
    out: list[tuple[str, str, str, bool]] = []
    pending: dict[str, tuple[str, str]] = {}
    for line in trace.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        pid, body = m.groups()
        if r := _RESUMED.match(body):
            name, args = pending.pop(pid, (r.group(1), ""))
            out.append(("exit", name, args, r.group(2) != "-1"))
        elif e := _ENTER.match(body):
            name, args, ret = e.groups()
            out.append(("enter", name, args, True))
            if ret is None:
                pending[pid] = (name, args)
            else:
                out.append(("exit", name, args, ret != "-1"))
    return out


def assert_synced_before_each(
    calls: list[tuple[str, str, str, bool]], wal: str, sends: Callable[[str], bool]
) -> int:
    """Every send that ``sends`` picks comes after an fdatasync/fsync of ``wal``, made
    since the previous one; returns how many sends there were."""
    synced = False
    count = 0
    for phase, name, args, ok in calls:
        if phase == "exit" and name in ("fdatasync", "fsync") and ok and wal in args:
            synced = True
        elif phase == "enter" and name == "sendto" and sends(args):
            assert synced, f"send #{count + 1} left before the journal's WAL was synced"
            synced = False
            count += 1
    return count


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the process exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nothing listens on the port")


@pytest.mark.slow
def test_traced_receiver_syncs_the_wal_before_each_200_and_parts_before_the_drop(
    tmp_path: Path,
) -> None:
    tracer = _strace()
    logdir = tmp_path / "logs"
    trace = tmp_path / "trace.txt"
    port = _free_port()
    cmd = [
        tracer, "-f", "-qq", "-y", "-s", "256", "-e", "trace=fdatasync,fsync,sendto,/^rename",
        "-o", str(trace),
        sys.executable, "-m", "massiva_frames.faces.cli", "receive", "--dir", str(logdir),
        "--port", str(port), "--compact-interval", "3600",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child: int | None = None
    try:
        _wait_listening(port, proc)  # not /health: every 200 traced is a callback's
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1
        child = int(children[0])  # the receiver strace runs
        with requests.Session() as s:
            s.trust_env = False
            for i in range(12):  # one at a time: each commit comes after the last answer
                params = {"id": 500 + i, "estatus": 1 + i % 2}
                r = s.get(f"http://127.0.0.1:{port}/recepcionsms", params=params, timeout=30)
                assert r.status_code == 200
        os.kill(child, signal.SIGTERM)  # a clean stop compacts into parquet
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            if child is not None:
                os.kill(child, signal.SIGKILL)
            proc.kill()
            proc.wait(10)
    calls_seen = syscalls(trace)
    wal = str(journal_path(logdir)) + "-wal"
    answers = assert_synced_before_each(calls_seen, wal, lambda a: '"HTTP/1.1 200 ' in a)
    assert answers == 12
    # The final compaction: each part synced before its rename, its directory after,
    # both before the WAL commit that deletes the rows.
    renames = [
        i
        for i, c in enumerate(calls_seen)
        if c[0] == "exit"
        and c[1].startswith("rename")
        and ".coverage." not in c[2]  # a measured run's own data files (coverage run)
    ]
    assert renames
    for at in renames:
        part = re.search(r"(/\S*?\.part-[0-9a-f]+\.parquet\.tmp)", calls_seen[at][2])
        assert part, calls_seen[at][2]
        tmp, directory = part.group(1), os.path.dirname(part.group(1))
        before = [c for c in calls_seen[:at] if c[0] == "exit" and c[1] in ("fsync", "fdatasync")]
        assert any(c[2].endswith(f"<{tmp}>") for c in before), "part renamed before its sync"
        later = calls_seen[at + 1 :]
        drop = next(
            i for i, c in enumerate(later) if c[0] == "exit" and c[1] == "fdatasync" and wal in c[2]
        )
        assert any(
            c[0] == "exit" and c[1] == "fsync" and c[2].endswith(f"<{directory}>")
            for c in later[:drop]
        ), "rows dropped before the part's directory was synced"
    assert len(read_callbacks(logdir)) == 12 and pending_rows(logdir) == 0


SENDER = """
import sys, pandas as pd
from massiva_frames.sending.campaign import send
df = pd.DataFrame({"phone": [f"0414{1000000 + i:07d}" for i in range(6)], "msg": "Hola"})
send(df, text="msg", journal=sys.argv[1], max_phones=2, concurrency=1, progress=False)
"""


@pytest.mark.slow
def test_traced_send_syncs_each_batch_in_flight_before_its_request(tmp_path: Path) -> None:
    tracer = _strace()
    journal = tmp_path / "j.db"
    trace = tmp_path / "trace.txt"
    with sandbox(credits=100, callback_delay=60) as sb:
        env = {
            **os.environ,
            "MASSIVA_USUARIO": sb.usuario,
            "MASSIVA_CLAVE": sb.clave,
            "MASSIVA_BASE_URL": sb.base_url,
        }
        cmd = [tracer, "-f", "-qq", "-y", "-s", "32", "-e", "trace=fdatasync,fsync,sendto"]
        done = subprocess.run(
            [*cmd, "-o", str(trace), sys.executable, "-c", SENDER, str(journal)],
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        received = len(sb.messages())
    calls = syscalls(trace)
    requests_sent = assert_synced_before_each(
        calls, f"{journal}-wal", lambda a: '"POST /webservices/SendSms' in a
    )
    assert requests_sent == 3 and received == 6
    assert (results_from_journal(journal)["state"] == "accepted").all()
