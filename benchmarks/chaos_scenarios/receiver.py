"""Scenario ``receiver``: the callback receiver (``massiva-frames receive``) SIGKILLed and
restarted while the sandbox and a load generator post callbacks at it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from .figures import Figures, Sizes
from .harness import (
    USUARIO,
    free_port,
    raw_exchange,
)

__all__ = ["CallbackLoad", "ReceiverProcess", "count_read_back", "scenario_killed_receiver"]


class ReceiverProcess:
    """``massiva-frames receive`` as a subprocess that can be SIGKILLed and restarted."""

    def __init__(
        self,
        logdir: Path,
        port: int,
        log: Path,
        *,
        extra: Sequence[str] = ("--compact-interval", "0.3"),
    ) -> None:
        self.cmd = [
            sys.executable, "-m", "massiva_frames.faces.cli", "receive", "--dir", str(logdir),
            "--port", str(port), *extra,
        ]  # fmt: skip
        self.port = port
        self.log = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the receiver exited with {self.proc.returncode}")
            with contextlib.suppress(OSError, TimeoutError):
                status, _ = raw_exchange(self.port, b"GET /health HTTP/1.0\r\n\r\n", 1.0)
                if status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("the receiver did not become healthy")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def close(self) -> int | None:
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        return code


def _inbound_identity(*values: object) -> str:
    """An inbound callback's identity from (text, phone, line, email); missing is None."""
    import pandas as pd

    return "inbound:" + json.dumps([None if pd.isna(v) else str(v) for v in values])  # type: ignore[arg-type]


