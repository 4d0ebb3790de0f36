"""Scenario ``receivers``: three ``massiva-frames receive`` instances on one log directory,
behind a round-robin balancer, SIGKILLed and restarted at random while the sandbox and a
load generator post callbacks through the balancer.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import select
import socket
import sqlite3
import threading
import time
from pathlib import Path

from .figures import Figures, Sizes
from .harness import USUARIO, free_port
from .receiver import CallbackLoad, ReceiverProcess, count_read_back

__all__ = ["RoundRobin", "scenario_shared_receivers"]

INSTANCES = 3
#: seconds between each instance's compactions: long enough that a killed one leaves
#: acknowledged rows in its journal for another to adopt
COMPACT_INTERVAL = "1.0"


class RoundRobin:
    """A TCP load balancer on 127.0.0.1: each new connection goes to the next backend;
    one that refuses the connection is skipped (as nginx's ``proxy_next_upstream error``).
    A backend that dies mid-request drops its client's connection: the client retries."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.forwarded = [0] * len(backends)
        self._turn = itertools.count()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="chaos-balancer", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _connect(self) -> socket.socket | None:
        for _ in self.backends:
            i = next(self._turn) % len(self.backends)
            with contextlib.suppress(OSError):
                upstream = socket.create_connection(("127.0.0.1", self.backends[i]), timeout=1)
                with self._lock:
                    self.forwarded[i] += 1
                return upstream
        return None

    def _serve(self, client: socket.socket) -> None:
        upstream = self._connect()
        if upstream is None:
            client.close()  # every backend down: the client retries
            return
        peers = {client: upstream, upstream: client}
        reading = {client, upstream}
        try:
            while reading and not self._stop.is_set():
                ready, _, _ = select.select(list(reading), [], [], 0.5)
                for sock in ready:
                    data = sock.recv(65536)
                    if data:
                        peers[sock].sendall(data)
                    else:  # one side finished sending: pass the half-close on
                        reading.discard(sock)
                        with contextlib.suppress(OSError):
                            peers[sock].shutdown(socket.SHUT_WR)
        except OSError:
            pass  # a reset (a killed backend): the client sees its connection drop
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._acceptor.join(10)
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(5)


def _journal_rows(path: Path) -> int:
    """Rows waiting in one instance's journal (0 when it has none yet)."""
    if not path.exists():
        return 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        return sum(
            int(conn.execute(f"SELECT count(*) FROM {kind}").fetchone()[0])
            for kind in ("status", "inbound")
        )
    except sqlite3.OperationalError:  # the schema not yet committed
        return 0
    finally:
        conn.close()


def _stored_keys(logdir: Path) -> list[tuple[str, str, str]]:
    """``(kind, day, event_key)`` of every row in the parquet files."""
    import pyarrow.dataset as ds

    keys: list[tuple[str, str, str]] = []
    for kind in ("status", "inbound"):
        if (logdir / kind).is_dir():
            table = ds.dataset(logdir / kind, format="parquet", partitioning="hive").to_table(
                columns=["day", "event_key"]
            )
            days = [str(d) for d in table["day"].to_pylist()]
            keys += [
                (kind, d, k) for d, k in zip(days, table["event_key"].to_pylist(), strict=True)
            ]
    return keys


def scenario_shared_receivers(sizes: Sizes, workdir: Path, *, seed: int = 0) -> Figures:
    """Three receivers on one directory; ``sizes.receivers_kills`` SIGKILLs under load.

    Each kill takes a random instance down; every other time it stays down until another
    instance has adopted its journal (compacted what it acknowledged; not within 60 s
    counts as a hang), otherwise it restarts at once. Figures: as the ``receiver``
    scenario, over the callbacks the balancer's clients saw acknowledged, plus any event
    stored twice in a day's files after a final merge (duplicated).
    """
    from massiva_frames.receiving import compact
    from massiva_frames.receiving.instances import journal_path
    from massiva_frames.sandbox import sandbox
    from massiva_frames.wire.client import MassivaClient

    fig = Figures("receivers, one directory", lost=0, duplicated=0, hangs=0)
    start = time.perf_counter()
    rng = random.Random(seed)
    logdir = workdir / "shared-logs"
    names = [f"rx{i}" for i in range(INSTANCES)]
    ports = [free_port() for _ in names]
    rxs = [
        ReceiverProcess(logdir, port, workdir / f"{name}.log",
                        extra=("--instance", name, "--compact-interval", COMPACT_INTERVAL))
        for name, port in zip(names, ports, strict=True)
    ]  # fmt: skip
    balancer = RoundRobin(ports)
    url = f"http://127.0.0.1:{balancer.port}/recepcionsms"
    load = CallbackLoad(balancer.port, 10**7)  # a new connection per callback: spread
    sb_ctx = sandbox(
        usuario=USUARIO, clave="chaos", credits=10**6, status_url=url, inbound_url=url,
        callback_delay=0.05, fail_ratio=0.3, reply_ratio=0.2, seed=seed,
        callback_attempts=60, callback_workers=4,
    )  # fmt: skip
    kills = adoptions = adopted_rows = 0
    codes: list[int | None] = []
    try:
        with sb_ctx as sb, MassivaClient(USUARIO, "chaos", sb.base_url, timeout=10) as client:
            try:
                for rx in rxs:
                    rx.start()
                load.start()
                phones = [f"58414{n:07d}" for n in range(50)]
                while kills < sizes.receivers_kills:
                    client.send_batch(phones, f"chaos receivers batch {kills}")
                    sb.send_inbound("584161234567", f"chaos receivers inbound {kills}")
                    time.sleep(rng.uniform(0.3, 1.0))
                    victim = rng.randrange(INSTANCES)
                    rxs[victim].kill()
                    kills += 1
                    journal = journal_path(logdir, names[victim])
                    left = _journal_rows(journal)  # acknowledged, not yet compacted
                    if kills % 2:  # down until another instance adopts its journal
                        deadline = time.monotonic() + 60
                        while _journal_rows(journal) and time.monotonic() < deadline:
                            time.sleep(0.05)
                        if _journal_rows(journal):  # the guarantee stalled: a hang
                            fig.hangs = (fig.hangs or 0) + 1
                            fig.problem(f"{names[victim]}'s journal not adopted in 60 s")
                        elif left:
                            adoptions += 1
                            adopted_rows += left
                    else:
                        time.sleep(rng.uniform(0.0, 0.3))
                    rxs[victim].start()
                load.finish()
                load.join(timeout=300)
                sb.wait_callbacks(timeout=120)
            finally:
                load.join(timeout=0)
                codes = [rx.close() for rx in rxs]
            callbacks = sb.callbacks()
    finally:
        balancer.close()
    for name, code in zip(names, codes, strict=True):
        if code != 0:
            fig.problem(f"{name}'s clean stop exited with {code}")
    sb_ids = count_read_back(fig, logdir, load.acked, callbacks)
    acked = load.acked | sb_ids
    fig.tried = load.claimed + len(callbacks)
    # At rest, after a merge of everything: each event stored once in its day's files.
    compact(logdir, max_small_files=0)
    stored = _stored_keys(logdir)
    repeats = len(stored) - len(set(stored))
    if repeats:
        fig.duplicated = (fig.duplicated or 0) + repeats
        fig.problem(f"{repeats} event(s) stored more than once after the final merge")
    fig.evidence.update(
        kills=kills, acknowledged=len(acked), sandbox_acknowledged=len(sb_ids),
        adoptions=adoptions, adopted_rows=adopted_rows, stored_rows=len(stored),
        stored_keys=len(set(stored)), least_forwarded=min(balancer.forwarded),
    )  # fmt: skip
    fig.notes.append(
        f"{kills} SIGKILLs over {INSTANCES} instances, {sum(rx.starts for rx in rxs)} starts; "
        f"{len(acked)} acknowledged ({len(load.acked)} load, {len(sb_ids)} sandbox); "
        f"connections per instance {balancer.forwarded}; {adoptions} dead instances' journals "
        f"adopted by another ({adopted_rows} rows); after the final merge {len(stored)} rows "
        f"stored for {len(set(stored))} events"
    )
    fig.seconds = time.perf_counter() - start
    return fig
