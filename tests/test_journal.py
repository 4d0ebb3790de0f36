"""The send journal (real SQLite files) and the results frame's shape."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from massiva_frames.errors import InputError, JournalBusyError
from massiva_frames.sending.journal.sqlite import Journal, results_from_journal
from massiva_frames.sending.journal.writes import Answered, Fate
from massiva_frames.sending.results import (
    RESULT_COLUMNS,
    RESULT_DTYPES,
    STATES,
    decode_label,
    empty_results,
    encode_label,
    index_meta,
    rebuild_index,
)
from massiva_frames.sending.rows import _pair_keys, answered_outcomes, row_key, user_row_key

PHONES = [f"58414{n:07d}" for n in range(1000000, 1000010)]


def _fill(journal: Journal, n: int = 4, *, index: pd.Index | None = None) -> list[int]:
    """Journal ``n`` ready rows (one message each); return their message ids."""
    index = pd.RangeIndex(n) if index is None else index
    keys = [row_key("c", PHONES[i], f"hola {i}") for i in range(n)]
    labels = [encode_label(x) for x in index]
    rows = [
        (i, labels[i], keys[i], "ready", None, PHONES[i], f"hola {i}", "GSM-7", 1, 1)
        for i in range(n)
    ]
    journal.replace_rows(rows, {"index": index_meta(index)})
    journal.add_messages((keys[i], 1, PHONES[i], f"hola {i}", "c", None) for i in range(n))
    ids = journal.pending()["id"].tolist()
    assert journal.pending()["row_key"].tolist() == keys
    return [int(i) for i in ids]


def test_row_key_is_stable_and_distinguishes_its_parts() -> None:
    material = "2:v1,5:promo,12:584141234567,4:Hola,1:0,"
    assert row_key("promo", "584141234567", "Hola") == hashlib.sha256(material.encode()).hexdigest()
    keys = {
        row_key("promo", "584141234567", "Hola"),
        row_key("other", "584141234567", "Hola"),
        row_key("promo", "584241234567", "Hola"),
        row_key("promo", "584141234567", "Hola!"),
        row_key("promo", "584141234567", "Hola", 1),
        user_row_key("promo", "584141234567"),
    }
    assert len(keys) == 6
    # the separator cannot be forged by moving characters between fields
    assert row_key("a", "b\x1fc", "d") != row_key("a\x1fb", "c", "d")
    assert row_key("a", 'b", "c', "d") != row_key('a", "b', "c", "d")


@pytest.mark.parametrize(
    "pairs",
    [
        [("584141234567", "Hola"), ("584241234567", "Hola"), ("584141234567", "Chao")],
        [("584141234567", "Hola"), ("584141234567", "Hola"), ("584241234567", "x")]
        + [("584141234567", "Hola")],
    ],
    ids=["distinct", "repeated"],
)
def test_pair_keys_are_row_keys_with_occurrences(pairs: list[tuple[str, str]]) -> None:
    # The vectorised keys of a send are row_key(campaign, phone, text, n-th copy).
    phone = np.array([p for p, _ in pairs], dtype=object)
    text = np.array([t for _, t in pairs], dtype=object)
    seen: dict[tuple[str, str], int] = {}
    expected = []
    for pair in pairs:
        expected.append(row_key("promo", *pair, seen.get(pair, 0)))
        seen[pair] = seen.get(pair, 0) + 1
    assert _pair_keys("promo", phone, text) == expected
    assert len(set(expected)) == len(expected)


def test_file_journal_uses_wal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        assert journal.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert journal.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert journal.conn.execute("PRAGMA page_size").fetchone()[0] == 32768
        tables = {
            r[0] for r in journal.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert {"meta", "rows", "messages", "batches", "runs"} <= tables


def test_messages_are_added_once(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as journal:
        ids = _fill(journal)
        keys = journal.pending()["row_key"].tolist()
        again = journal.add_messages((k, 1, PHONES[0], "x", "c", None) for k in keys)
        assert again == 0
        assert journal.counts() == {"pending": 4}
        assert journal.pending()["id"].tolist() == ids


def test_inflight_then_outcome_then_results(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        ids = _fill(journal)
        number = journal.next_batch_number()
        assert number == 1
        journal.mark_inflight(number, ids[:3], method="POST", requested_at=1_700_000_000_000_000)
        assert journal.counts() == {"inflight": 3, "pending": 1}
        journal.record_outcome(
            number,
            [
                (
                    ids[0],
                    "accepted",
                    None,
                    123451,
                    "sid-a",
                    "Envio Exitoso",
                    1_700_000_000_500_000,
                ),
                (ids[1], "rejected", "provider_rejected", 123452, None, "Envio Exitoso", 1),
                (ids[2], "pending", "not_sent_connect_failed", None, None, "x", None),
            ],
            batch_state="done",
            request_status=1,
            detail=None,
        )
        assert journal.next_batch_number() == 2
    results = results_from_journal(path)
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert results.dtypes.to_dict() == RESULT_DTYPES
    assert list(results["state"]) == ["accepted", "rejected", "scheduled", "scheduled"]
    assert list(results["reason"].fillna("-")) == [
        "-",
        "provider_rejected",
        "not_sent_connect_failed",
        "-",
    ]
    assert results.loc[0, "message_id"] == 123451
    assert results.loc[0, "sent_at"] == pd.Timestamp("2023-11-14 22:13:20.5", tz="UTC")
    assert results.loc[0, "batch"] == 1 and results.loc[0, "request_status"] == 1
    # a message sent back to pending leaves its batch
    assert pd.isna(results.loc[2, "batch"])


def test_recover_turns_inflight_into_unknown(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        ids = _fill(journal, 2)
        journal.mark_inflight(1, [ids[0]], method="POST", requested_at=5_000_000)
    # read-only: an in-flight batch reads as unknown, and the file is not changed
    before = results_from_journal(path)
    assert list(before["state"]) == ["unknown", "scheduled"]
    assert before.loc[0, "reason"] == "in_doubt_process_stopped"
    assert before.loc[0, "batch"] == 1 and pd.isna(before.loc[1, "batch"])
    with Journal(path) as journal:
        # the batch row is the record: the message is neither pending nor sendable
        assert journal.counts() == {"inflight": 1, "pending": 1}
        assert journal.pending()["id"].tolist() == [ids[1]]
        assert journal.pending_messages()["id"].tolist() == [ids[1]]
        assert journal.recover() == 1
        assert journal.recover() == 0
        assert journal.counts() == {"unknown": 1, "pending": 1}
        state = journal.conn.execute("SELECT state FROM batches").fetchone()[0]
        assert state == "unknown"
    after = results_from_journal(path)
    assert list(after["state"]) == ["unknown", "scheduled"]
    assert after.loc[0, "sent_at"] == pd.Timestamp(5, unit="s", tz="UTC")
    assert after.loc[0, "batch"] == 1
    recovered = ["sent_at", "api_message"]  # what recover() adds
    pd.testing.assert_frame_equal(after.drop(columns=recovered), before.drop(columns=recovered))


def test_journals_of_0_1_0_with_inflight_messages_are_read_and_recovered(
    tmp_path: Path,
) -> None:
    # 0.1.0 stored 'inflight' (and the batch) in the message rows themselves.
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        ids = _fill(journal, 3)
        journal.mark_inflight(1, ids[:2], method="POST", requested_at=7_000_000)
        journal.conn.execute(
            "UPDATE messages SET state = 'inflight', batch = 1 WHERE id IN (?, ?)", ids[:2]
        )
    before = results_from_journal(path)
    assert list(before["state"]) == ["unknown", "unknown", "scheduled"]
    assert list(before["reason"].fillna("-")) == ["in_doubt_process_stopped"] * 2 + ["-"]
    with Journal(path) as journal:
        assert journal.counts() == {"inflight": 2, "pending": 1}
        assert journal.recover() == 2
        assert journal.counts() == {"unknown": 2, "pending": 1}
        assert journal.pending()["id"].tolist() == [ids[2]]
    after = results_from_journal(path)
    assert list(after["state"]) == ["unknown", "unknown", "scheduled"]
    assert (after["sent_at"].iloc[:2] == pd.Timestamp(7, unit="s", tz="UTC")).all()
    assert list(after["batch"].iloc[:2]) == [1, 1]


def test_requeue_only_touches_the_given_states(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as journal:
        ids = _fill(journal, 2)
        journal.mark_inflight(1, ids, method="POST")
        journal.record_outcome(
            1,
            [
                (ids[0], "unknown", "in_doubt_no_response", None, None, "t", 1),
                (ids[1], "accepted", None, 9, "s", "ok", 1),
            ],
            batch_state="unknown",
            request_status=None,
            detail=None,
        )
        row_keys = journal.conn.execute("SELECT row_key FROM messages").fetchall()
        assert journal.requeue([k for (k,) in row_keys], states=("unknown",)) == 1
        assert journal.counts() == {"pending": 1, "accepted": 1}


def test_split_rows_are_accepted_only_when_every_part_is(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        k1, k2 = row_key("c", PHONES[0], "long"), row_key("c", PHONES[1], "long")
        journal.replace_rows(
            [
                (0, "0", k1, "ready", None, PHONES[0], "long", "GSM-7", 2, 2),
                (1, "1", k2, "ready", None, PHONES[1], "long", "GSM-7", 2, 2),
            ],
            {"index": index_meta(pd.RangeIndex(2))},
        )
        journal.add_messages(
            [
                (k, p, ph, f"part {p}", "c", None)
                for k, ph in ((k1, PHONES[0]), (k2, PHONES[1]))
                for p in (1, 2)
            ]
        )
        ids = journal.pending()["id"].tolist()  # k1 part 1, k1 part 2, k2 part 1, k2 part 2
        journal.mark_inflight(1, ids, method="POST")
        journal.record_outcome(
            1,
            [
                (ids[0], "accepted", None, 10, "a", "ok", 1),
                (ids[1], "accepted", None, 11, "b", "ok", 1),
                (ids[2], "accepted", None, 12, "c", "ok", 1),
                (ids[3], "rejected", "provider_rejected", 13, None, "ok", 1),
            ],
            batch_state="done",
            request_status=3,
            detail=None,
        )
    results = results_from_journal(path)
    assert list(results["state"]) == ["accepted", "rejected"]
    assert list(results["message_id"]) == [10, 12]  # the first part's id
    assert results.loc[1, "reason"] == "some_parts_rejected"


def test_results_follow_row_positions_and_keep_every_encoding(tmp_path: Path) -> None:
    # Positions with gaps (the rows table's order, not its numbers, is the row's place),
    # a split row in the middle, and encodings outside the usual two come back as stored.
    path = tmp_path / "j.db"
    keys = [row_key("c", PHONES[i], "t") for i in range(3)]
    with Journal(path) as journal:
        journal.replace_rows(
            [
                (10, "0", keys[0], "ready", None, None, None, "UCS-2", 1, 1),
                (20, "1", keys[1], "ready", None, PHONES[1], "long", "GSM-7", 2, 2),
                (30, "2", keys[2], "ready", None, None, None, "UTF-16", 1, 1),
                (40, "3", None, "invalid", "phone_landline", "0212", "t", None, None, 1),
            ],
            {"index": index_meta(pd.RangeIndex(4))},
        )
        journal.add_messages(
            [
                (keys[0], 1, PHONES[0], "t", "c", None),
                (keys[1], 1, PHONES[1], "lo", "c", None),
                (keys[1], 2, PHONES[1], "ng", "c", None),
                (keys[2], 1, PHONES[2], "t", "c", None),
            ]
        )
        ids = journal.pending()["id"].tolist()
        journal.mark_inflight(1, ids, method="POST")
        journal.record_outcome(
            1,
            [
                (ids[0], "accepted", None, 10, "a", "ok", 1),
                (ids[1], "accepted", None, 11, "b", "ok", 1),
                (ids[2], "rejected", "provider_rejected", 12, None, "ok", 1),
                (ids[3], "accepted", None, 13, "d", "ok", 1),
            ],
            batch_state="done",
            request_status=3,
            detail=None,
        )
    results = results_from_journal(path)
    assert list(results["state"]) == ["accepted", "rejected", "accepted", "invalid"]
    assert list(results["reason"].fillna("-")) == [
        "-",
        "some_parts_rejected",
        "-",
        "phone_landline",
    ]
    assert list(results["message_id"].fillna(-1)) == [10, 11, 13, -1]
    assert list(results["encoding"].fillna("-")) == ["UCS-2", "GSM-7", "UTF-16", "-"]
    assert list(results["text"]) == ["t", "long", "t", "t"]
    assert list(results["segments"].fillna(-1)) == [1, 2, 1, -1]


def test_invalid_rows_keep_validation_state_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        journal.replace_rows(
            [
                (0, "0", None, "invalid", "phone_landline", None, "hola", "GSM-7", 1, 1),
                (1, "1", None, "suppressed", "duplicate", PHONES[0], "hola", "GSM-7", 1, 1),
            ],
            {"index": index_meta(pd.RangeIndex(2))},
        )
    results = results_from_journal(path)
    assert list(results["state"]) == ["invalid", "suppressed"]
    assert list(results["reason"]) == ["phone_landline", "duplicate"]
    assert results["message_id"].isna().all() and results["sent_at"].isna().all()
    assert list(results["state"].cat.categories) == list(STATES)


INDEXES = {
    "range": pd.RangeIndex(2, 12, 2, name="n"),
    "int": pd.Index([7, 3, 9, 1, 5], dtype="int64", name="id"),
    "str": pd.Index(["a", "b", "c", "d", "e"], name="k"),
    "object-mixed": pd.Index(["a", 1, None, 2.5, ("t", 1)], dtype=object, tupleize_cols=False),
    "datetime-tz": pd.date_range("2025-01-01", periods=5, freq="h", tz="America/Caracas"),
    "datetime": pd.DatetimeIndex(["2025-01-01", "2025-01-02", "NaT", "2025-01-04", "2025-01-05"]),
    "float-nan": pd.Index([1.5, np.nan, 2.0, np.inf, -0.0]),
    "multi": pd.MultiIndex.from_tuples(
        [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("c", 1)], names=["grp", "n"]
    ),
    "date-objects": pd.Index([dt.date(2025, 1, d) for d in range(1, 6)], dtype=object),
    "categorical": pd.CategoricalIndex(["x", "y", "x", "z", "y"], name="cat"),
    "timedelta": pd.to_timedelta([1, 2, 3, 4, 5], unit="s"),
}


@pytest.mark.parametrize("name", sorted(INDEXES))
def test_index_survives_the_journal(tmp_path: Path, name: str) -> None:
    index = INDEXES[name]
    with Journal(tmp_path / "j.db") as journal:
        _fill(journal, len(index), index=index)
    rebuilt = results_from_journal(tmp_path / "j.db").index
    pd.testing.assert_index_equal(rebuilt, index, exact=name != "categorical")
    assert rebuilt.names == index.names


@pytest.mark.parametrize(
    "label",
    [
        0,
        -3,
        2.5,
        "x",
        "",
        None,
        True,
        ("a", 1),
        (("n", 2), 3),
        b"\x00\xff",
        pd.Timestamp("2025-01-01", tz="UTC"),
    ],
)
def test_labels_round_trip(label: object) -> None:
    assert decode_label(encode_label(label)) == label


def test_rebuild_empty_index() -> None:
    meta = index_meta(pd.Index([], dtype="int64"))
    assert rebuild_index(meta, []).dtype == "int64"
    frame = empty_results()
    assert frame.empty and frame.dtypes.to_dict() == RESULT_DTYPES


def test_lock_is_exclusive_and_dies_with_its_process(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    first = Journal(path)
    first.lock()
    second = Journal(path)
    with pytest.raises(JournalBusyError, match="in use"):
        second.lock()
    first.close()
    second.lock()  # free again once the holder closed
    second.close()

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from massiva_frames.sending.journal.sqlite import Journal; "
            "j = Journal(sys.argv[1]); j.lock(); print('locked', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with Journal(path) as third, pytest.raises(JournalBusyError):
            third.lock()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 10
        with Journal(path) as fourth:
            while True:
                try:
                    fourth.lock()
                    break
                except JournalBusyError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_readonly_open_refuses_missing_or_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        results_from_journal(tmp_path / "missing.db")
    foreign = tmp_path / "other.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="not a massiva-frames journal"):
        results_from_journal(foreign)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(InputError, match="not a massiva-frames journal"):
        results_from_journal(garbage)


def test_journal_versions(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        assert journal.get_meta("schema_version") == 3
        _fill(journal, 2)
        journal.set_meta({"schema_version": 1})  # as massiva-frames 0.1.0 wrote it
    assert len(results_from_journal(path)) == 2  # read as it is
    with Journal(path, readonly=True) as journal:
        assert journal.get_meta("schema_version") == 1
    with Journal(path) as journal:  # opened for writing: marked with this version
        assert journal.get_meta("schema_version") == 3
        journal.set_meta({"schema_version": 4})
    for readonly in (True, False):
        with pytest.raises(InputError, match=r"newer massiva-frames \(journal version 4; "):
            Journal(path, readonly=readonly)
    with pytest.raises(InputError, match="upgrade massiva-frames"):
        results_from_journal(path)
    # refused before anything was written, and no lock left behind
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)
    con.close()


@pytest.mark.parametrize("page_size", [4096, 32768])  # 4096: a file from an older version
def test_snapshot_is_independent(tmp_path: Path, page_size: int) -> None:
    with Journal(tmp_path / "j.db", page_size=page_size) as journal:
        assert journal.conn.execute("PRAGMA page_size").fetchone()[0] == page_size
        _fill(journal, 3)
        copy = journal.snapshot()
        copy.set_pending([], reason=None)
        copy.conn.execute("DELETE FROM messages")
        assert copy.counts() == {}
        assert journal.counts() == {"pending": 3}
        copy.close()


def test_many_rows_in_one_transaction(tmp_path: Path) -> None:
    n = 10_000
    with Journal(tmp_path / "j.db") as journal:
        keys = [row_key("c", f"58414{i:07d}", "t") for i in range(n)]
        journal.replace_rows(
            [(i, str(i), keys[i], "ready", None, "p", "t", "GSM-7", 1, 1) for i in range(n)],
            {"index": index_meta(pd.RangeIndex(n))},
        )
        assert journal.add_messages((k, 1, "p", "t", "c", None) for k in keys) == n
        assert journal.counts() == {"pending": n}
        results = journal.results(index=pd.RangeIndex(n))

        def indexed() -> bool:
            sql = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'rows_key'"
            return journal.conn.execute(sql).fetchone() is not None

        # pending() builds the join's index once; rewriting the rows drops it
        assert not indexed()
        first = journal.pending()
        assert indexed() and list(first["position"]) == list(range(n))
        pd.testing.assert_frame_equal(journal.pending(), first)
        journal.replace_rows([], {"index": index_meta(pd.RangeIndex(0))})
        assert not indexed()
    assert len(results) == n and (results["state"] == "scheduled").all()


ODD_TEXTS = [
    "Hola 😀 ñandú",
    'comillas "dobles" y \\barra',
    "línea\tcon tab",
    "日本語",
    "'; DROP TABLE x; --",
]


@pytest.mark.parametrize("json_path", [True, False], ids=["json", "executemany"])
def test_both_write_paths_store_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_path: bool
) -> None:
    import massiva_frames.sending.journal.writes as writes_module

    monkeypatch.setattr(writes_module, "_JSON_UPDATES", json_path)
    n = 60  # above the size where the JSON path is used
    texts = [ODD_TEXTS[i % len(ODD_TEXTS)] + f" {i}" for i in range(n)]
    phones = [f"58424{i:07d}" for i in range(n)]
    keys = [row_key("c", phones[i], texts[i]) for i in range(n)]
    labels = [encode_label(f"r{i}") for i in range(n)]
    path = tmp_path / "j.db"
    with Journal(path) as journal:
        rows = [(i, labels[i], keys[i], "ready", None, None, None, "UCS-2", 1, 1) for i in range(n)]
        journal.replace_rows(rows, {"index": index_meta(pd.Index([f"r{i}" for i in range(n)]))})
        assert (
            journal.add_messages((keys[i], 1, phones[i], texts[i], "c", None) for i in range(n))
            == n
        )
        ids = [int(i) for i in journal.pending()["id"]]
        journal.mark_inflight(1, ids, method="POST", requested_at=7)
        outcomes = [
            (ids[i], "accepted" if i % 3 else "rejected", None if i % 3 else "provider_rejected",
             1000 + i, f"sid-{i}", texts[i], 8)
            for i in range(n)
        ]  # fmt: skip
        journal.record_outcome(1, outcomes, batch_state="done", request_status=40, detail=None)
    results = results_from_journal(path)
    assert list(results.index) == [f"r{i}" for i in range(n)]
    assert list(results["text"]) == texts and list(results["phone"]) == phones
    assert list(results["api_message"]) == texts
    assert list(results["message_id"]) == [1000 + i for i in range(n)]
    assert list(results["state"]) == ["rejected" if i % 3 == 0 else "accepted" for i in range(n)]
    assert set(results["request_status"]) == {40} and set(results["batch"]) == {1}


def _turns(ids: list[int], text: str) -> list[tuple[list[Answered], list[Any]]]:
    """Three turns of a request loop: two batches start; the first ends (accepted and
    rejected entries) while a third starts; the second never left, the third is unknown."""
    a, b, c = ids[:20], ids[20:30], ids[30:]
    accepted = Fate(
        "accepted", None, text, 200, a[::2], [5000 + i for i in a[::2]], [f"s-{i}" for i in a[::2]]
    )
    rejected = Fate(
        "rejected",
        "provider_rejected",
        text,
        200,
        a[1::2],
        [5000 + i for i in a[1::2]],
        [None] * 10,
    )
    never = Fate("pending", "not_sent_connect_failed", "ConnectError: x", None, b)
    doubt = Fate("unknown", "in_doubt_no_response", text, 202, c)
    return [
        ([], [(1, a, "POST", 100), (2, b, "POST", 101)]),
        ([Answered(1, [accepted, rejected], "done", 2, None, 201)], [(3, c, "GET", 202)]),
        (
            [Answered(2, [never], "not_sent", None, "not_sent_connect_failed", 300),
             Answered(3, [doubt], "unknown", None, "in_doubt_no_response", 301)],
            [],
        ),
    ]  # fmt: skip


@pytest.mark.parametrize("json_path", [True, False], ids=["trigger", "statements"])
def test_a_turn_writes_what_single_writes_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_path: bool
) -> None:
    # write_turn (one statement through a trigger, or its fallback) leaves the journal
    # exactly as record_fates and mark_inflight called one by one.
    import massiva_frames.sending.journal.writes as writes_module

    monkeypatch.setattr(writes_module, "_JSON_UPDATES", json_path)
    texts = [ODD_TEXTS[i % len(ODD_TEXTS)] + f" {i}" for i in range(40)]
    dumps = []
    for one_statement in (True, False):
        with Journal(tmp_path / f"{one_statement}.db") as journal:
            journal.add_messages(
                (row_key("c", PHONES[0], t), 1, PHONES[0], t, "c", None) for t in texts
            )
            ids = [int(i) for i in journal.pending()["id"]]
            for answered, launched in _turns(ids, texts[1]):
                if one_statement:
                    journal.write_turn(answered, launched)
                    continue
                for x in answered:
                    journal.record_fates(
                        x.number,
                        x.fates,
                        batch_state=x.batch_state,
                        request_status=x.request_status,
                        detail=x.detail,
                        answered_at=x.answered_at,
                    )
                for number, chunk, method, at in launched:
                    journal.mark_inflight(number, chunk, method=method, requested_at=at)
            messages = journal.conn.execute(
                "SELECT id, state, reason, batch, message_id, sid, request_status, api_message, "
                "sent_at FROM messages ORDER BY id"
            ).fetchall()
            batches = journal.conn.execute(
                "SELECT number, state, n_messages, method, requested_at, answered_at, "
                "request_status, detail, ids FROM batches ORDER BY number"
            ).fetchall()
            dumps.append((messages, [(*b[:-1], json.loads(b[-1])) for b in batches]))
    assert dumps[0] == dumps[1]
    messages, batches = dumps[0]
    states = [m[1] for m in messages]
    assert states == ["accepted", "rejected"] * 10 + ["pending"] * 10 + ["unknown"] * 10
    assert [m[3] for m in messages] == [1] * 20 + [None] * 10 + [3] * 10  # never-sent: no batch
    assert messages[0][4:6] == (5000 + messages[0][0], f"s-{messages[0][0]}")
    assert messages[1][5] is None and messages[1][2] == "provider_rejected"
    assert {m[7] for m in messages[:20]} == {texts[1]} and messages[0][6] == 2
    assert [b[1] for b in batches] == ["done", "not_sent", "unknown"]
    assert [b[2] for b in batches] == [20, 10, 10] and batches[2][3] == "GET"
    assert batches[0][-1] == [m[0] for m in messages[:20]]  # ids in request order


@pytest.mark.parametrize("json_path", [True, False], ids=["trigger", "statements"])
def test_answered_outcomes_are_what_the_journal_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_path: bool
) -> None:
    # send() builds its results from the outcomes the loop committed when they cover
    # every message: they must be the journal's values, column by column.
    import massiva_frames.sending.journal.writes as writes_module

    monkeypatch.setattr(writes_module, "_JSON_UPDATES", json_path)
    texts = [ODD_TEXTS[i % len(ODD_TEXTS)] + f" {i}" for i in range(40)]
    with Journal(tmp_path / "j.db") as journal:
        journal.add_messages(
            (row_key("c", PHONES[0], t), 1, PHONES[0], t, "c", None) for t in texts
        )
        ids = [int(i) for i in journal.pending()["id"]]
        answered: list[Answered] = []
        for done, launched in _turns(ids, texts[1]):
            journal.write_turn(done, launched)
            answered += done
        stored = journal.message_outcomes(ids[0], ids[-1])
        built = answered_outcomes(answered, ids[0], len(ids))
    assert built is not None and set(built) == set(stored)
    for name, column in stored.items():
        assert built[name].tolist() == column.tolist(), name
    assert {type(v) for v in built["sid"].tolist()} == {str, type(None)}


def test_answered_outcomes_refuse_a_partial_cover() -> None:
    # A message the loop did not answer (not due, credits short, run stopped) was
    # written elsewhere: the caller must read the journal instead.
    fate = Fate("accepted", None, "ok", 5, [10, 11], [1, 2], ["a", "b"])
    answer = Answered(1, [fate], "done", 2, None, 6)
    assert answered_outcomes([answer], 10, 2) is not None
    assert answered_outcomes([answer], 10, 3) is None  # id 12 not answered
    assert answered_outcomes([answer, answer], 10, 2) is None  # answered twice
    assert answered_outcomes([answer], 11, 2) is None  # id 10 outside the range
    assert answered_outcomes([], 10, 0) is not None


@pytest.mark.parametrize("json_path", [True, False], ids=["trigger", "statements"])
def test_a_turn_is_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_path: bool
) -> None:
    # A turn that fails half-way (a batch number already used) leaves nothing behind.
    import massiva_frames.sending.journal.writes as writes_module

    monkeypatch.setattr(writes_module, "_JSON_UPDATES", json_path)
    with Journal(tmp_path / "j.db") as journal:
        journal.add_messages((row_key("c", p, "t"), 1, p, "t", "c", None) for p in PHONES[:4])
        ids = [int(i) for i in journal.pending()["id"]]
        journal.write_turn([], [(1, ids[:2], "POST", 1)])
        with pytest.raises(sqlite3.IntegrityError):
            journal.write_turn(
                [Answered(1, [Fate("accepted", None, "ok", 2, ids[:2], [7, 8], ["a", "b"])],
                          "done", 2, None, 3)],
                [(1, ids[2:], "POST", 4)],  # number 1 again
            )  # fmt: skip
        assert journal.counts() == {"inflight": 2, "pending": 2}
        state = journal.conn.execute("SELECT state FROM batches WHERE number = 1").fetchone()
        assert state == ("inflight",)
