"""A journal that cannot be trusted or written refuses, says why, and never sends twice.

Real files, a real sandbox: damaged journals (bytes changed inside the key index, a
header, a lost table, unreadable records), a full disk (a tmpfs in a private mount
namespace, or the file size limit), read-only files, folders and file systems, a
journal held by another process or reached through a symbolic link. The chaos
scenarios (``benchmarks/scenarios_journal.py``) run at bounded sizes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

import massiva_frames
from massiva_frames.errors import (
    InputError,
    JournalBusyError,
    JournalCorruptError,
    JournalError,
    JournalFullError,
    JournalReadOnlyError,
    JournalVersionError,
    MassivaError,
    NotAJournalError,
)
from massiva_frames.sandbox import Sandbox
from massiva_frames.sending.campaign import dispatch, results_from_journal, send
from massiva_frames.sending.journal.failures import journal_error
from massiva_frames.sending.journal.sqlite import Journal
from massiva_frames.wire.client import MassivaClient

ROOT = Path(__file__).resolve().parent.parent


def _load_scenarios() -> ModuleType:
    # the script's folder is on sys.path when it runs: it imports the chaos suite's figures
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    path = ROOT / "benchmarks" / "scenarios_journal.py"
    spec = importlib.util.spec_from_file_location("massiva_scenarios_journal", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


scenarios = _load_scenarios()
DF = pd.DataFrame(
    {"phone": [f"0414{1_000_000 + i}" for i in range(12)], "text": [f"Hola {i}" for i in range(12)]}
)


def _send(sb: Sandbox, journal: Path, **options: Any) -> pd.DataFrame:
    with MassivaClient(sb.usuario, sb.clave, sb.base_url) as client:
        return send(DF, client=client, text="text", journal=journal, progress=False, **options)


def _sends(sb: Sandbox) -> int:
    return int(sb.requests()["path"].str.contains("SendSms").sum())


def _runs(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("SELECT count(*) FROM runs").fetchone()[0])
    finally:
        con.close()


def _assert_says_what_to_do(exc: BaseException) -> None:
    text = str(exc)
    assert "damaged" in text and "Restore a copy" in text and "provider's records" in text
    assert "not a massiva-frames journal" not in text


# --- the error tree ------------------------------------------------------------------------


def test_journal_errors_are_one_tree_and_exported() -> None:
    for cls in (JournalBusyError, NotAJournalError, JournalVersionError):
        assert issubclass(cls, JournalError) and issubclass(cls, InputError)  # as before
    for cls in (JournalFullError, JournalReadOnlyError, JournalCorruptError):
        assert issubclass(cls, JournalError) and not issubclass(cls, InputError)
    assert issubclass(JournalError, MassivaError)
    for name in ("JournalError", "JournalFullError", "JournalReadOnlyError",
                 "JournalCorruptError", "NotAJournalError", "JournalVersionError"):  # fmt: skip
        assert getattr(massiva_frames, name).__name__ == name
        assert name in massiva_frames.__all__
        assert name in (massiva_frames.errors.__doc__ or "")


# --- damaged -------------------------------------------------------------------------------


def test_a_changed_key_in_the_index_refuses_and_sends_nothing(
    sandbox_server: Sandbox, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    assert (_send(sandbox_server, journal)["state"] == "accepted").all()
    _, keys = scenarios.key_index_spans(journal)
    data = bytearray(journal.read_bytes())
    at = keys[64 * 5 + 10]  # one hex digit of the sixth key in the index
    data[at] = ord("0") if data[at] != ord("0") else ord("1")
    journal.write_bytes(bytes(data))
    before, runs = _sends(sandbox_server), _runs(journal)
    with pytest.raises(JournalCorruptError, match="would have been sent again") as caught:
        _send(sandbox_server, journal)
    _assert_says_what_to_do(caught.value)
    assert _sends(sandbox_server) == before
    assert _runs(journal) == runs  # nothing was committed: the run rolled back whole


def test_additions_checked_against_fingerprints_read_the_older_messages_once() -> None:
    """A writer adding messages again and again (a streamed send) reads the older ones
    from the table once; a later addition that repeats an older key is still caught, by
    its fingerprint and then the table, when the key index would have let it in."""
    from massiva_frames.sending.journal.checks import KeyPrints, check_added

    conn = sqlite3.connect(":memory:", isolation_level=None)
    # no unique index: a damaged index that no longer finds a key lets the row in
    conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, row_key TEXT, part INTEGER)")
    scans: list[str] = []
    conn.set_trace_callback(lambda sql: scans.append(sql) if "id < " in sql else None)
    prints, next_id = KeyPrints(), 1

    def add(keys: list[str]) -> None:
        nonlocal next_id
        first = next_id
        rows = [(first + i, k, 1) for i, k in enumerate(keys)]
        conn.executemany("INSERT INTO messages VALUES (?, ?, ?)", rows)
        next_id += len(keys)
        check_added(conn, "j.db", first, [(k, 1) for k in keys], prints)

    for chunk in range(5):
        add([f"k{chunk}-{i}" for i in range(100)])
    full_scans = [sql for sql in scans if "LIMIT" not in sql]
    assert len(full_scans) == 1  # the first addition; the others use the fingerprints
    with pytest.raises(JournalCorruptError, match="would have been sent again"):
        add(["new-1", "k2-37", "new-2"])  # k2-37 is already in the table
    plain = sqlite3.connect(":memory:", isolation_level=None)  # without fingerprints
    plain.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, row_key TEXT, part INTEGER)")
    plain.executemany("INSERT INTO messages VALUES (?, ?, 1)", [(1, "a"), (2, "b"), (3, "a")])
    with pytest.raises(JournalCorruptError, match="would have been sent again"):
        check_added(plain, "j.db", 3, [("a", 1)])


def test_unreadable_requests_in_flight_refuse_a_dispatch(
    sandbox_server: Sandbox, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    _send(sandbox_server, journal, send_at="2999-01-01")  # all scheduled
    with Journal(journal) as j:
        j.mark_inflight(j.next_batch_number(), [1, 2], method="POST")
        j.conn.execute("UPDATE batches SET ids = '[1, 2' WHERE state = 'inflight'")  # damage
    with MassivaClient(sandbox_server.usuario, sandbox_server.clave, sandbox_server.base_url) as c:
        with pytest.raises(JournalCorruptError, match="requests cannot be read") as caught:
            dispatch(journal, client=c, now="3000-01-01")
    _assert_says_what_to_do(caught.value)
    assert _sends(sandbox_server) == 0


def test_a_lost_table_is_damage_and_is_not_created_again(
    sandbox_server: Sandbox, tmp_path: Path
) -> None:
    journal = tmp_path / "j.db"
    _send(sandbox_server, journal)
    con = sqlite3.connect(journal)
    con.execute("ALTER TABLE messages RENAME TO messages_lost")
    con.close()
    with pytest.raises(JournalCorruptError, match=r"table\(s\) messages are missing"):
        _send(sandbox_server, journal)
    with pytest.raises(JournalCorruptError):
        results_from_journal(journal)
    con = sqlite3.connect(journal)
    tables = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    assert "messages" not in tables  # an empty one would have sent every row again
    assert _sends(sandbox_server) == 1


def test_unreadable_records_and_a_damaged_header(sandbox_server: Sandbox, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    _send(sandbox_server, journal)
    con = sqlite3.connect(journal)
    con.execute("UPDATE meta SET value = '{\"met' WHERE key = 'settings'")
    con.commit()
    con.close()
    with MassivaClient(sandbox_server.usuario, sandbox_server.clave, sandbox_server.base_url) as c:
        with pytest.raises(JournalCorruptError, match="record 'settings' cannot be read"):
            dispatch(journal, client=c)
    data = bytearray(journal.read_bytes())
    data[:16] = bytes(16)  # "SQLite format 3\0" gone: SQLite says "not a database"
    journal.write_bytes(bytes(data))
    for attempt in (lambda: _send(sandbox_server, journal), lambda: results_from_journal(journal)):
        with pytest.raises(JournalCorruptError, match="header is unreadable") as caught:
            attempt()
        assert not isinstance(caught.value, NotAJournalError)
    assert _sends(sandbox_server) == 1


def test_labels_that_no_longer_parse_are_damage(sandbox_server: Sandbox, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    labelled = DF.set_axis([f"cliente-{i}" for i in range(len(DF))])
    with MassivaClient(sandbox_server.usuario, sandbox_server.clave, sandbox_server.base_url) as c:
        send(labelled, client=c, text="text", journal=journal, progress=False)
    assert list(results_from_journal(journal).index) == list(labelled.index)
    con = sqlite3.connect(journal)
    con.execute("UPDATE rows SET label = '\"clien' || char(1) || '\"' WHERE position = 3")
    con.commit()
    con.close()
    with pytest.raises(JournalCorruptError, match="its rows cannot be read back"):
        results_from_journal(journal)


# --- not a journal, newer version ----------------------------------------------------------


def test_not_a_journal_is_refused_and_left_untouched(
    sandbox_server: Sandbox, tmp_path: Path
) -> None:
    foreign = tmp_path / "other.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    garbage = tmp_path / "notes.txt"
    garbage.write_bytes(b"not sqlite at all\n" * 200)
    for path, why in ((foreign, "other tables: t"), (garbage, "not an SQLite database")):
        with pytest.raises(NotAJournalError, match=f"not a massiva-frames journal: .*{why}"):
            _send(sandbox_server, path)
    con = sqlite3.connect(foreign)
    assert con.execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]
    con.close()
    assert _sends(sandbox_server) == 0


def test_a_newer_journal_is_refused(sandbox_server: Sandbox, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    _send(sandbox_server, journal)
    with Journal(journal) as j:
        j.set_meta({"schema_version": 99})
    with pytest.raises(JournalVersionError, match="newer massiva-frames .* upgrade"):
        _send(sandbox_server, journal)
    assert _sends(sandbox_server) == 1


# --- locked, and the lock on the real path -------------------------------------------------


def test_a_symlink_to_a_journal_in_use_is_refused(sandbox_server: Sandbox, tmp_path: Path) -> None:
    journal = tmp_path / "real" / "j.db"
    journal.parent.mkdir()
    link = tmp_path / "link.db"
    link.symlink_to(journal)
    with Journal(journal) as holder:
        holder.lock()
        with Journal(link) as other, pytest.raises(JournalBusyError, match="in use"):
            other.lock()
        with pytest.raises(JournalBusyError, match="in use"):
            _send(sandbox_server, link)
    assert _sends(sandbox_server) == 0
    assert (_send(sandbox_server, link)["state"] == "accepted").all()  # free once closed
    assert not (tmp_path / "link.db.lock").exists()


def test_sqlite_busy_is_a_busy_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    Journal(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError) as raised:
            other.execute("BEGIN IMMEDIATE")
        error = journal_error(raised.value, str(path))
        assert isinstance(error, JournalBusyError) and "in use" in str(error)
    finally:
        other.close()
        holder.close()


# --- read-only -----------------------------------------------------------------------------

_CHILD = """
import json, os, sys
import pandas as pd
from massiva_frames.errors import MassivaError
from massiva_frames.sending.campaign import results_from_journal, send
from massiva_frames.wire.client import MassivaClient

