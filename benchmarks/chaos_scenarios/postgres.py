"""Scenario ``postgres``: four dispatcher processes on one PostgreSQL journal, SIGKILLed at
random moments and restarted, and the database server restarted once mid-send.

The campaign is journalled first, every row scheduled for one moment (``send`` with
``send_at``, nothing sent); then four ``dispatch`` processes (``chaos.py --worker
dispatch``) share the journal while the harness kills one at random moments of the send
(at random numbers of messages sent, plus a random fraction of a request's time; three
times in four the dispatcher with a request in flight, by the journal's record, else any
of the four), starts another in its place, and restarts PostgreSQL once about half of
the messages are out; until every row is final: sent once
by the sandbox's record, or ``unknown`` (in flight at a kill), never both, never twice.
The cluster is a throwaway one (``tests/pg_server.py``); without PostgreSQL's server
binaries the scenario is skipped with its reason.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .campaigns import campaign, send_figures
from .figures import Figures, Sizes
from .harness import USUARIO
from .scanning import PASSWORD

__all__ = ["scenario_postgres", "worker_dispatch"]

#: the command whose ``--worker dispatch`` is the subprocess killed
ENTRY = Path(__file__).resolve().parents[1] / "chaos.py"
TESTS = Path(__file__).resolve().parents[2] / "tests"
WHEN = "2030-01-07 09:00"  # every row's time (America/Caracas); the dispatchers' now


def _cluster_module() -> Any:
    """``tests/pg_server.py``: the throwaway cluster the tests start."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import pg_server

    return pg_server


def worker_dispatch(args: argparse.Namespace) -> int:
    """The dispatcher subprocess: one ``dispatch`` on the journal; 0 when it returns."""
    from massiva_frames.sending.campaign import dispatch
    from massiva_frames.wire.client import MassivaClient

    with MassivaClient(base_url=args.base_url, timeout=(1.0, 10.0)) as client:
        dispatch(args.journal, client=client, now=WHEN, concurrency=2)
    return 0


def _open_work(journal: str) -> int:
    """Messages still pending or in flight in the journal (-1: it cannot be read now)."""
    from massiva_frames.errors import MassivaError
    from massiva_frames.sending.journal.postgres import PostgresJournal

    try:
        with PostgresJournal(journal, readonly=True) as j:
            counts = j.counts()
    except MassivaError:
        return -1
    return counts.get("pending", 0) + counts.get("inflight", 0)


def _batch_states(journal: str) -> dict[str, int]:
    """How the journal's requests ended: ``batches_<state>`` counts."""
    from massiva_frames.sending.journal.postgres import PostgresJournal

    with PostgresJournal(journal, readonly=True) as j:
        _, rows = j._fetch("SELECT state, COUNT(*) FROM batches GROUP BY state")
    return {f"batches_{state}": int(n) for state, n in rows}


def _sending(journal: str) -> set[int]:
    """The process ids of the workers with a request in flight (the journal's record)."""
    from massiva_frames.errors import MassivaError
    from massiva_frames.sending.journal.postgres import PostgresJournal

    try:
        with PostgresJournal(journal, readonly=True) as j:
            _, rows = j._fetch("SELECT DISTINCT worker FROM batches WHERE state = 'inflight'")
    except MassivaError:
        return set()
    return {int(str(w).split(":")[1]) for (w,) in rows if w}


