"""The callback receiver over real HTTP: kinds, encodings, refusals, token, durability."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
import requests

from massiva_frames.receiving import Receiver, compact, read_callbacks, receiver
from massiva_frames.receiving.event_journal import journal_path, pending_rows

if TYPE_CHECKING:
    from conftest import HeldConnection

Hold = Callable[[Any], "HeldConnection"]

STATUS_QS = (
    "id=123&estatus=1&fecha_actualizacion=2014-01-01%2012:10:30"
    "&usuario=usuario@gmail.com&detalle=%2B584142122268"
)


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def rc(logdir: Path) -> Iterator[Receiver]:
    # Compaction only when a test asks for it.
    with receiver(logdir, compact_interval=3600) as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        yield session


def get(http: requests.Session, rc: Receiver, query: str) -> requests.Response:
    return http.get(f"{rc.url}?{query}", timeout=10)


def test_status_callback_by_get_is_stored_and_typed(
    rc: Receiver, http: requests.Session, logdir: Path
) -> None:
    r = get(http, rc, STATUS_QS)
    assert (r.status_code, r.text.strip()) == (200, "OK")
    r = get(
        http, rc, "id=124&estatus=2&fecha_actualizacion=2014-01-01+12:11:00&detalle=ERROR+EN+ENVIO"
    )
    assert r.status_code == 200
    df = read_callbacks(logdir, kind="status")
    assert list(df.columns) == [
        "message_id", "status", "updated_at", "user", "detail", "line", "received_at",
    ]  # fmt: skip
    assert str(df["message_id"].dtype) == "Int64"
    assert list(df["status"].cat.categories) == ["delivered", "failed"]
    assert str(df["updated_at"].dt.tz) == "America/Caracas"
    assert str(df["received_at"].dt.tz) == "UTC"
    assert df["message_id"].tolist() == [123, 124]
    assert df["status"].tolist() == ["delivered", "failed"]
    assert df.loc[0, "line"] == "584142122268"
    assert df.loc[0, "user"] == "usuario@gmail.com"
    assert pd.isna(df.loc[1, "line"]) and df.loc[1, "detail"] == "ERROR EN ENVIO"
    # docs/protocol.md §2: Venezuelan local time (UTC-4:30 in 2014, UTC-4 since 2016:
    # zoneinfo knows).
    assert df.loc[0, "updated_at"] == pd.Timestamp("2014-01-01 16:40:30", tz="UTC")


def test_inbound_callback_by_get_and_post(
    rc: Receiver, http: requests.Session, logdir: Path
) -> None:
    assert get(http, rc, "msg=HolaMundo&phone=584121234567&linea=584141234567").status_code == 200
    r = http.post(
        rc.url,
        data={"msg": "Sí, confirmo", "phone": "+58 412-765-4321", "email": "a@b.com"},
        timeout=10,
    )
    assert r.status_code == 200
    df = read_callbacks(logdir, kind="inbound")
    assert list(df.columns) == ["text", "phone", "line", "email", "received_at"]
    assert df["text"].tolist() == ["HolaMundo", "Sí, confirmo"]
    assert df["phone"].tolist() == ["584121234567", "584127654321"]
    assert df.loc[0, "line"] == "584141234567" and pd.isna(df.loc[1, "line"])
    assert df.loc[1, "email"] == "a@b.com"
    assert read_callbacks(logdir, kind="status").empty


def test_status_callback_by_post(rc: Receiver, http: requests.Session, logdir: Path) -> None:
    r = http.post(rc.url, data=STATUS_QS.replace("%20", "+"), timeout=10,
                  headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 200
    assert read_callbacks(logdir)["message_id"].tolist() == [123]


@pytest.mark.parametrize(
    ("encoded", "text"),
    [
        ("Hola+Mundo", "Hola Mundo"),
        ("Hola%20Mundo", "Hola Mundo"),
        ("caf%E9", "café"),  # Latin-1
        ("caf%C3%A9", "café"),  # UTF-8
        ("a%2Bb%26c%3Dd", "a+b&c=d"),
        ("%BFQu%E9%3F", "¿Qué?"),  # Latin-1
        ("%C2%BFQu%C3%A9%3F", "¿Qué?"),  # UTF-8
        ("%E2%82%AC+%F0%9F%98%80", "€ 😀"),
    ],
)
def test_get_encodings_decode_right(
    rc: Receiver, http: requests.Session, logdir: Path, encoded: str, text: str
) -> None:
    assert get(http, rc, f"msg={encoded}&phone=584121234567").status_code == 200
    assert read_callbacks(logdir, kind="inbound")["text"].tolist() == [text]


@pytest.mark.parametrize(
    ("body", "content_type", "text"),
    [
        (b"msg=caf\xe9+y+t\xe9&phone=1234", "application/x-www-form-urlencoded; charset=ISO-8859-1",
         "café y té"),
        (b"msg=caf%C3%A9%20y%20t%C3%A9&phone=1234", "application/x-www-form-urlencoded",
         "café y té"),
        (b"msg=caf%E9&phone=1234", "application/x-www-form-urlencoded", "café"),
        (b"msg=ni\xc3\xb1o&phone=1234", "application/x-www-form-urlencoded; charset=utf-8", "niño"),
    ],
)  # fmt: skip
def test_post_encodings_decode_right(
    rc: Receiver, http: requests.Session, logdir: Path, body: bytes, content_type: str, text: str
) -> None:
    r = http.post(rc.url, data=body, headers={"Content-Type": content_type}, timeout=10)
    assert r.status_code == 200
    assert read_callbacks(logdir, kind="inbound")["text"].tolist() == [text]


BAD = [
    ("", 400, "not a callback"),
    ("linea=584141234567", 400, "not a callback"),
    ("id=1", 400, "without estatus"),
    ("estatus=1", 400, "without id"),
    ("id=&estatus=1", 400, "without id"),
    ("id=abc&estatus=1", 400, "id must be"),
    ("id=-5&estatus=1", 400, "id must be"),
    ("id=99999999999999999999999&estatus=1", 400, "id must be"),
    ("id=%D9%A1%D9%A2&estatus=1", 400, "id must be"),  # Arabic-Indic digits: not an id
    ("id=%EF%BC%91%EF%BC%92&estatus=1", 400, "id must be"),  # fullwidth digits
    ("id=1&estatus=1&fecha_actualizacion=%D9%A2%D9%A0%D9%A1%D9%A4-01-01", 400, "fecha_actu"),
    ("id=1&estatus=3", 400, "estatus must be"),
    ("id=1&estatus=exitoso", 400, "estatus must be"),
    ("id=1&estatus=1&fecha_actualizacion=ayer", 400, "fecha_actualizacion"),
    ("id=1&estatus=1&fecha_actualizacion=2014-13-01+10:00:00", 400, "fecha_actualizacion"),
    ("msg=hola", 400, "without phone"),
    ("phone=584121234567", 400, "without msg"),
    ("msg=hola&phone=", 400, "without phone"),
    ("id=1&estatus=1&msg=x&phone=1", 400, "ambiguous"),
    ("msg=a%00b&phone=1", 400, "NUL"),
    ("msg=" + "x" * 2001 + "&phone=1", 413, "longer than 2000"),
    ("msg=" + "x" * 9000 + "&phone=1", 414, "URL longer"),
]


@pytest.mark.parametrize(("query", "code", "reason"), BAD, ids=[b[2] for b in BAD])
def test_bad_requests_get_their_code_and_the_service_keeps_serving(
    rc: Receiver, http: requests.Session, logdir: Path, query: str, code: int, reason: str
) -> None:
    r = get(http, rc, query)
    assert r.status_code == code
    assert reason in r.text
    assert len(r.text) < 200
    assert get(http, rc, STATUS_QS).status_code == 200
    assert read_callbacks(logdir)["message_id"].tolist() == [123]
    assert read_callbacks(logdir, kind="inbound").empty


def test_chunked_post(rc: Receiver, http: requests.Session, logdir: Path) -> None:
    def body() -> Iterator[bytes]:
        yield b"msg=por+"
        yield b"partes&phone=584121234567"

    r = http.post(rc.url, data=body(), timeout=10,
                  headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 200
    assert read_callbacks(logdir, kind="inbound")["text"].tolist() == ["por partes"]


def test_other_refusals(rc: Receiver, http: requests.Session, logdir: Path) -> None:
    big = b"msg=" + b"x" * (70 * 1024) + b"&phone=1"
    assert http.post(rc.url, data=big, timeout=10).status_code == 413
    r = http.post(rc.url, files={"msg": ("m", b"hola")}, data={"phone": "1"}, timeout=10)
    assert r.status_code == 415
    assert http.put(rc.url, data="msg=a&phone=1", timeout=10).status_code == 405
    assert http.get(rc.base_url + "/otra?msg=a&phone=1", timeout=10).status_code == 404
    assert get(http, rc, "msg=ok&phone=1").status_code == 200
    assert read_callbacks(logdir, kind="inbound")["text"].tolist() == ["ok"]


def test_malformed_http_gets_a_400_and_a_closed_connection(
    rc: Receiver, http: requests.Session, logdir: Path
) -> None:
    for raw in (
        b"GET /recepcionsms?msg=a&phone=1 HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST /recepcionsms HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",  # a TLS hello
    ):
        reply = b""
        with socket.create_connection((rc.host, rc.port), timeout=10) as sock:
            sock.sendall(raw)
            while chunk := sock.recv(4096):  # until the server closes (or the timeout)
                reply += chunk
        status_line = reply.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.") and status_line.split(b" ")[1] == b"400", reply
        assert b"Connection: close" in reply
    assert pending_rows(logdir) == 0  # nothing stored from any of them
    assert get(http, rc, "msg=ok&phone=1").status_code == 200


def test_health(rc: Receiver, http: requests.Session) -> None:
    assert get(http, rc, STATUS_QS).status_code == 200
    r = http.get(rc.base_url + "/health", timeout=10)
    assert r.status_code == 200
    info = r.json()
    # "durable" is read back from the journal's connection (tests/test_durability.py)
    assert info["status"] == "ok" and info["durable"] is True
    assert info["stored"] == 1 and info["pending"] == 1


def test_repeated_callback_is_accepted_and_read_once(
    rc: Receiver, http: requests.Session, logdir: Path
) -> None:
    for _ in range(3):
        assert get(http, rc, STATUS_QS).status_code == 200
    # Same parameters in another order and encoding: the same callback.
    same = "detalle=%2B584142122268&usuario=usuario%40gmail.com&estatus=1&id=123" \
        "&fecha_actualizacion=2014-01-01+12:10:30"  # fmt: skip
    assert get(http, rc, same).status_code == 200
    assert get(http, rc, STATUS_QS.replace("estatus=1", "estatus=2")).status_code == 200
    first = read_callbacks(logdir)
    assert first["status"].tolist() == ["delivered", "failed"]
    compact(logdir)
    assert get(http, rc, STATUS_QS).status_code == 200  # a repeat after compaction
    after = read_callbacks(logdir)
    pd.testing.assert_frame_equal(first, after)


def test_storage_failure_answers_503_then_recovers(
    rc: Receiver, http: requests.Session, logdir: Path
) -> None:
    log = rc._log
    real = log._conn  # type: ignore[attr-defined]
    broken = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    broken.close()
    log._conn = broken  # type: ignore[attr-defined]
    try:
        r = get(http, rc, STATUS_QS)
        assert r.status_code == 503 and r.headers["Retry-After"] == "5"
        health = http.get(rc.base_url + "/health", timeout=10)
        assert health.status_code == 503 and health.json()["status"] == "failing"
    finally:
        log._conn = real  # type: ignore[attr-defined]
    assert get(http, rc, STATUS_QS).status_code == 200
    assert http.get(rc.base_url + "/health", timeout=10).json()["status"] == "ok"
    assert len(read_callbacks(logdir)) == 1


def test_a_bug_answers_503_not_500(
    rc: Receiver, http: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(rc.app.log, "write", boom)
    assert get(http, rc, STATUS_QS).status_code == 503
    monkeypatch.undo()
    assert get(http, rc, STATUS_QS).status_code == 200


def test_token(logdir: Path, http: requests.Session) -> None:
    secret = "s3cr3t-t0ken"
    with receiver(logdir, token=secret, compact_interval=3600) as rc:
        assert rc.url.endswith("?token=" + secret)
        assert secret not in repr(rc)
        plain = rc.base_url + "/recepcionsms"
        assert http.get(f"{plain}?{STATUS_QS}", timeout=10).status_code == 403
        assert http.get(f"{plain}?{STATUS_QS}&token=wrong", timeout=10).status_code == 403
        assert http.get(f"{plain}?{STATUS_QS}&token=", timeout=10).status_code == 403
        assert http.get(f"{rc.url}&{STATUS_QS}", timeout=10).status_code == 200
        r = http.get(f"{plain}?msg=a&phone=1", headers={"X-Massiva-Token": secret}, timeout=10)
        assert r.status_code == 200
        r = http.post(plain, data={"msg": "b", "phone": "1", "token": secret}, timeout=10)
        assert r.status_code == 200
        assert http.post(plain, data={"msg": "c", "phone": "1"}, timeout=10).status_code == 403
        assert pending_rows(logdir) == 3
        journal = journal_path(logdir)
        for path in journal.parent.iterdir():  # db, -wal, -shm: before compaction
            assert secret.encode() not in path.read_bytes()
    # Closing compacted everything into parquet.
    assert read_callbacks(logdir)["message_id"].tolist() == [123]
    assert read_callbacks(logdir, kind="inbound")["text"].tolist() == ["a", "b"]
    for path in logdir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes()


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_clean_shutdown_loses_nothing(logdir: Path, hold_commits: Hold) -> None:
    rc = receiver(logdir, compact_interval=0.05)
    acked: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        with requests.Session() as s:
            for i in range(100_000):
                if stop.is_set():
                    return
                mid = n * 1_000_000 + i
                try:
                    r = s.get(rc.url, params={"id": mid, "estatus": 1}, timeout=30)
                except requests.RequestException:
                    continue
                if r.status_code == 200:
                    with lock:
                        acked.append(mid)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 100)  # compacting and answering, under load
        # A commit held open: its requests are in flight when the shutdown begins.
        held = hold_commits(rc._log)
        assert held.entered.wait(10)
        closer = threading.Thread(target=rc.close)
        closer.start()
        wait_until(lambda: rc.app.closing)  # draining: no new callback is taken
        held.release.set()
        closer.join(60)
        assert not closer.is_alive()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        rc.close()
    assert held.ids and held.ids <= {str(m) for m in acked}  # answered 200 while closing
    ids = read_callbacks(logdir)["message_id"]
    assert not ids.duplicated().any()
    assert set(acked) <= set(ids)
    assert pending_rows(logdir) == 0  # the final compaction moved everything


def test_port_in_use_is_a_clear_error(rc: Receiver, tmp_path: Path) -> None:
    with pytest.raises(OSError):
        Receiver(tmp_path / "other", port=rc.port)


def test_cli_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "massiva_frames.faces.cli", "receive", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "--dir" in out and "--token" in out and "--port" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the receiver exited"
        try:
            if requests.get(base + "/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise AssertionError("the receiver did not become healthy")


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_callback(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "massiva_frames.faces.cli", "receive", "--dir", str(logdir),
        "--port", str(port), "--compact-interval", "0.1",
    ]  # fmt: skip
    acked: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        with requests.Session() as s:
            s.trust_env = False
            i = 0
            while not stop.is_set() and i < 1_000_000:
                mid = n * 10_000_000 + i
                params = {"id": mid, "estatus": 1 + i % 2, "detalle": "584142122268"}
                try:
                    r = s.get(base + "/recepcionsms", params=params, timeout=5)
                except requests.RequestException:
                    time.sleep(0.01)
                    continue  # resend the same callback, as the provider would
                if r.status_code == 200:
                    with lock:
                        acked.add(mid)
                    i += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(4)]
    log = open(tmp_path / "receiver.log", "wb")  # noqa: SIM115
    procs: list[subprocess.Popen[bytes]] = []
    try:
        started = False
        # Killed after a number of acknowledgements, not after a time: every life of the
        # receiver answers some callbacks, however fast the machine and its disk.
        for target in (20, 60, 5, 40, 100):
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            procs.append(proc)
            _wait_healthy(base, proc)
            if not started:
                for t in threads:
                    t.start()
                started = True
            goal = len(acked) + target
            wait_until(lambda g=goal, p=proc: len(acked) >= g or p.poll() is not None, 60)
            assert proc.poll() is None, "the receiver exited"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        _wait_healthy(base, proc)
        goal = len(acked) + 20
        wait_until(lambda: len(acked) >= goal, timeout=60)
        stop.set()
        for t in threads:
            t.join(30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        stop.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        log.close()
    assert len(acked) >= 245
    df = read_callbacks(logdir)
    ids = df["message_id"]
    assert not ids.duplicated().any(), "an event was read twice"
    missing = acked - set(ids.tolist())
    assert not missing, f"{len(missing)} acknowledged callbacks were lost"
    assert df["status"].notna().all()
    assert pending_rows(logdir) == 0
    assert os.listdir(logdir / "status")