def attempt(fn):
    try:
        fn()
        return {"raised": None}
    except MassivaError as exc:
        return {"raised": type(exc).__name__, "message": str(exc)}

df = pd.DataFrame({"phone": ["04141000001", "04141000002"], "text": ["a", "b"]})
def go(path):
    with MassivaClient() as client:
        send(df, client=client, text="text", journal=path, progress=False)
"""


def _as_nobody() -> list[str]:
    """Run as another user when this is root (root writes read-only files anyway)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop root to test permissions")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _run_child(code: str, env: dict[str, str], prefix: list[str]) -> Any:
    done = subprocess.run(
        [*prefix, sys.executable, "-c", _CHILD + code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=env["DIR"],
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another user can write (children drop root to see permissions)."""
    folder = Path(tempfile.mkdtemp(prefix="massiva-ro-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(folder)], check=False)
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        folder.rmdir()


def _env(sb: Sandbox) -> dict[str, str]:
    return {
        "MASSIVA_USUARIO": sb.usuario,
        "MASSIVA_CLAVE": sb.clave,
        "MASSIVA_BASE_URL": sb.base_url,
    }


def test_read_only_file_and_folder(sandbox_server: Sandbox, shared_dir: Path) -> None:
    code = """
folder = os.path.join(os.environ["DIR"], "f"); os.mkdir(folder)
path = os.path.join(folder, "j.db")
go(path)
out = {}
os.chmod(path, 0o444)
out["file"] = attempt(lambda: go(path))
out["file_read"] = attempt(lambda: results_from_journal(path))
os.chmod(path, 0o644); os.chmod(folder, 0o555)
out["folder"] = attempt(lambda: go(path))
out["folder_new"] = attempt(lambda: go(os.path.join(folder, "new.db")))
out["folder_read"] = attempt(lambda: results_from_journal(path))
os.chmod(folder, 0o755)
print(json.dumps(out))
"""
    out = _run_child(code, {**_env(sandbox_server), "DIR": str(shared_dir)}, _as_nobody())
    for case, why in (("file", "the file is read-only"), ("folder", "its folder is read-only"),
                      ("folder_new", "its folder is read-only")):  # fmt: skip
        assert out[case]["raised"] == "JournalReadOnlyError", out[case]
        assert why in out[case]["message"] and "cannot be written" in out[case]["message"]
    assert out["file_read"]["raised"] is None and out["folder_read"]["raised"] is None
    assert _sends(sandbox_server) == 1  # the first send only


def _tmpfs_prefix(folder: Path, size: str) -> list[str]:
    if scenarios.mount_mode() != "tmpfs":
        pytest.skip("no tmpfs in a private mount namespace here (needs root or user namespaces)")
    mount = f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"'
    return [*scenarios._unshare(), "sh", "-c", mount, str(folder)]


def test_read_only_file_system(sandbox_server: Sandbox, tmp_path: Path) -> None:
    code = """
path = os.path.join(os.environ["DIR"], "j.db")
go(path)
import subprocess
subprocess.run(["mount", "-o", "remount,ro", os.environ["DIR"]], check=True)
print(json.dumps({"write": attempt(lambda: go(path)),
                  "read": attempt(lambda: results_from_journal(path))}))
"""
    prefix = _tmpfs_prefix(tmp_path, "4m")
    out = _run_child(code, {**_env(sandbox_server), "DIR": str(tmp_path)}, prefix)
    assert out["write"]["raised"] == "JournalReadOnlyError", out
    assert "mounted read-only" in out["write"]["message"]
    assert out["read"]["raised"] is None, out
    assert _sends(sandbox_server) == 1


# --- full disk -----------------------------------------------------------------------------


def test_a_journal_on_a_full_disk_is_a_full_journal(
    sandbox_server: Sandbox, tmp_path: Path
) -> None:
    code = """
path = os.path.join(os.environ["DIR"], "j.db")
go(path)
with open(os.path.join(os.environ["DIR"], "ballast"), "wb", buffering=0) as f:
    try:
        while True:
            f.write(b"x" * 65536)
    except OSError:
        pass
print(json.dumps({"write": attempt(lambda: go(path))}))
"""
    prefix = _tmpfs_prefix(tmp_path, "2m")
    out = _run_child(code, {**_env(sandbox_server), "DIR": str(tmp_path)}, prefix)
    assert out["write"]["raised"] == "JournalFullError", out
    assert "is full" in out["write"]["message"]
    assert "not a massiva-frames journal" not in out["write"]["message"]
    assert _sends(sandbox_server) == 1


def test_sqlite_full_leaves_a_with_block_as_a_full_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with pytest.raises(JournalFullError, match="is full") as caught, Journal(path) as journal:
        pages = journal.conn.execute("PRAGMA page_count").fetchone()[0]
        journal.conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # the disk, as SQLite sees it
        journal.add_messages((f"k{i}", 1, "584141234567", "x" * 100, "c", None) for i in range(999))
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    with Journal(path) as journal:  # the journal is intact
        assert journal.counts() == {}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["tmpfs", "fsize"])
def test_full_disk_scenario(tmp_path: Path, mode: str) -> None:
    if mode == "tmpfs" and scenarios.mount_mode() != "tmpfs":
        pytest.skip("no tmpfs in a private mount namespace here (needs root or user namespaces)")
    fig = scenarios.full_disk(tmp_path, rows=1_000, disk_bytes=1_536 * 1024, mode=mode)
    assert fig.failing() == [], "\n".join(fig.lines())
    assert fig.evidence["full_errors"] == 1 and fig.evidence["filled_mid_run"] == 1, fig.lines()
    assert fig.sent_once and fig.sent_once + fig.unknown + 40 == 1_000  # 40 invalid phones


# --- the fuzz ------------------------------------------------------------------------------


@pytest.mark.slow
def test_journal_fuzz_never_sends_twice(tmp_path: Path) -> None:
    fig = scenarios.journal_fuzz(200, tmp_path, rows=300, seed=12)
    assert fig.failing() == [], "\n".join(fig.lines())
    refused = sum(v for k, v in fig.evidence.items() if k.startswith("refused"))
    passed = sum(v for k, v in fig.evidence.items() if k.startswith("nothing_to_send"))
    assert refused + passed == 200 and refused >= 50 and passed >= 5, fig.evidence
    assert fig.evidence["index_pages"] >= 3  # a key index with interior pages
