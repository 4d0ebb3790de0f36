"""Journal chaos: a damaged journal never sends twice; a full disk stops a send honestly.

Two scenarios, each a function returning :class:`Figures` (the chaos table's
fields: tried, sent once, unknown, lost, duplicated, crashes, hangs, leaks, seconds):

1. :func:`journal_fuzz` -- a send's journal is damaged, trial after trial, and the same
   send is run again on it against the sandbox. Half the trials change random bytes
   anywhere in the file; the other half change bytes inside the pages of the messages'
   key index (the index that decides "already sent"), mostly inside the keys
   themselves. Each re-run must refuse with a journal error or send nothing because
   everything was already sent: ``duplicated`` counts the re-runs that sent anything
   (the sandbox's request log says), ``crashes`` the ones that failed with anything
   but a :class:`~massiva_frames.errors.JournalError`.
2. :func:`full_disk` -- a send whose journal is on a small disk that fills mid-run (a
   tmpfs mounted in a private mount namespace with ``unshare``; where mounting is not
   possible, the process's file size limit, ``RLIMIT_FSIZE``, plays the full disk).
   The send must stop with :class:`~massiva_frames.errors.JournalFullError`; then the
   disk grows and the same call runs again. No message may be accepted twice and every
   row must end in a state that matches the sandbox's record.

    python benchmarks/scenarios_journal.py [--trials 1000] [--rows 2000] [--seed N]

``--worker full-disk`` is the subprocess of the full-disk scenario.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from chaos_scenarios.figures import Figures

__all__ = ["full_disk", "journal_fuzz", "main", "mount_mode"]

USUARIO, PASSWORD = "chaos@massiva.test", "Pw-$ecr3t;|&=é"
_OPERATORS = ("412", "414", "416", "424", "426")
_HEX = re.compile(rb"[0-9a-f]{64}")


def campaign(rows: int, *, seed: int = 0) -> Any:
    """``rows`` recipients, every (phone, text) distinct; 1 in 25 phones invalid."""
    import pandas as pd

    rng = random.Random(seed)
    phones, texts = [], []
    for i in range(rows):
        op, number = _OPERATORS[i % 5], 1_000_000 + i
        phones.append(
            "12345" if i % 25 == 7 else rng.choice([f"0{op}-{number}", f"58{op}{number}"])
        )
        texts.append(f"Hola #{i}, saldo {i % 997}")
    index = pd.Index([f"cliente-{i}" for i in range(rows)], name="cliente")
    return pd.DataFrame({"telefono": phones, "mensaje": texts}, index=index)


def _sends(sb: Any) -> int:
    """How many SendSms requests the sandbox received (credit checks are not sends)."""
    return int(sb.requests()["path"].str.contains("SendSms").sum())


def _quiet() -> None:
    for name in ("massiva_frames.sending.loop", "massiva_frames.sending.campaign"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


# --- 1. journal fuzz -----------------------------------------------------------------------


def key_index_spans(path: Path) -> tuple[list[tuple[int, int]], list[int]]:
    """The byte ranges of the key index's pages in ``path``, and the offsets of the
    bytes of the keys stored in them (``dbstat``, SQLite's page census)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        size = int(con.execute("PRAGMA page_size").fetchone()[0])
        pages = [
            int(p)
            for (p,) in con.execute(
                "SELECT pageno FROM dbstat WHERE name = "
                "(SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages')"
            )
        ]
    finally:
        con.close()
    data = path.read_bytes()
    spans = [((p - 1) * size, p * size) for p in sorted(pages)]
    keys = [
        m.start() + k
        for start, end in spans
        for m in _HEX.finditer(data, start, end)
        for k in range(64)
    ]
    return spans, keys


def _cause(exc: BaseException) -> str:
    """What a journal error says went wrong, numbers and paths left out (for tallies)."""
    text = str(exc)
    found = re.search(r"is damaged \((.*?)\)\. It can", text, re.S)
    what = found.group(1) if found else f"{type(exc).__name__}: {text.split(':')[0]}"
    what = re.sub(r"[\d,]+", "N", what.split(": ")[0])
    return what if len(what) <= 70 else what[:67] + "..."


def damage(data: bytes, rng: random.Random, *, offsets: list[int]) -> bytes:
    """``data`` with the byte at each offset changed to another value."""
    out = bytearray(data)
    for at in offsets:
        out[at] = (out[at] + rng.randrange(1, 256)) % 256
    return bytes(out)


def journal_fuzz(
    trials: int,
    workdir: Path,
    *,
    rows: int = 600,
    page_size: int = 4096,
    seed: int = 0,
) -> Figures:
    """``trials`` damaged copies of a send's journal, each followed by the same send.

    The journal is written by a send of ``rows`` rows (some invalid, some ``unknown``:
    the sandbox resets the connection after accepting 1 request in 8), then re-run
    once intact (it must send nothing). ``page_size`` small pages give the key index
    several levels, so its interior pages are damaged too.
    """
    from massiva_frames.errors import JournalError
    from massiva_frames.sandbox import sandbox
    from massiva_frames.sending.campaign import send
    from massiva_frames.sending.journal.sqlite import Journal
    from massiva_frames.wire.client import MassivaClient

    _quiet()
    fig = Figures("journal fuzz", crashes=0, duplicated=0, hangs=0)
    start = time.perf_counter()
    rng = random.Random(seed)
    df = campaign(rows, seed=seed)
    pristine = workdir / "fuzz-pristine.db"
    Journal(pristine, page_size=page_size).close()  # a new journal keeps this page size
    options: dict[str, Any] = dict(
        text="mensaje", phone="telefono", campaign="fuzz", progress=False, max_phones=20
    )
    outcomes: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    changed = 0
    with sandbox(usuario=USUARIO, clave=PASSWORD, credits=10**7, seed=seed) as sb:
        sb.inject("reset", ratio=0.125, seed=seed)
        client = MassivaClient(USUARIO, PASSWORD, sb.base_url, timeout=(1.0, 5.0))
        with client:
            first = send(df, client=client, journal=pristine, **options)
            sb.clear_faults()
            before = _sends(sb)
            again = send(df, client=client, journal=pristine, **options)
            if _sends(sb) != before:
                fig.problem("the intact journal's re-run sent something: the oracle is broken")
                fig.duplicated = 1
            expected = again[["state", "message_id"]].astype("string")
            data = pristine.read_bytes()
            spans, keys = key_index_spans(pristine)
            for trial in range(trials):
                targeted = trial % 2 == 1
                if targeted and keys and rng.random() < 0.75:
                    offsets = rng.sample(keys, rng.randint(1, 3))
                elif targeted:
                    lo, hi = rng.choice(spans)
                    offsets = [rng.randrange(lo, hi) for _ in range(rng.randint(1, 3))]
                else:
                    offsets = [rng.randrange(len(data)) for _ in range(rng.randint(1, 8))]
                path = workdir / f"fuzz-{trial}.db"
                path.write_bytes(damage(data, rng, offsets=offsets))
                requests = _sends(sb)
                what = f"trial {trial} ({'index' if targeted else 'anywhere'} {offsets[:4]})"
                try:
                    results = send(df, client=client, journal=path, **options)
                except JournalError as exc:
                    outcomes[f"refused: {type(exc).__name__}"] += 1
                    causes[_cause(exc)] += 1
                except Exception as exc:  # noqa: BLE001 - a crash is what is counted
                    fig.crashes += 1
                    fig.problem(f"{what}: {type(exc).__name__}: {exc}")
                else:
                    same = results[["state", "message_id"]].astype("string").equals(expected)
                    outcomes["nothing to send" + ("" if same else ", results differ")] += 1
                sent = _sends(sb) - requests
                if sent:
                    fig.duplicated += 1
                    fig.problem(f"{what}: the re-run made {sent} request(s)")
                changed += len(offsets)
                for leftover in workdir.glob(f"fuzz-{trial}.db*"):
                    leftover.unlink()
    fig.tried = trials
    counts = first["state"].astype("string").value_counts().to_dict()
    fig.evidence.update(
        {k.replace(" ", "_").replace(":", "").replace(",", ""): v for k, v in outcomes.items()}
    )
    fig.evidence.update(bytes_changed=changed, index_pages=len(spans), first_run_rows=len(first))
    fig.notes.append(f"journal of {rows} rows ({counts}), {len(data):,} bytes, {page_size} B pages")
    fig.notes.append(f"key index: {len(spans)} pages; outcomes: {dict(sorted(outcomes.items()))}")
    fig.notes.append(f"{changed} bytes changed over {trials} trials (odd trials inside the index)")
    fig.notes.append(f"refusals by cause: {dict(causes.most_common())}")
    fig.seconds = time.perf_counter() - start
    return fig


# --- 2. full disk --------------------------------------------------------------------------


def _unshare() -> list[str]:
    """A private mount namespace (as root; otherwise in a user namespace of one's own)."""
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]


