"""Several receivers serving one log directory: a journal each, adoption, read back once.

In-process receivers share the directory the way processes do (each its own journal and
owner lock); real ``massiva-frames receive`` processes are SIGKILLed and restarted while
callbacks are spread over them; a journal held by another process is left to it, and
adopted once that process is gone.
"""

from __future__ import annotations

import itertools
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as ds
import pytest
import requests

from massiva_frames.errors import InputError
from massiva_frames.receiving import Receiver, compact, read_callbacks, receiver
from massiva_frames.receiving.event_journal import DurableLog, pending_rows, read_journal
from massiva_frames.receiving.instances import OwnerLock, journal_path, journals, owner_path

T0 = 1_718_006_400_000_000  # 2024-06-10 08:00 UTC, in microseconds

HOLDER = """
import sys
from massiva_frames.receiving.event_journal import DurableLog
log = DurableLog(sys.argv[1], instance=sys.argv[2])
for i in range(int(sys.argv[3])):
    values = (str(5000 + i), "1", "2024-06-10 08:00:00", None, None)
    log.write("status", values, key=f"held-{i}", received_us=1_718_006_400_000_000 + i)
print("ready", flush=True)
sys.stdin.readline()
"""


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def journal_rows(path: Path) -> int:
    """Rows waiting in one instance's journal (read directly)."""
    conn = sqlite3.connect(path)
    try:
        return sum(
            conn.execute(f"SELECT count(*) FROM {k}").fetchone()[0] for k in ("status", "inbound")
        )
    finally:
        conn.close()


def write_status(log: DurableLog, mid: int, *, us: int) -> None:
    values = (str(mid), "1", "2024-06-10 08:00:00", None, None)
    log.write("status", values, key=f"status-{mid}", received_us=us)


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def holder(logdir: Path) -> Iterator[Callable[[str, int], subprocess.Popen[str]]]:
    """Starts processes that write ``n`` events into instance ``name``'s journal and wait."""
    procs: list[subprocess.Popen[str]] = []

    def start(name: str, n: int) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(logdir), name, str(n)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


# --- instance ids and journals -------------------------------------------------------------


def test_each_receiver_takes_its_own_journal(logdir: Path) -> None:
    first = DurableLog(logdir)  # a single receiver's journal, as it always was
    second = DurableLog(logdir)  # the first is held: a new one
    named = DurableLog(logdir, instance="rx-1")
    try:
        assert first.instance == "events" and first.path == logdir / "_journal" / "events.db"
        assert second.instance.startswith("auto-") and named.instance == "rx-1"
        assert [p.stem for p in journals(logdir)] == [second.instance, "events", "rx-1"]
        with pytest.raises(InputError, match="'rx-1' is already running"):
            DurableLog(logdir, instance="rx-1", claim_timeout=0.2)
        auto = second.instance
        second.close()
        again = DurableLog(logdir)  # a restart finds the journal nobody holds
        assert again.instance == auto
        again.close()
    finally:
        first.close()
        named.close()
    again = DurableLog(logdir)
    again.close()
    assert again.instance == "events"  # let go: taken first again
    assert owner_path(journal_path(logdir)).read_text().strip()  # signed by its host


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", "-x", "auto-x", "x" * 65, "é", 3])
def test_bad_instance_names_are_refused(logdir: Path, name: Any) -> None:
    with pytest.raises(InputError, match="instance"):
        Receiver(logdir, instance=name)
    assert not (logdir / "_journal").exists()  # refused before anything is created


def test_a_restart_waits_for_a_compaction_holding_its_journal(logdir: Path) -> None:
    DurableLog(logdir, instance="rx").close()
    held = OwnerLock.take(journal_path(logdir, "rx"))  # as an adopting compaction does
    assert held is not None
    got: list[str] = []
    thread = threading.Thread(
        target=lambda: got.append(DurableLog(logdir, instance="rx", claim_timeout=30).instance)
    )
    thread.start()
    time.sleep(0.3)
    assert got == []  # still waiting
    held.release()
    thread.join(30)
    assert got == ["rx"]


# --- several receivers, one directory ------------------------------------------------------