def scenario_postgres(sizes: Sizes, workdir: Path, *, seed: int = 0) -> Figures:
    """Four dispatchers on one PostgreSQL journal, ``sizes.postgres_kills`` SIGKILLs at
    random moments (seeded) with restarts, one PostgreSQL restart mid-send."""
    from massiva_frames.sandbox import sandbox
    from massiva_frames.sending.campaign import results_from_journal, send
    from massiva_frames.wire.client import MassivaClient

    fig = Figures("postgres dispatchers", crashes=0, hangs=0)
    start = time.perf_counter()
    pg_server = _cluster_module()
    if not pg_server.available():
        fig.notes.append(f"skipped: PostgreSQL is not available here ({pg_server.INSTALL})")
        return fig
    rng = random.Random(seed)
    df = campaign(sizes.postgres_rows, seed=seed).assign(when=WHEN)
    cluster = pg_server.Cluster()
    journal = cluster.url("chaos", lease="10")
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    kills = starts = restarts = clean_stops = 0
    failures: list[str] = []
    try:
        with sandbox(usuario=USUARIO, clave=PASSWORD, credits=10**7, seed=seed) as sb:
            with MassivaClient(USUARIO, PASSWORD, sb.base_url) as client:
                send(df, client=client, text="mensaje", phone="telefono", journal=journal,
                     send_at="when", max_phones=50, progress=False)  # fmt: skip
            sb.inject("latency", ratio=1.0, seconds=0.05)  # kills land in requests too
            cmd = [sys.executable, str(ENTRY), "--worker", "dispatch", "--journal", journal,
                   "--base-url", sb.base_url]  # fmt: skip
            env = {**os.environ, "MASSIVA_USUARIO": USUARIO, "MASSIVA_CLAVE": PASSWORD}
            deadline = time.monotonic() + 900
            marks = sorted(rng.uniform(0.02, 0.95) * sizes.postgres_rows
                           for _ in range(sizes.postgres_kills))  # fmt: skip
            next_look = sent = in_flight_kills = 0
            while True:
                for proc, log in list(procs):  # the ones that ended on their own
                    code = proc.poll()
                    if code is None:
                        continue
                    procs.remove((proc, log))
                    text = log.read_text(errors="replace")
                    # Stopped with the error that names the journal: the database was
                    # restarting, or the worker's lease was taken over. Anything else fails.
                    if code != 0 and (
                        "JournalUnavailableError" in text or "JournalBusyError" in text
                    ):
                        clean_stops += 1
                    elif code != 0:
                        failures.append(f"exit {code}: {text.strip().splitlines()[-1:]}")
                if time.monotonic() > deadline:
                    fig.hangs = 1
                    fig.problem("the dispatchers did not finish in 900 s")
                    break
                if time.monotonic() >= next_look:  # once a second: every row final yet?
                    next_look = time.monotonic() + 1.0
                    if _open_work(journal) == 0:
                        break
                    if not restarts and sent >= sizes.postgres_rows // 2:
                        cluster.restart(pause=1.0)
                        restarts += 1
                sent = len(sb.messages())
                while len(procs) < 4:
                    log = workdir / f"dispatcher-{starts}.log"
                    with open(log, "wb") as err:
                        procs.append((subprocess.Popen(cmd, stderr=err, env=env, cwd=workdir), log))
                    starts += 1
                if kills < len(marks) and sent >= marks[kills]:
                    time.sleep(rng.uniform(0, 0.1))  # a random moment of a request
                    busy = _sending(journal) if rng.random() < 0.75 else set()
                    at = [k for k, (p, _) in enumerate(procs) if p.pid in busy]
                    proc, log = procs.pop(at[0] if at else rng.randrange(len(procs)))
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(60)
                    kills += 1
                    in_flight_kills += bool(at)
                time.sleep(0.05)
            for proc, _ in procs:
                proc.kill()
                proc.wait(60)
            results = results_from_journal(journal)
            send_figures(fig, df, results, sb.messages())
            fig.evidence.update(_batch_states(journal))
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
        cluster.close()
    fig.crashes = (fig.crashes or 0) + len(failures)
    for failure in failures[:5]:
        fig.problem(f"a dispatcher failed: {failure}")
    fig.evidence.update(kills=kills, starts=starts, restarts=restarts, clean_stops=clean_stops,
                        kills_in_flight=in_flight_kills)  # fmt: skip
    fig.notes.insert(
        0,
        f"4 dispatchers at a time: {kills} SIGKILLs ({in_flight_kills} of the one with "
        f"a request in flight) over {starts} starts; PostgreSQL "
        f"restarted {restarts} time(s) mid-send; {clean_stops} dispatchers stopped with "
        "JournalUnavailableError/JournalBusyError (the database away, a lease taken over)",
    )
    fig.seconds = time.perf_counter() - start
    return fig
