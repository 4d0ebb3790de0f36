"""Ctrl-C and SIGTERM while several requests are under way, against a sandbox holding answers.

The sandbox's latency fault holds each request behind a gate (received and logged, not
yet processed) until the test opens it; a hang fault takes one request and never answers
it. The interrupt comes once the sandbox has received the requests, so they are truly in
flight. Afterwards every row is checked against the sandbox's own record of what it
received: ``accepted``/``rejected`` if its answer arrived, ``unknown`` if its request
reached the sandbox without an answer, ``scheduled`` only if no request carried it; and a
re-run sends exactly the scheduled rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pandas as pd
import pytest

from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.sending.campaign import send
from massiva_frames.sending.journal.sqlite import results_from_journal
from massiva_frames.wire.client import MassivaClient

ROWS = 24
BATCH = 2
CONCURRENCY = 4


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(credits=10_000, callback_delay=60, hang_seconds=30) as server:
        yield server


def frame() -> pd.DataFrame:
    phones = [f"0414{1000000 + i:07d}" for i in range(ROWS)]
    return pd.DataFrame({"phone": phones, "msg": "Hola"}, index=[f"r{i}" for i in range(ROWS)])


def send_requests(sb: Sandbox) -> pd.DataFrame:
    reqs = sb.requests()
    return reqs[reqs["path"] == "/webservices/SendSms"].reset_index(drop=True)


def wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def fate_by_phone(sb: Sandbox) -> dict[str, str]:
    """The sandbox's record: phone -> the fault of the request that carried it."""
    reqs = sb.requests().set_index("request_no")
    msgs = sb.messages()
    faults = reqs["fault"].fillna("none")
    pairs = zip(msgs["phone"], msgs["request_no"], strict=True)
    return {str(phone): str(faults.loc[n]) for phone, n in pairs}


def check_against_the_sandbox(results: pd.DataFrame, sb: Sandbox) -> pd.DataFrame:
    """Each row's state is what the sandbox's record proves; returns the scheduled rows."""
    carried = fate_by_phone(sb)
    messages = sb.messages().set_index("phone")
    for label, row in results.iterrows():
        fault = carried.get(str(row["phone"]))
        if fault is None:  # no request the sandbox received carried it
            assert row["state"] == "scheduled", (label, row["state"], row["reason"])
        elif fault == "hang":  # received, never answered
            assert (row["state"], row["reason"]) == ("unknown", "in_doubt_no_response"), label
        else:  # received and answered
            assert row["state"] == "accepted", (label, row["state"], row["reason"])
            assert row["message_id"] == messages.loc[row["phone"], "id"]
    return results[results["state"] == "scheduled"]