def test_three_receivers_interleaved_with_compaction_read_back_once(logdir: Path) -> None:
    names = [None, None, "c"]
    servers = [receiver(logdir, instance=n, compact_interval=0.05) for n in names]
    acked: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        turn = itertools.cycle(servers[n % 3 :] + servers[: n % 3])
        with requests.Session() as s:
            s.trust_env = False
            for i in range(60):
                mid = n * 1000 + i
                params: dict[str, Any] = {"id": mid, "estatus": 1 + i % 2}
                if i % 5 == 4:
                    params = {"msg": f"hola {mid}", "phone": "584141234567"}
                assert s.get(next(turn).url, params=params, timeout=30).status_code == 200
                if i % 7 == 0:  # the provider's retry, to another receiver
                    assert s.get(next(turn).url, params=params, timeout=30).status_code == 200
                with lock:
                    acked.append(str(mid))

    try:
        instances = [rc.instance for rc in servers]
        assert instances[0] == "events" and instances[1].startswith("auto-")
        health = requests.get(servers[2].base_url + "/health", timeout=10).json()
        assert health["instance"] == "c"
        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(acked) == 240
        status = read_callbacks(logdir)  # while running: journals and parquet together
        inbound = read_callbacks(logdir, kind="inbound")
        assert len(status) + len(inbound) == 240
    finally:
        for rc in servers:
            rc.close()
    status = read_callbacks(logdir)
    inbound = read_callbacks(logdir, kind="inbound")
    got = [str(m) for m in status["message_id"]] + [t.split()[1] for t in inbound["text"]]
    assert sorted(got) == sorted(acked)  # each acknowledged callback once
    assert pending_rows(logdir) == 0
    sources = {p.name.split("-")[1] for p in logdir.glob("*/day=*/part-*.parquet")}
    assert {"events", "auto", "c"} <= sources


def test_parts_of_several_instances_merge_into_one_without_repeats(logdir: Path) -> None:
    logs = [DurableLog(logdir, instance=name) for name in ("a", "b", "c")]
    try:
        for n, log in enumerate(logs):
            for mid in range(n * 5, n * 5 + 10):  # overlapping: repeats across instances
                write_status(log, mid, us=T0 + n * 100 + mid)
    finally:
        for log in logs:
            log.close()
    before = read_callbacks(logdir)
    assert before["message_id"].tolist() == list(range(20))
    assert compact(logdir, merge=False).moved == 30
    day = logdir / "status" / "day=2024-06-10"
    assert sorted(p.name.split("-")[1] for p in day.glob("part-*.parquet")) == ["a", "b", "c"]
    assert compact(logdir, max_small_files=1).files_merged == 3
    [merged] = day.glob("part-*.parquet")
    assert merged.name.startswith("part-merged-")
    assert ds.dataset(day, format="parquet").count_rows() == 20  # stored once each
    pd.testing.assert_frame_equal(read_callbacks(logdir), before)


def test_a_live_journal_of_another_process_is_left_to_it_then_adopted(
    logdir: Path, holder: Callable[[str, int], subprocess.Popen[str]]
) -> None:
    proc = holder("other", 5)
    own = DurableLog(logdir, instance="here")
    try:
        write_status(own, 1, us=T0 - 1)
        stats = compact(logdir)  # ours moved; the other process's left to it
        assert stats.moved == 1
        assert journal_rows(journal_path(logdir, "other")) == 5
        assert pending_rows(logdir) == 5  # but read, as soon as acknowledged
        assert read_callbacks(logdir)["message_id"].tolist() == [1, 5000, 5001, 5002, 5003, 5004]
        proc.send_signal(signal.SIGKILL)  # it dies: its lock goes with it
        proc.wait(30)
        assert compact(logdir).moved == 5  # adopted
        assert journal_rows(journal_path(logdir, "other")) == 0
        assert len(list(logdir.glob("status/day=*/part-other-*.parquet"))) == 1
    finally:
        own.close()
    assert read_callbacks(logdir)["message_id"].tolist() == [1, 5000, 5001, 5002, 5003, 5004]
    DurableLog(logdir, instance="other", claim_timeout=1).close()  # free for its restart


def test_a_running_receiver_adopts_the_journal_of_a_killed_one(
    logdir: Path, holder: Callable[[str, int], subprocess.Popen[str]]
) -> None:
    with receiver(logdir, instance="alive", compact_interval=0.05):
        proc = holder("killed", 30)
        time.sleep(0.3)
        assert journal_rows(journal_path(logdir, "killed")) == 30  # live: not touched
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        wait_for(lambda: journal_rows(journal_path(logdir, "killed")) == 0)
        assert list(logdir.glob("status/day=*/part-killed-*.parquet"))
    assert read_callbacks(logdir)["message_id"].tolist() == list(range(5000, 5030))


