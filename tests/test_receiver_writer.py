"""The callback writer's refusals: after stop, and a commit that does not come in time (503).

The writer's connection is held inside ``BEGIN IMMEDIATE`` by a gate the test opens, so a
commit is slow on demand: no sleep decides what happens first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from massiva_frames.receiving import Receiver, read_callbacks, receiver
from massiva_frames.receiving.event_journal import (
    DurableLog,
    StorageUnavailable,
    _Ticket,
    pending_rows,
    read_journal,
)

if TYPE_CHECKING:
    from conftest import HeldConnection

Hold = Callable[[Any], "HeldConnection"]

STATUS = ("123", "1", "2014-01-01 12:10:30", None, None)


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        yield session


def test_a_write_after_close_is_refused(tmp_path: Path) -> None:
    log = DurableLog(tmp_path)
    log.write("status", STATUS, key="k1", received_us=1)
    log.close()
    with pytest.raises(StorageUnavailable, match="shutting down"):
        log.write("status", STATUS, key="k2", received_us=2)
    assert [row[1] for row in read_journal(tmp_path, "status")] == ["k1"]


def test_an_event_queued_behind_the_stop_is_refused_not_lost_silently(
    tmp_path: Path, hold_commits: Hold
) -> None:
    log = DurableLog(tmp_path)
    held = hold_commits(log)
    first = threading.Thread(
        target=log.write, args=("status", STATUS), kwargs={"key": "k1", "received_us": 1}
    )
    first.start()
    assert held.entered.wait(10)  # the writer is committing k1
    closer = threading.Thread(target=log.close)
    closer.start()
    wait_for(lambda: log.queued() == 1)  # the stop is queued behind k1
    # A request that passed the "closing?" check just before the stop was queued.
    late = _Ticket("status", (2, "k2", *STATUS))
    log._queue.put(late)
    held.release.set()
    first.join(10)
    closer.join(10)
    assert late.done.acquire(timeout=10)
    assert late.error == "the receiver is shutting down"  # its request is answered 503
    assert [row[1] for row in read_journal(tmp_path, "status")] == ["k1"]


def test_a_commit_that_does_not_come_in_time_is_a_503_then_the_retry_is_stored_once(
    tmp_path: Path, http: requests.Session, hold_commits: Hold
) -> None:
    logdir = tmp_path / "logs"
    with receiver(logdir, compact_interval=3600) as rc:
        log = rc._log
        held = hold_commits(log)
        log._wait_timeout = 0.3  # type: ignore[attr-defined]
        query = {"id": 123, "estatus": 1}
        r = http.get(rc.url, params=query, timeout=10)
        assert held.entered.is_set()
        assert r.status_code == 503 and r.headers["Retry-After"] == "5"
        assert "timed out waiting for the durable write" in r.text
        held.release.set()
        # The late commit still lands; the provider's retry is stored again and read once.
        wait_for(lambda: pending_rows(logdir) == 1)
        assert http.get(rc.url, params=query, timeout=10).status_code == 200
        assert pending_rows(logdir) == 2
        health = http.get(rc.base_url + "/health", timeout=10).json()
        assert health["status"] == "ok" and health["stored"] == 2
    assert read_callbacks(logdir)["message_id"].tolist() == [123]


def test_a_callback_after_the_writer_stopped_is_a_503(
    tmp_path: Path, http: requests.Session
) -> None:
    rc: Receiver = receiver(tmp_path / "logs", compact_interval=3600)
    try:
        assert http.get(rc.url, params={"msg": "antes", "phone": "1"}, timeout=10).ok
        rc._log.close()  # storage stops before the HTTP side does
        r = http.get(rc.url, params={"msg": "tarde", "phone": "1"}, timeout=10)
        assert r.status_code == 503 and r.headers["Retry-After"] == "5"
        assert "shutting down" in r.text
    finally:
        rc.close()
    assert read_callbacks(tmp_path / "logs", kind="inbound")["text"].tolist() == ["antes"]