def test_ctrl_c_with_requests_in_flight(sb: Sandbox, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    gate = threading.Event()
    sb.inject("latency", count=1, seconds=0)  # the credit check before the send: no delay
    sb.inject("hang", count=1)  # the first request to arrive: received, never answered
    sb.inject("latency", seconds=30, gate=gate)  # every other one: held until the gate opens
    interrupted = threading.Event()
    main = threading.main_thread().ident
    assert main == threading.get_ident() and main is not None

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    def ctrl_c() -> None:
        # Once the sandbox holds a full pool of requests, none of them answered yet.
        try:
            wait_for(lambda: len(send_requests(sb)) >= CONCURRENCY)
            signal.pthread_kill(main, signal.SIGINT)
            interrupted.wait(30)
        finally:
            gate.set()  # the held requests are processed and answered now

    previous = signal.signal(signal.SIGINT, on_sigint)
    helper = threading.Thread(target=ctrl_c)
    helper.start()
    try:
        with MassivaClient(sb.usuario, sb.clave, sb.base_url, timeout=(2, 4)) as client:
            with pytest.raises(KeyboardInterrupt):
                send(frame(), client=client, text="msg", journal=journal, max_phones=BATCH,
                     concurrency=CONCURRENCY, progress=False)  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
        gate.set()
        helper.join(30)
    assert interrupted.is_set()
    reqs = send_requests(sb)
    # Nothing was submitted after the interrupt: the pool that was in flight, no more.
    assert len(reqs) == CONCURRENCY and reqs["n_phones"].sum() == CONCURRENCY * BATCH
    assert reqs["fault"].tolist().count("hang") == 1
    results = results_from_journal(journal)
    assert len(results) == ROWS
    scheduled = check_against_the_sandbox(results, sb)
    counts = results["state"].value_counts()
    assert (counts["accepted"], counts["unknown"]) == ((CONCURRENCY - 1) * BATCH, BATCH)
    assert len(scheduled) == ROWS - CONCURRENCY * BATCH

    sb.clear_faults()
    with MassivaClient(sb.usuario, sb.clave, sb.base_url, timeout=(2, 4)) as client:
        again = send(frame(), client=client, text="msg", journal=journal, max_phones=BATCH,
                     concurrency=CONCURRENCY, progress=False)  # fmt: skip
    after = send_requests(sb)
    assert len(after) == CONCURRENCY + len(scheduled) // BATCH
    new = sb.messages().merge(after.iloc[CONCURRENCY:][["request_no"]], on="request_no")
    assert sorted(new["phone"]) == sorted(scheduled["phone"])  # exactly the never-sent rows
    assert sb.messages()["phone"].is_unique
    assert (again.loc[scheduled.index, "state"] == "accepted").all()
    unknown = results.index[results["state"] == "unknown"]
    assert (again.loc[unknown, "state"] == "unknown").all()  # in doubt: never resent


CLI = [sys.executable, "-m", "massiva_frames.faces.cli", "send"]


def _cli_send(sb: Sandbox, tmp_path: Path) -> tuple[list[str], dict[str, str], Path]:
    source = tmp_path / "in.csv"
    frame().to_csv(source, index=False)
    journal = tmp_path / "j.db"
    argv = [*CLI, str(source), "--text", "msg", "--journal", str(journal), "--no-progress"]
    argv += ["--out", str(tmp_path / "out.parquet")]
    argv += ["--concurrency", str(CONCURRENCY), "--max-phones", str(BATCH)]
    env = {
        **os.environ,
        "MASSIVA_USUARIO": sb.usuario,
        "MASSIVA_CLAVE": sb.clave,
        "MASSIVA_BASE_URL": sb.base_url,
    }
    return argv, env, journal


def test_sigterm_stops_like_ctrl_c(sb: Sandbox, tmp_path: Path) -> None:
    """A scheduler's SIGTERM: no new request, the answers in flight awaited and recorded,
    exit 143; the same command again sends exactly the rest."""
    argv, env, journal = _cli_send(sb, tmp_path)
    gate = threading.Event()
    sb.inject("latency", count=1, seconds=0)  # the credit check before the send: no delay
    sb.inject("latency", seconds=30, gate=gate)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc.poll() is not None or len(send_requests(sb)) >= CONCURRENCY, 60)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the process is draining: it waits for the requests in flight
        assert proc.poll() is None
        gate.set()  # the provider answers them
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err.decode()[-2000:]
        assert b"stopped by SIGTERM" in err
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert len(send_requests(sb)) == CONCURRENCY  # nothing new after the signal
    results = results_from_journal(journal)
    carried = fate_by_phone(sb)
    in_flight = results["phone"].isin(list(carried))
    assert in_flight.sum() == CONCURRENCY * BATCH
    # the answers came while it drained: recorded, not in doubt
    assert (results.loc[in_flight, "state"] == "accepted").all()
    assert (results.loc[~in_flight, "state"] == "scheduled").all()
    rest = results[~in_flight]

    sb.clear_faults()
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    after = send_requests(sb)
    assert len(after) == CONCURRENCY + len(rest) // BATCH
    new = sb.messages().merge(after.iloc[CONCURRENCY:][["request_no"]], on="request_no")
    assert sorted(new["phone"]) == sorted(rest["phone"])  # exactly the never-sent rows
    assert sb.messages()["phone"].is_unique
    assert (results_from_journal(journal)["state"] == "accepted").all()


def test_a_second_sigterm_stops_at_once(sb: Sandbox, tmp_path: Path) -> None:
    """Two SIGTERMs: the process ends without waiting; what was in flight is in doubt."""
    argv, env, journal = _cli_send(sb, tmp_path)
    gate = threading.Event()
    sb.inject("latency", count=1, seconds=0)  # the credit check before the send: no delay
    sb.inject("latency", seconds=30, gate=gate)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc.poll() is not None or len(send_requests(sb)) >= CONCURRENCY, 60)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGTERM
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    # The requests held at the kill reach the provider all the same.
    wait_for(lambda: len(sb.messages()) == CONCURRENCY * BATCH)
    assert len(send_requests(sb)) == CONCURRENCY
    results = results_from_journal(journal)
    carried = fate_by_phone(sb)
    in_flight = results["phone"].isin(list(carried))
    assert in_flight.sum() == CONCURRENCY * BATCH
    # The process died before any answer: every request it had made is in doubt.
    assert (results.loc[in_flight, "state"] == "unknown").all()
    assert set(results.loc[in_flight, "reason"]) == {"in_doubt_process_stopped"}
    assert (results.loc[~in_flight, "state"] == "scheduled").all()
    scheduled = results[~in_flight]

    sb.clear_faults()
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 3, again.stderr[-2000:]  # partial: some rows in doubt
    after = send_requests(sb)
    assert len(after) == CONCURRENCY + len(scheduled) // BATCH
    new = sb.messages().merge(after.iloc[CONCURRENCY:][["request_no"]], on="request_no")
    assert sorted(new["phone"]) == sorted(scheduled["phone"])  # exactly the never-sent rows
    assert sb.messages()["phone"].is_unique
    final = results_from_journal(journal)
    assert (final.loc[~in_flight.to_numpy(), "state"] == "accepted").all()
    assert (final.loc[in_flight.to_numpy(), "state"] == "unknown").all()