def test_a_journal_live_on_another_machine_is_read_once_compacted(logdir: Path) -> None:
    log = DurableLog(logdir, instance="far")
    write_status(log, 7, us=T0)
    log.close()
    far = journal_path(logdir, "far")
    remote = OwnerLock.take(far)  # held, as by a receiver on another machine
    assert remote is not None
    try:
        owner_path(far).write_text("elsewhere.example\n")
        # SQLite's WAL cannot be shared between machines: not opened while held there.
        assert read_journal(logdir, "status") == [] and pending_rows(logdir) == 0
        assert read_callbacks(logdir).empty
        assert compact(logdir).moved == 0
    finally:
        remote.release()
    # Nobody holds it now: read (under its lock), then adopted.
    assert read_callbacks(logdir)["message_id"].tolist() == [7]
    assert compact(logdir).moved == 1
    assert read_callbacks(logdir)["message_id"].tolist() == [7]


# --- real processes ------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Instance:
    def __init__(self, logdir: Path, name: str, log: Any) -> None:
        self.name = name
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cmd = [
            sys.executable, "-m", "massiva_frames.faces.cli", "receive", "--dir", str(logdir),
            "--port", str(self.port), "--instance", name, "--compact-interval", "0.1",
        ]  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited"
            try:
                health = requests.get(self.base + "/health", timeout=1)
                if health.status_code == 200:
                    assert health.json()["instance"] == self.name
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not become healthy")


@pytest.mark.slow
def test_receiver_processes_killed_on_one_directory_lose_and_repeat_nothing(
    tmp_path: Path,
) -> None:
    logdir = tmp_path / "logs"
    log = open(tmp_path / "receivers.log", "wb")  # noqa: SIM115
    rxs = [_Instance(logdir, f"rx{i}", log) for i in range(3)]
    acked: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        turn = itertools.count(n)
        with requests.Session() as s:
            s.trust_env = False
            i = 0
            while not stop.is_set() and i < 100_000:
                mid = n * 1_000_000 + i
                rx = rxs[next(turn) % 3]  # round robin; a refused callback goes to the next
                try:
                    r = s.get(
                        rx.base + "/recepcionsms", params={"id": mid, "estatus": 1}, timeout=5
                    )
                except requests.RequestException:
                    continue
                if r.status_code == 200:
                    with lock:
                        acked.add(mid)
                    i += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(3)]
    try:
        for rx in rxs:
            rx.start()
        for t in threads:
            t.start()
        for victim in (1, 0, 2, 1):
            goal = len(acked) + 60
            wait_for(lambda g=goal: len(acked) >= g, 60)
            proc = rxs[victim].proc
            assert proc is not None and proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            # Down: another instance adopts what it acknowledged.
            journal = journal_path(logdir, rxs[victim].name)
            wait_for(lambda j=journal: journal_rows(j) == 0, 60)
            rxs[victim].start()
        goal = len(acked) + 60
        wait_for(lambda: len(acked) >= goal, 60)
        stop.set()
        for t in threads:
            t.join(30)
        for rx in rxs:
            assert rx.proc is not None
            rx.proc.send_signal(signal.SIGTERM)
        assert [rx.proc.wait(60) for rx in rxs if rx.proc is not None] == [0, 0, 0]
    finally:
        stop.set()
        for rx in rxs:
            if rx.proc is not None and rx.proc.poll() is None:
                rx.proc.kill()
                rx.proc.wait(10)
        log.close()
    ids = read_callbacks(logdir)["message_id"]
    assert not ids.duplicated().any(), "an event was read twice"
    missing = acked - set(ids.tolist())
    assert not missing, f"{len(missing)} acknowledged callbacks were lost"
    assert pending_rows(logdir) == 0
    assert [p.stem for p in journals(logdir)] == ["rx0", "rx1", "rx2"]
    compact(logdir, max_small_files=0)  # everything merged: each event stored once
    raw = ds.dataset(logdir / "status", format="parquet").to_table(columns=["event_key"])
    assert raw.num_rows == len(set(raw["event_key"].to_pylist())) == len(ids)


def test_the_cli_refuses_a_bad_instance_name(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "massiva_frames.faces.cli", "receive", "--dir", str(tmp_path),
         "--port", "0", "--instance", "no/slash"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "cannot start the receiver: instance must be" in done.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "massiva_frames.faces.cli", "receive", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "--instance NAME" in help_text
