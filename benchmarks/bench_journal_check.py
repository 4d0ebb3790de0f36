"""What the journal's check before writing costs, beside what a send already spends.

A journal of N messages (default 1,000,000, every one accepted) is written the way a
send writes it before its first request (the rows and their messages, one
transaction); then, on that file, median of the rounds, wall and CPU seconds:

- **open**: ``Journal(path)`` (the file classified, pragmas, schema version);
- **verify**: what every send and dispatch runs before writing
  (:func:`massiva_frames.sending.journal.checks.verify`), and its parts:
  ``PRAGMA quick_check(messages)``, the key index's entries counted against the
  messages, the batches read;
- **re-run insert**: the same N messages added again (none is new), with the check
  that none repeats an older key (free: nothing was added); once, rolled back;
- **new campaign insert**: N other messages added to the N there, with that check
  (the older messages read against the new keys), and the check alone; once;
- **results**: the results frame read back (what a re-run or ``dispatch`` returns);
- once each, for comparison: ``PRAGMA integrity_check`` and
  ``PRAGMA integrity_check(messages)``, which look every key up in its index.

    python benchmarks/bench_journal_check.py [--rows 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["build", "main", "measure"]


def _keys(n: int, salt: str) -> list[str]:
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


def _write(journal: Any, keys: list[str], *, position: int = 0) -> tuple[int, int]:
    """Rows and messages as a send writes them before its first request."""
    n = len(keys)
    with journal.transaction():
        journal.replace_rows(
            [],
            {"index": {"kind": "range", "start": 0, "stop": n, "step": 1, "names": [None]}},
            sending=((position + i, str(i), keys[i], "GSM-7", 1) for i in range(n)),
        )
        phones = [f"58414{1_000_000 + i % 9_000_000:07d}" for i in range(n)]
        texts = [f"Hola #{i}, tu saldo es {i % 997}" for i in range(n)]
        return journal.insert_messages(keys, [1] * n, phones, texts, campaign="bench")  # type: ignore[no-any-return]


def build(path: Path, rows: int) -> tuple[float, float]:
    """Write a journal of ``rows`` accepted messages; return the seconds (wall, CPU) of
    the writes a send makes before its first request."""
    from massiva_frames.sending.journal.sqlite import Journal

    keys = _keys(rows, "a")
    with Journal(path) as journal:
        wall, cpu = time.perf_counter(), time.process_time()
        _write(journal, keys)
        seconds = time.perf_counter() - wall, time.process_time() - cpu
        with journal.transaction() as conn:
            conn.execute(
                "UPDATE messages SET state = 'accepted', message_id = id + 100000, "
                "sid = 'x', batch = (id - 1) / 500 + 1, sent_at = created_at"
            )
            conn.execute(
                "INSERT INTO batches (number, state, n_messages, method, requested_at) "
                "SELECT DISTINCT batch, 'done', 500, 'POST', 0 FROM messages"
            )
    return seconds


def _timed(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def measure(
    path: Path, rows: int, *, rounds: int, integrity: bool
) -> dict[str, tuple[float, float]]:
    """The timings on the journal at ``path`` (``{name: (wall, cpu)}``)."""
    from massiva_frames.sending.journal import checks
    from massiva_frames.sending.journal.sqlite import Journal

    out: dict[str, tuple[float, float]] = {}
    out["open"] = _timed(lambda: Journal(path).close(), rounds)
    with Journal(path) as journal:
        conn = journal.conn
        index = checks.key_index(conn, str(path))
        out["verify"] = _timed(journal.verify, rounds)
        out["  quick_check(messages)"] = _timed(
            lambda: conn.execute("PRAGMA quick_check(messages)").fetchall(), rounds
        )
        out["  index entries = messages"] = _timed(
            lambda: (
                conn.execute("SELECT count(*) FROM messages NOT INDEXED").fetchone(),
                conn.execute(f'SELECT count(*) FROM messages INDEXED BY "{index}"').fetchone(),
            ),
            rounds,
        )
        out["  batches readable"] = _timed(lambda: checks.verify_batches(conn, str(path)), rounds)
        same, other = _keys(rows, "a"), _keys(rows, "b")
        alone: list[tuple[float, float]] = []

        def again(keys: list[str], *, check_only: bool = False) -> None:
            try:
                with journal.transaction():
                    if check_only:
                        first = _write_unchecked(journal, keys)
                        wall, cpu = time.perf_counter(), time.process_time()
                        checks.check_added(conn, str(path), first, ((k, 1) for k in keys))
                        alone.append((time.perf_counter() - wall, time.process_time() - cpu))
                    else:
                        _write(journal, keys, position=rows)
                    raise _Rollback
            except _Rollback:
                pass

        # Once each: these write (and roll back) N messages.
        out["re-run insert (0 new)"] = _timed(lambda: again(same), 1)
        out["new campaign insert (N new)"] = _timed(lambda: again(other), 1)
        again(other, check_only=True)
        out["  its check alone"] = alone[0]
        out["results frame"] = _timed(journal.results, rounds)
        if integrity:
            out["integrity_check"] = _timed(
                lambda: conn.execute("PRAGMA integrity_check").fetchall(), 1
            )
            out["integrity_check(messages)"] = _timed(
                lambda: conn.execute("PRAGMA integrity_check(messages)").fetchall(), 1
            )
    return out


class _Rollback(Exception):
    """Leaves a transaction without committing it."""


def _write_unchecked(journal: Any, keys: list[str]) -> int:
    """Add messages with plain SQL (no check): the id of the first."""
    conn = journal.conn
    first = int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM messages").fetchone()[0])
    conn.executemany(
        "INSERT OR IGNORE INTO messages (id, row_key, part, phone, text, campaign, state, "
        "created_at) VALUES (?, ?, 1, '584141234567', 'hola', 'bench', 'pending', 0)",
        ((first + i, k) for i, k in enumerate(keys)),
    )
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-integrity", action="store_true", help="skip integrity_check")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.db"
        wrote = build(path, args.rows)
        size = sum(p.stat().st_size for p in Path(tmp).glob("journal.db*"))
        print(f"journal of {args.rows:,} accepted messages, {size / 2**20:,.0f} MiB")
        timings = measure(path, args.rows, rounds=args.rounds, integrity=not args.no_integrity)
    print(f"{'':<40} {'wall s':>8} {'cpu s':>8} {'cpu, of the writes':>19}")
    print(f"{'a send writes before its first request':<40} {wrote[0]:8.2f} {wrote[1]:8.2f}")
    for name, (wall, cpu) in timings.items():
        print(f"{name:<40} {wall:8.2f} {cpu:8.2f} {cpu / wrote[1]:18.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
