"""Streaming send: a parquet dataset, CSV or iterable of frames sent chunk by chunk against a
real sandbox, with real SQLite journals and real parquet results.

What it must keep: the results of ``send`` for the same rows, one message per key across
chunks, the credits pre-flight over the whole campaign before any request, resumption
after a SIGKILL with each message sent once, clear input errors, and memory bounded by the
chunk (observed through the frames a source still has alive, not through timing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.dataset as ds
import pytest

import massiva_frames as mf
from massiva_frames.errors import InputError, InsufficientCreditsError
from massiva_frames.sandbox import Sandbox, sandbox
from massiva_frames.sending.campaign import send
from massiva_frames.sending.streaming import StreamSummary, send_stream
from massiva_frames.wire.client import MassivaClient

if TYPE_CHECKING:
    from pg_server import JournalAt

ROOT = Path(__file__).resolve().parents[1]
#: the columns that depend on the request a row went in (ids, times, batch answers)
PER_REQUEST = [
    "message_id",
    "first_message_id",
    "sid",
    "sent_at",
    "batch",
    "request_status",
    "api_message",
]


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with sandbox(credits=100_000, callback_delay=60) as server:
        yield server


@pytest.fixture
def client(sb: Sandbox) -> Iterator[MassivaClient]:
    with MassivaClient(sb.usuario, sb.clave, sb.base_url) as c:
        yield c


def audience(n: int, *, start: int = 0) -> pd.DataFrame:
    """``n`` rows: distinct phones and texts, a few invalid phones and one repeated row."""
    phones = [f"0414{1000000 + i:07d}" for i in range(start, start + n)]
    texts = [f"Hola {i}" for i in range(start, start + n)]
    for i in range(7, n, 50):
        phones[i] = "12"  # invalid
    if n > 20:
        phones[20], texts[20] = phones[10], texts[10]  # a duplicate inside one chunk
    return pd.DataFrame({"telefono": phones, "msg": texts})


def sandbox_pairs(sb: Sandbox) -> pd.Series:
    record = sb.messages()
    return record["phone"].astype(str) + "|" + record["text"].astype(str)


def stream(source: Any, tmp: Path, client: MassivaClient, **options: Any) -> StreamSummary:
    options.setdefault("journal", str(tmp / "stream.db"))
    options.setdefault("out", str(tmp / "results"))
    return send_stream(source, client=client, phone="telefono", text="msg", progress=False,
                       **options)  # fmt: skip


def test_one_chunk_gives_the_in_memory_results(tmp_path: Path, sb: Sandbox) -> None:
    df = audience(180)
    (tmp_path / "data").mkdir()
    df.iloc[:90].to_parquet(tmp_path / "data" / "a.parquet")
    df.iloc[90:].to_parquet(tmp_path / "data" / "b.parquet")
    with MassivaClient(sb.usuario, sb.clave, sb.base_url) as client:
        expected = send(df, client=client, phone="telefono", text="msg", progress=False,
                        journal=str(tmp_path / "memory.db"), campaign="c1")  # fmt: skip
        summary = send(str(tmp_path / "data"), out=str(tmp_path / "out"), chunk_rows=1000,
                       client=client, phone="telefono", text="msg", progress=False,
                       journal=str(tmp_path / "stream.db"), campaign="c2")  # fmt: skip
    assert isinstance(summary, StreamSummary) and summary.chunks == 1
    got = pd.read_parquet(tmp_path / "out")
    assert list(os.listdir(tmp_path / "out")) == ["part-00000.parquet"]
    expected = expected.drop(columns=["message_id", "first_message_id", "sid", "sent_at"])
    pd.testing.assert_frame_equal(
        got.drop(columns=["message_id", "first_message_id", "sid", "sent_at"]), expected
    )
    assert summary.states == expected["state"].value_counts()[lambda n: n > 0].to_dict()
    assert got["message_id"].notna().sum() == (got["state"] == "accepted").sum()


def _sources(tmp: Path, df: pd.DataFrame) -> dict[str, Any]:
    folder = tmp / "data"
    folder.mkdir()
    for i, start in enumerate(range(0, len(df), 70)):
        # several row groups per file: the reader gathers them into chunks
        df.iloc[start : start + 70].to_parquet(folder / f"p{i}.parquet", row_group_size=25)
    df.to_csv(tmp / "audience.csv", index=False)
    return {
        "directory": str(folder),
        "glob": str(folder / "p*.parquet"),
        "dataset": ds.dataset(str(folder), format="parquet"),
        "csv": str(tmp / "audience.csv"),
        "generator": (df.iloc[s : s + 33] for s in range(0, len(df), 33)),
        "list": [df.iloc[s : s + 45] for s in range(0, len(df), 45)],
    }


@pytest.mark.parametrize("kind", ["directory", "glob", "dataset", "csv", "generator", "list"])
def test_every_source_kind_gives_the_in_memory_results(
    tmp_path: Path, sb: Sandbox, client: MassivaClient, kind: str
) -> None:
    df = audience(200)
    source = _sources(tmp_path, df)[kind]
    expected = send(df, client=client, phone="telefono", text="msg", progress=False,
                    journal=str(tmp_path / "memory.db"), campaign="memory")  # fmt: skip
    summary = stream(source, tmp_path, client, chunk_rows=60, campaign="stream")
    got = pd.read_parquet(tmp_path / "results")
    assert summary.rows == 200 and summary.max_chunk_rows <= 60
    assert summary.chunks == len(list((tmp_path / "results").glob("part-*.parquet")))
    pd.testing.assert_frame_equal(got.drop(columns=PER_REQUEST), expected.drop(columns=PER_REQUEST))
    # every message went once: the in-memory campaign and the streamed one
    assert sandbox_pairs(sb).value_counts().max() == 2
    assert summary.messages == (got["state"] == "accepted").sum() == summary.credits_needed


def test_a_duplicate_across_chunks_is_sent_once(
    tmp_path: Path, sb: Sandbox, client: MassivaClient
) -> None:
    df = audience(150)
    df.loc[130, ["telefono", "msg"]] = df.loc[3, ["telefono", "msg"]].to_numpy()
    summary = stream(df, tmp_path, client, chunk_rows=50)
    got = pd.read_parquet(tmp_path / "results")
    assert got.loc[3, "state"] == "accepted"
    assert (got.loc[130, "state"], got.loc[130, "reason"]) == ("suppressed", "duplicate")
    assert pd.isna(got.loc[130, "message_id"])
    pairs = sandbox_pairs(sb)
    assert (pairs == f"58{df.loc[3, 'telefono'][1:]}|{df.loc[3, 'msg']}").sum() == 1
    assert pairs.is_unique and summary.credits_needed == summary.messages == len(pairs)


def test_a_rerun_sends_nothing_twice_on_either_journal(
    tmp_path: Path, sb: Sandbox, client: MassivaClient, journal_at: JournalAt
) -> None:
    df = audience(150)
    df.loc[130, ["telefono", "msg"]] = df.loc[3, ["telefono", "msg"]].to_numpy()
    journal = str(journal_at())
    first = stream(df, tmp_path, client, chunk_rows=50, journal=journal)
    parts = tmp_path / "results"
    written = pd.read_parquet(parts)
    assert written.loc[130, "reason"] == "duplicate" and first.resumed_chunks == 0
    again = stream(df, tmp_path, client, chunk_rows=50, journal=journal)
    assert (again.resumed_chunks, again.messages, again.requests) == (3, 0, 0)
    assert again.states == first.states
    # a part lost after its chunk was journalled: rebuilt from the journal, same rows
    (parts / "part-00001.parquet").unlink()
    third = stream(df, tmp_path, client, chunk_rows=50, journal=journal)
    assert (third.resumed_chunks, third.messages) == (2, 0)
    rebuilt = pd.read_parquet(parts)
    pd.testing.assert_frame_equal(rebuilt, written)
    assert sandbox_pairs(sb).is_unique and len(sandbox_pairs(sb)) == first.messages
    # the journal keeps the last chunk's rows: rebuilding the results from it is refused,
    # naming the dataset that holds them; a later in-memory send reads back as usual
    with pytest.raises(InputError, match="streamed") as refused:
        mf.results_from_journal(journal)
    assert str(parts) in str(refused.value)
    later = send(audience(5, start=500), client=client, phone="telefono", text="msg",
                 journal=journal, progress=False)  # fmt: skip
    pd.testing.assert_frame_equal(mf.results_from_journal(journal), later, check_like=True)


def test_a_repeated_key_across_chunks_is_sent_once(
    tmp_path: Path, sb: Sandbox, client: MassivaClient
) -> None:
    df = audience(120).assign(cliente=[f"c{i}" for i in range(120)])
    df.loc[100, "cliente"] = "c5"
    stream(df, tmp_path, client, chunk_rows=40, key="cliente")
    got = pd.read_parquet(tmp_path / "results")
    assert (got.loc[100, "state"], got.loc[100, "reason"]) == ("suppressed", "duplicate_key")
    assert sandbox_pairs(sb).is_unique


def test_credits_preflight_covers_the_whole_campaign(tmp_path: Path) -> None:
    df = audience(150)
    valid = 147  # three invalid phones, one in-chunk duplicate, none repeated across chunks
    with (
        sandbox(credits=100, callback_delay=60) as sb,
        MassivaClient(sb.usuario, sb.clave, sb.base_url) as client,
    ):
        with pytest.raises(InsufficientCreditsError) as info:
            stream(df, tmp_path, client, chunk_rows=40)
        assert (info.value.needed, info.value.available) == (valid - 1, 100)
        assert sb.messages().empty and sb.credits() == 100
        assert not list((tmp_path / "results").glob("part-*"))
        summary = stream(df, tmp_path, client, chunk_rows=40, allow_partial=True)
        got = pd.read_parquet(tmp_path / "results")
        assert summary.states["accepted"] == 100 == len(sb.messages())
        waiting = got[got["state"] == "scheduled"]
        assert len(waiting) == valid - 1 - 100
        assert set(waiting["reason"]) == {"insufficient_credits"}


def test_dry_run_counts_and_writes_nothing(
    tmp_path: Path, sb: Sandbox, client: MassivaClient
) -> None:
    summary = stream(audience(90), tmp_path, client, chunk_rows=40, dry_run=True)
    assert summary.dry_run and summary.credits_needed == 87  # 2 invalid, 1 repeated
    assert summary.credits_available == sb.credits() and summary.rows == 90
    assert summary.chunks == 3
    assert sb.messages().empty and not (tmp_path / "results").exists()
    assert not (tmp_path / "stream.db").exists()


_CHILD = textwrap.dedent(
    """
    import sys
    import pandas as pd
    from massiva_frames.sending.streaming import send_stream
    from massiva_frames.wire.client import MassivaClient

    base_url, data, journal, out = sys.argv[1:5]
    with MassivaClient(base_url=base_url) as client:
        send_stream(data, out=out, chunk_rows=100, client=client, phone="telefono",
                    text="msg", journal=journal, progress=False, max_phones=10,
                    concurrency=2)
    print("finished", flush=True)
    """
)


def test_sigkill_mid_stream_then_resume_sends_each_message_once(tmp_path: Path) -> None:
    df = audience(600)
    (tmp_path / "data").mkdir()
    df.to_parquet(tmp_path / "data" / "all.parquet")
    journal, out = tmp_path / "stream.db", tmp_path / "results"
    with sandbox(credits=100_000, callback_delay=60) as sb:
        sb.inject("latency", ratio=1.0, seconds=0.2)  # a chunk takes >= 1 s to send
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MASSIVA_USUARIO": sb.usuario,
               "MASSIVA_CLAVE": sb.clave}  # fmt: skip
        args = [str(tmp_path / "data"), str(journal), str(out)]
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, sb.base_url, *args], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            # killed once its second chunk is written and more is going out
            while time.monotonic() < deadline and len(list(out.glob("part-*.parquet"))) < 2:
                assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
                time.sleep(0.01)
            assert len(list(out.glob("part-*.parquet"))) >= 2, "no chunk written in 60 s"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()
        before = len(sb.messages())
        assert 195 <= before < 587, f"the kill should land mid-stream (sent {before})"
        with MassivaClient(sb.usuario, sb.clave, sb.base_url) as client:
            summary = stream(str(tmp_path / "data"), tmp_path, client, chunk_rows=100,
                             max_phones=10)  # fmt: skip
        # chunks whose part and record were both written are skipped; the kill may land
        # between the second part and its record: that chunk is redone from the journal
        assert summary.resumed_chunks >= 1 and summary.chunks == 6
        got = pd.read_parquet(out)
        assert len(got) == 600 and got.index.equals(pd.RangeIndex(600))
        pairs = sandbox_pairs(sb)
        assert pairs.is_unique  # nothing sent twice
        states = got["state"].astype(str)
        # the kill may leave one request in doubt; every other valid row was accepted
        assert set(states) <= {"accepted", "unknown", "invalid", "suppressed"}
        assert (states == "accepted").sum() + (
            states == "unknown"
        ).sum() == 587  # 12 invalid, 1 repeat
        accepted = got[states == "accepted"]
        assert set(accepted["phone"] + "|" + accepted["text"]) <= set(pairs)
        assert len(pairs) >= len(accepted)


def test_a_missing_column_names_the_chunk_rows_and_column(
    tmp_path: Path, sb: Sandbox, client: MassivaClient
) -> None:
    (tmp_path / "data").mkdir()
    audience(50).rename(columns={"telefono": "tel"}).to_parquet(tmp_path / "data" / "a.parquet")
    with pytest.raises(InputError, match=r"chunk 0 \(rows 0-24, file .*a\.parquet\).*'telefono'"):
        stream(str(tmp_path / "data"), tmp_path, client, chunk_rows=25)
    # a later part without the column: refused by the pre-flight, before any request
    frames = [audience(50), audience(50).rename(columns={"telefono": "tel"})]
    with pytest.raises(InputError, match=r"chunk 2 \(item 1, rows 50-74 .*\).*'telefono'"):
        stream(frames, tmp_path, client, chunk_rows=25)
    assert sb.messages().empty


def test_an_empty_dataset_is_refused(tmp_path: Path, sb: Sandbox, client: MassivaClient) -> None:
    (tmp_path / "data").mkdir()
    audience(3).iloc[:0].to_parquet(tmp_path / "data" / "a.parquet")
    with pytest.raises(InputError, match="no rows"):
        stream(str(tmp_path / "data"), tmp_path, client)
    with pytest.raises(InputError, match="no file matches"):
        stream(str(tmp_path / "nothing-*.parquet"), tmp_path, client)


def test_an_item_that_is_not_a_frame_is_named(
    tmp_path: Path, sb: Sandbox, client: MassivaClient
) -> None:
    items = iter([audience(40), {"telefono": "04141234567"}])
    with pytest.raises(InputError, match=r"item 1 of the source \(after row 40\) is a dict"):
        stream(items, tmp_path, client, chunk_rows=25)
    assert sb.messages().empty
    with pytest.raises(InputError, match="needs out="):
        send([audience(3)], client=client, phone="telefono", text="msg")


class _Counted:
    """A source that makes its frames on demand and knows how many are still alive."""

    def __init__(self, frames: int, rows: int) -> None:
        self.frames, self.rows = frames, rows
        self.alive: list[weakref.ref[pd.DataFrame]] = []
        self.most_alive = 0

    def __iter__(self) -> Iterator[pd.DataFrame]:
        for i in range(self.frames):
            self.alive = [r for r in self.alive if r() is not None]
            self.most_alive = max(self.most_alive, len(self.alive))
            frame = audience(self.rows, start=i * self.rows)
            frame.index = pd.RangeIndex(i * self.rows, (i + 1) * self.rows)
            self.alive.append(weakref.ref(frame))
            yield frame


def test_memory_is_bounded_by_the_chunk(tmp_path: Path, sb: Sandbox, client: MassivaClient) -> None:
    source = _Counted(frames=8, rows=50)
    summary = stream(source, tmp_path, client, chunk_rows=50)
    # when the next frame is made, at most the one being sent is still held
    assert source.most_alive <= 1
    assert summary.max_chunk_rows == 50 and summary.rows == 400 and summary.chunks == 8
    assert len(pd.read_parquet(tmp_path / "results")) == 400


def test_cli_streams_a_parquet_directory(tmp_path: Path, sb: Sandbox) -> None:
    (tmp_path / "data").mkdir()
    audience(120).to_parquet(tmp_path / "data" / "a.parquet")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASSIVA_USUARIO": sb.usuario,
           "MASSIVA_CLAVE": sb.clave, "MASSIVA_BASE_URL": sb.base_url}  # fmt: skip
    cmd = [sys.executable, "-m", "massiva_frames.faces.cli", "send", str(tmp_path / "data"),
           "--phone", "telefono", "--text", "msg", "--out", str(tmp_path / "out") + "/",
           "--chunk-rows", "50", "--no-progress"]  # fmt: skip
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--journal" in refused.stderr
    done = subprocess.run([*cmd, "--journal", str(tmp_path / "j.db")], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 3, done.stderr  # three invalid rows, one duplicate
    assert "120 rows in 3 chunk(s)" in done.stdout
    got = pd.read_parquet(tmp_path / "out")
    assert (got["state"] == "accepted").sum() == 116 == len(sb.messages())


def test_public_names() -> None:
    assert mf.send_stream is send_stream and mf.StreamSummary is StreamSummary