class CallbackLoad:
    """Threads posting distinct callbacks (status and inbound), each resent until a 200,
    as the provider would; one in ``repeat_every`` is sent again after its 200."""

    def __init__(self, port: int, total: int, *, threads: int = 4, repeat_every: int = 10) -> None:
        self.port = port
        self.total = total
        self.repeat_every = repeat_every
        self.acked: set[str] = set()
        self.attempts = 0
        self.repeats = 0
        self.gave_up = 0
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._finish = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"chaos-load-{i}", daemon=True)
            for i in range(threads)
        ]

    @staticmethod
    def identity(n: int) -> tuple[str, dict[str, str]]:
        """The n-th callback: its identity and its parameters (GET or POST)."""
        if n % 3 == 2:
            params = {"msg": f"chaos inbound {n} ñ", "phone": "584141234567",
                      "linea": "584141000001", "email": "load@massiva.test"}  # fmt: skip
            return _inbound_identity(*params.values()), params
        mid = 900_000_000 + n
        return f"status:{mid}", {
            "id": str(mid),
            "estatus": "1" if n % 2 else "2",
            "fecha_actualizacion": "2024-06-10 08:00:00",
            "usuario": "load@massiva.test",
            "detalle": "+584142122268" if n % 2 else "ERROR EN ENVIO",
        }

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _claim(self) -> int | None:
        with self._lock:
            if self._next >= self.total or self._stop.is_set() or self._finish.is_set():
                return None
            self._next += 1
            return self._next - 1

    def _post(self, conn: http.client.HTTPConnection, n: int, params: dict[str, str]) -> bool:
        if n % 2:
            conn.request("GET", "/recepcionsms?" + urlencode(params))
        else:
            body = urlencode(params)
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            conn.request("POST", "/recepcionsms", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200

    def _deliver(self, n: int, params: dict[str, str], deadline: float) -> bool:
        conn: http.client.HTTPConnection | None = None
        try:
            while time.monotonic() < deadline and not self._stop.is_set():
                with self._lock:
                    self.attempts += 1
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    if self._post(conn, n, params):
                        return True
                    time.sleep(0.05)  # 503 (shutting down): retry later
                except (OSError, http.client.HTTPException):
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(0.02)
            return False
        finally:
            if conn is not None:
                conn.close()

    def _run(self) -> None:
        while (n := self._claim()) is not None:
            ident, params = self.identity(n)
            if not self._deliver(n, params, time.monotonic() + 120):
                with self._lock:
                    self.gave_up += 1
                continue
            with self._lock:
                self.acked.add(ident)
            if n % self.repeat_every == 0 and self._deliver(n, params, time.monotonic() + 120):
                with self._lock:
                    self.repeats += 1

    @property
    def claimed(self) -> int:
        """How many distinct callbacks were started."""
        return self._next

    def finish(self) -> None:
        """Start no new callback; those under way go on until acknowledged."""
        self._finish.set()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()


def scenario_killed_receiver(sizes: Sizes, workdir: Path, *, seed: int = 0) -> Figures:
    """The receiver SIGKILLed and restarted ``sizes.receiver_kills`` times under load.

    Load: a generator posting distinct callbacks (resent until acknowledged, some sent
    again after their 200), and the sandbox delivering the status callbacks of real
    sends plus inbound messages. Figures: callbacks tried, acknowledged and stored once
    (sent once), acknowledged but not read back (lost), read back more than once
    (duplicated).
    """
    from massiva_frames.sandbox import sandbox
    from massiva_frames.wire.client import MassivaClient

    fig = Figures("killed receiver", lost=0, duplicated=0)
    start = time.perf_counter()
    rng = random.Random(seed)
    logdir = workdir / "receiver-logs"
    port = free_port()
    url = f"http://127.0.0.1:{port}/recepcionsms"
    rp = ReceiverProcess(logdir, port, workdir / "receiver.log")
    load = CallbackLoad(port, 10**7)  # posts until the kills are over
    sb_ctx = sandbox(
        usuario=USUARIO, clave="chaos", credits=10**6, status_url=url, inbound_url=url,
        callback_delay=0.05, fail_ratio=0.3, reply_ratio=0.2, seed=seed,
        callback_attempts=60, callback_workers=4,
    )  # fmt: skip
    kills = 0
    with sb_ctx as sb, MassivaClient(USUARIO, "chaos", sb.base_url, timeout=10) as client:
        try:
            rp.start()
            load.start()
            phones = [f"58414{n:07d}" for n in range(50)]
            batches = 0
            while kills < sizes.receiver_kills:
                # Real sends (their status callbacks) and inbound messages between kills.
                client.send_batch(phones, f"chaos receiver batch {batches}")
                sb.send_inbound("584161234567", f"chaos sandbox inbound {batches}")
                batches += 1
                time.sleep(rng.uniform(0.2, 1.0))
                rp.kill()
                kills += 1
                time.sleep(rng.uniform(0.0, 0.3))  # down for a moment: senders retry
                rp.start()
            load.finish()
            load.join(timeout=300)
            sb.wait_callbacks(timeout=120)
        finally:
            load.join(timeout=0)
            code = rp.close()
        callbacks = sb.callbacks()
    if code != 0:
        fig.problem(f"the receiver's clean stop exited with {code}")
    sb_ids = count_read_back(fig, logdir, load.acked, callbacks)
    acked = load.acked | sb_ids
    fig.tried = load.claimed + len(callbacks)
    given_up = int(callbacks["gave_up"].sum()) + load.gave_up
    fig.evidence.update(
        kills=kills, acknowledged=len(acked), sandbox_acknowledged=len(sb_ids),
        sent_again=load.repeats,
    )  # fmt: skip
    fig.notes.append(
        f"{kills} SIGKILLs, {rp.starts} starts; {len(acked)} acknowledged "
        f"({len(load.acked)} load, {len(sb_ids)} sandbox), {load.repeats} sent again after "
        f"their 200, {load.attempts + int(callbacks['attempts'].sum())} HTTP attempts; "
        f"never acknowledged (so free to be missing): {fig.tried - len(acked)}, of which "
        f"{given_up} given up by their sender"
    )
    fig.seconds = time.perf_counter() - start
    return fig


def count_read_back(fig: Figures, logdir: Path, load_acked: set[str], callbacks: Any) -> set[str]:
    """Read the callbacks back and count, over everything acknowledged (by the load's
    200s and the sandbox's delivered ``callbacks``), ``lost`` (not read back),
    ``duplicated`` (read back more than once) and ``sent_once``; returns the sandbox's
    acknowledged identities."""
    import pandas as pd

    from massiva_frames.receiving import read_callbacks

    status = read_callbacks(logdir, "status")
    inbound = read_callbacks(logdir, "inbound")
    # Identities: a status callback by its message id; an inbound one by all its fields
    # (two replies may share a text; the receiver itself drops exact repeats only).
    read_ids = [f"status:{m}" for m in status["message_id"].astype("Int64").astype(str)]
    read_ids += [
        _inbound_identity(*values)
        for values in inbound[["text", "phone", "line", "email"]]
        .astype(object)
        .itertuples(index=False)
    ]
    counts = pd.Series(read_ids, dtype="string").value_counts()
    # Acknowledged by the sandbox: a 200 on some attempt.
    sb_acked = callbacks[callbacks["delivered"]]
    sb_ids = {
        f"status:{p['id']}"
        if kind == "status"
        else _inbound_identity(p["msg"], p["phone"], p.get("linea"), p.get("email"))
        for kind, p in zip(sb_acked["kind"], sb_acked["params"], strict=True)
    }
    acked = load_acked | sb_ids
    missing = [a for a in acked if a not in counts.index]
    fig.lost = len(missing)
    fig.duplicated = int((counts > 1).sum())
    fig.sent_once = int(sum(1 for a in acked if counts.get(a, 0) == 1))
    for m in missing[:5]:
        fig.problem(f"acknowledged, not stored: {m}")
    return sb_ids