def mount_mode() -> str:
    """``"tmpfs"`` when a small tmpfs can be mounted in a private mount namespace,
    else ``"fsize"`` (the file size limit stands in for the full disk)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "fsize"
    with tempfile.TemporaryDirectory() as tmp:
        probe = [*_unshare(), "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", tmp]
        try:
            done = subprocess.run(probe, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "fsize"
    return "tmpfs" if done.returncode == 0 else "fsize"


def _limit(mode: str, folder: str, size: int | None) -> None:
    """Give the journal ``size`` bytes of room (``None``: plenty)."""
    import resource

    if mode == "tmpfs":
        options = f"size={size}" if size is not None else "remount,size=256m"
        command = ["mount", "-o", options, "tmpfs", folder]
        if size is not None:
            command[1:1] = ["-t", "tmpfs"]
        subprocess.run(command, check=True)
        return
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, not kills
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard if size is None else size, hard))


def _worker_full_disk(args: argparse.Namespace) -> int:
    """The full-disk subprocess: a send that fills the disk, then the same send again
    once the disk has room; one JSON line on stdout says what each run raised."""
    import pandas as pd

    from massiva_frames.errors import MassivaError
    from massiva_frames.sending.campaign import results_from_journal, send
    from massiva_frames.wire.client import MassivaClient

    _quiet()
    df = pd.read_parquet(args.input)
    journal = Path(args.dir) / "journal.db"
    report: dict[str, Any] = {}
    options: dict[str, Any] = dict(
        text="mensaje", phone="telefono", journal=journal, progress=False, concurrency=2,
        max_phones=args.max_phones,
    )  # fmt: skip
    _limit(args.mode, args.dir, args.limit)
    with MassivaClient(base_url=args.base_url, timeout=(1.0, 10.0)) as client:
        for run in ("first", "again"):
            try:
                send(df, client=client, **options)
                report[run] = {"raised": None}
            except MassivaError as exc:
                report[run] = {"raised": type(exc).__name__, "message": str(exc)}
            except Exception as exc:  # noqa: BLE001 - reported, counted as a crash
                report[run] = {"raised": type(exc).__name__, "message": str(exc), "crash": 1}
            states = results_from_journal(journal)["state"].astype("string")
            report[run]["states"] = {str(k): int(v) for k, v in states.value_counts().items()}
            if run == "first":
                _limit(args.mode, args.dir, None)  # the disk grows (or space is freed)
        results_from_journal(journal).to_parquet(args.out)
    print(json.dumps(report), flush=True)
    return 0


def _compare(fig: Figures, df: Any, results: Any, messages: Any) -> None:
    """Rows against the sandbox's record: ``duplicated`` (phone, text) accepted twice,
    ``lost`` rows missing, accepted without a record, or recorded while their state says
    never sent."""
    states = results["state"].astype("string")
    pair = results["phone"].astype("string") + "\x1f" + results["text"].astype("string")
    times = (messages["phone"].astype(str) + "\x1f" + messages["text"]).value_counts()
    recorded = pair.isin(times.index)
    accepted = states == "accepted"
    missing = len(df.index.difference(results.index))
    said_unsent = recorded & states.isin(["scheduled", "invalid", "rejected"])
    unrecorded = accepted & ~recorded
    fig.lost = missing + int(said_unsent.sum()) + int(unrecorded.sum())
    for label in list(results.index[said_unsent | unrecorded][:3]):
        fig.problem(f"{label}: {states[label]}, recorded by the sandbox: {bool(recorded[label])}")
    fig.duplicated = int((times > 1).sum())
    fig.sent_once = int((accepted & (pair.map(times) == 1)).sum())
    fig.unknown = int((states == "unknown").sum())
    fig.evidence["unknown_accepted_by_provider"] = int(((states == "unknown") & recorded).sum())


def full_disk(
    workdir: Path,
    *,
    rows: int = 2_000,
    disk_bytes: int = 2 * 2**20,
    max_phones: int = 25,
    seed: int = 0,
    mode: str | None = None,
) -> Figures:
    """A send whose journal's disk (``disk_bytes``) fills mid-run; then the same send
    once the disk has room. ``mode``: ``"tmpfs"`` or ``"fsize"`` (default: what works
    here, :func:`mount_mode`)."""
    import pandas as pd

    from massiva_frames.sandbox import sandbox

    mode = mode or mount_mode()
    fig = Figures(f"full disk ({mode})", crashes=0, hangs=0)
    start = time.perf_counter()
    df = campaign(rows, seed=seed)
    data, out, disk = (
        workdir / "disk-input.parquet",
        workdir / "disk-results.parquet",
        workdir / "disk",
    )
    df.to_parquet(data)
    disk.mkdir(exist_ok=True)
    report: dict[str, Any] = {}
    with sandbox(usuario=USUARIO, clave=PASSWORD, credits=10**7, seed=seed) as sb:
        command = [
            sys.executable, str(Path(__file__).resolve()), "--worker", "full-disk",
            "--dir", str(disk), "--input", str(data), "--out", str(out), "--mode", mode,
            "--limit", str(disk_bytes), "--base-url", sb.base_url,
            "--max-phones", str(max_phones),
        ]  # fmt: skip
        if mode == "tmpfs":
            command = [*_unshare(), *command]
        env = {**os.environ, "MASSIVA_USUARIO": USUARIO, "MASSIVA_CLAVE": PASSWORD}
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=600, env=env, check=False
            )
            lines = done.stdout.strip().splitlines()
            report = json.loads(lines[-1]) if done.returncode == 0 and lines else {}
            if not report:
                fig.crashes += 1
                fig.problem(f"worker exited {done.returncode}: {done.stderr[-400:]}")
        except subprocess.TimeoutExpired:
            fig.hangs = 1
        messages = sb.messages()
    fig.tried = rows
    if report:
        first, again = report["first"], report["again"]
        message = str(first.get("message", ""))
        honest = first["raised"] == "JournalFullError" and "is full" in message
        if not honest or "not a massiva-frames journal" in message:
            fig.crashes += 1
            fig.problem(f"the first run raised {first['raised']}: {message[:300]}")
        if again["raised"] is not None:
            fig.crashes += 1
            fig.problem(f"the run after the disk grew raised {again['raised']}: {again}")
        fig.crashes += int(first.get("crash", 0)) + int(again.get("crash", 0))
        sent_first = first["states"].get("accepted", 0) + first["states"].get("unknown", 0)
        fig.evidence.update(
            filled_mid_run=int(0 < sent_first < rows), sent_before_full=sent_first,
            full_errors=int(first["raised"] == "JournalFullError"),
        )  # fmt: skip
        fig.notes.append(f"first run: {first['raised']}: {message[:160]}...")
        fig.notes.append(
            f"after the first run: {first['states']}; after the second: {again['states']}"
        )
        _compare(fig, df, pd.read_parquet(out), messages)
    fig.notes.insert(0, f"{rows} rows, journal on {disk_bytes // 1024} KiB ({mode})")
    fig.seconds = time.perf_counter() - start
    return fig


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run both scenarios and print their figures; 1 when a must-be-zero is not 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=["full-disk"])
    for name in ("--dir", "--input", "--out", "--mode", "--base-url"):
        parser.add_argument(name)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--max-phones", type=int, default=25)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker_full_disk(args)
    with tempfile.TemporaryDirectory() as tmp:
        figures = [
            journal_fuzz(args.trials, Path(tmp), rows=args.rows, seed=args.seed),
            full_disk(Path(tmp), rows=args.rows, seed=args.seed),
        ]
    for fig in figures:
        print("\n".join(fig.lines()))
    return 1 if any(fig.failing() for fig in figures) else 0


if __name__ == "__main__":
    raise SystemExit(main())
