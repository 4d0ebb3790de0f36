"""The chaos suite's scenarios at bounded sizes (``benchmarks/chaos.py --quick``), and
regression tests for the holes it found.

Every scenario must report 0 lost, duplicated, crashes, hangs and leaks; each test also
checks the scenario really did what it says (faults fired, processes killed, examples
tried), so a scenario that silently stopped testing fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from massiva_frames.errors import mask

# The suite is a package beside its command, benchmarks/chaos.py, which finds it on
# sys.path as a script's folder; here the folder is added.
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

from chaos_scenarios import (  # noqa: E402
    bad_frames,
    bad_queries,
    bad_xml,
    campaigns,
    figures,
    harness,
    leaks,
    postgres,
    provider,
    receiver,
    receivers,
    scanning,
    sender,
    streaming,
    suite,
)

QUICK = figures.QUICK


def _assert_clean(fig: Any) -> None:
    assert fig.failing() == [], figures.format_table([fig])


# --- the oracles can fail ------------------------------------------------------------------


def test_scan_finds_every_form_of_the_password() -> None:
    from html import escape
    from urllib.parse import quote, quote_plus

    pw = scanning.PASSWORD
    forms = [
        pw, quote(pw, safe=""), quote_plus(pw), quote(pw, safe="").lower(),
        quote_plus(pw, encoding="latin-1"), escape(pw), json.dumps(pw)[1:-1], pw[:-2],
    ]  # fmt: skip
    for form in forms:
        count, where = scanning.scan_for_secrets({"x": f"a {form} b"}, [pw])
        assert count >= 1 and where == [f"x ({count})"], form
    for encoding in ("utf-8", "latin-1", "utf-16-le"):
        count, _ = scanning.scan_for_secrets({"f": b"\x00" + pw.encode(encoding) + b"\x00"}, [pw])
        assert count >= 1, encoding
    assert scanning.scan_for_secrets({"x": "clave=***", "y": b"***"}, [pw]) == (0, [])


def test_send_figures_count_lost_and_duplicated_rows() -> None:
    df = pd.DataFrame({"telefono": ["1", "2", "3", "4"]}, index=["a", "b", "c", "d"])
    results = pd.DataFrame(
        {
            "phone": ["584140000001", "584140000002", "584140000003"],
            "text": ["x", "y", "z"],
            "state": ["accepted", "unknown", "scheduled"],
            "reason": [None, "in_doubt_no_response", None],
            "message_id": pd.array([10, pd.NA, pd.NA], dtype="Int64"),
        },
        index=["a", "b", "c"],
    )
    messages = pd.DataFrame(
        {
            "id": [10, 11, 12],
            "phone": ["584140000001", "584140000002", "584140000002"],
            "text": ["x", "y", "y"],
        }
    )
    fig = figures.Figures("t")
    campaigns.send_figures(fig, df, results, messages)
    # d missing, c not terminal: lost; (…02, y) accepted twice: duplicated.
    assert (fig.lost, fig.duplicated, fig.sent_once, fig.unknown) == (2, 1, 1, 1)
    assert fig.evidence["unknown_delivered"] == 1
    assert fig.crashes == 1  # c: neither accepted nor with a reason
    assert fig.failing() == ["lost", "duplicated", "crashes"]


# --- the scenarios, bounded ----------------------------------------------------------------


@pytest.mark.slow
def test_faulty_provider(tmp_path: Path) -> None:
    fig = provider.scenario_faulty_provider(QUICK, tmp_path)
    _assert_clean(fig)
    assert fig.tried == QUICK.provider_rows and fig.sent_once > 0
    assert fig.evidence["faults_fired"] >= 5 and fig.unknown > 0
    assert fig.evidence["unknown_delivered"] > 0  # accept-then-fail happened...
    # ...and was counted: resending the unknown rows duplicates exactly those.
    assert fig.evidence["duplicates_when_resending"] == fig.evidence["unknown_delivered"]


@pytest.mark.slow
def test_killed_sender(tmp_path: Path) -> None:
    fig = sender.scenario_killed_sender(QUICK, tmp_path)
    _assert_clean(fig)
    assert fig.evidence["kills"] >= 2
    assert fig.tried == QUICK.sender_rows and fig.sent_once > 0


@pytest.mark.slow
def test_killed_streaming_send(tmp_path: Path) -> None:
    fig = streaming.scenario_killed_stream(QUICK, tmp_path)
    _assert_clean(fig)
    assert fig.evidence["kills"] >= 2
    assert fig.evidence["parts"] == QUICK.streaming_rows // QUICK.streaming_chunk_rows
    assert fig.tried == QUICK.streaming_rows and fig.sent_once > 0


@pytest.mark.slow
def test_killed_receiver(tmp_path: Path) -> None:
    fig = receiver.scenario_killed_receiver(QUICK, tmp_path)
    _assert_clean(fig)
    assert fig.evidence["kills"] == QUICK.receiver_kills
    assert fig.evidence["acknowledged"] > 200 and fig.evidence["sandbox_acknowledged"] > 0
    assert fig.evidence["sent_again"] > 0
    assert fig.sent_once == fig.evidence["acknowledged"]


@pytest.mark.slow
def test_receivers_on_one_directory(tmp_path: Path) -> None:
    fig = receivers.scenario_shared_receivers(QUICK, tmp_path)
    _assert_clean(fig)
    assert fig.evidence["kills"] == QUICK.receivers_kills
    assert fig.evidence["acknowledged"] > 200 and fig.evidence["sandbox_acknowledged"] > 0
    assert fig.evidence["least_forwarded"] > 0  # every instance served
    assert fig.evidence["adoptions"] > 0  # a dead instance's rows compacted by another
    assert fig.sent_once == fig.evidence["acknowledged"]
    assert fig.evidence["stored_rows"] == fig.evidence["stored_keys"] >= fig.sent_once


def test_postgres_dispatchers(tmp_path: Path) -> None:
    from conftest import require_or_skip
    from pg_server import INSTALL, available

    require_or_skip("postgres", available(), INSTALL)
    fig = postgres.scenario_postgres(QUICK, tmp_path)
    _assert_clean(fig)
    assert fig.evidence["kills"] == QUICK.postgres_kills and fig.evidence["restarts"] == 1
    assert fig.tried == QUICK.postgres_rows and fig.sent_once > 0
    assert fig.sent_once + (fig.unknown or 0) == QUICK.postgres_rows  # every row final


@pytest.mark.slow
def test_bad_dataframes() -> None:
    fig = bad_frames.fuzz_frames(QUICK.frame_examples)
    _assert_clean(fig)
    assert fig.tried >= QUICK.frame_examples  # plus the explicit regression frames
    assert fig.evidence.get("frame", 0) > QUICK.frame_examples // 4


@pytest.mark.slow
def test_bad_xml() -> None:
    fig = bad_xml.fuzz_xml(QUICK.xml_examples)
    _assert_clean(fig)
    assert fig.tried == QUICK.xml_examples
    assert {"valid", "truncated", "entities", "huge", "charset", "secret-echo"} <= set(fig.evidence)


@pytest.mark.slow
def test_bad_query_strings(tmp_path: Path) -> None:
    fig = bad_queries.fuzz_queries(QUICK.query_examples, tmp_path)
    _assert_clean(fig)
    assert fig.tried == QUICK.query_examples
    assert fig.evidence.get("http_200", 0) > 0 and fig.evidence.get("http_400", 0) > 0


@pytest.mark.slow
def test_secrets(tmp_path: Path) -> None:
    fig = leaks.scenario_secrets(QUICK, tmp_path)
    _assert_clean(fig)
    assert fig.evidence["artifacts"] > 300 and fig.evidence["log_chars"] > 1_000


def test_table_and_exit_code(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    ok = figures.Figures("a", tried=3, lost=0, crashes=0)
    bad = figures.Figures("b", tried=1, leaks=2)
    lines = figures.format_table([ok, bad]).splitlines()
    assert [c.strip() for c in lines[0].split("|")][-2:] == ["leaks", "seconds"]
    assert [c.strip() for c in lines[3].split("|")] == ["b", "1", *"-" * 6, "2", "0.0"]
    assert ok.failing() == [] and bad.failing() == ["leaks"]
    monkeypatch.setitem(suite.SCENARIOS, "provider", lambda sizes, workdir, seed: ok)
    monkeypatch.setitem(suite.SCENARIOS, "secrets", lambda sizes, workdir, seed: [ok, bad])
    assert suite.main(["--scenario", "provider", "--quick"]) == 0
    assert suite.main(["--scenario", "provider", "--scenario", "secrets"]) == 1
    assert "b: leaks" in capsys.readouterr().out


def test_the_command_runs_as_a_script() -> None:
    # The one command: benchmarks/chaos.py finds its package from any working directory.
    command = [sys.executable, str(BENCHMARKS / "chaos.py"), "--help"]
    done = subprocess.run(command, capture_output=True, text=True, cwd="/", timeout=60)
    assert done.returncode == 0, done.stderr
    scenarios = "{disk,flood,input,journal,postgres,provider,receiver,receivers,"
    scenarios += "secrets,sender,streaming,trickle}"
    assert scenarios in done.stdout
    assert suite.DESCRIPTION.split(":")[0] in done.stdout
    refused = subprocess.run([*command[:2], "--scenario", "nope"], capture_output=True,
                             text=True, cwd="/", timeout=60)  # fmt: skip
    assert refused.returncode == 2 and "invalid choice" in refused.stderr


# --- regression tests for holes the suite found ------------------------------------------


def test_mask_covers_the_json_escaped_password() -> None:
    # A PHP error page answering JSON echoes the password as json_encode writes it.
    pw = scanning.PASSWORD
    echoed = '{"error": "clave ' + json.dumps(pw)[1:-1] + ' invalida"}'
    assert scanning.SECRET_CORE not in mask(echoed, [pw])


def test_receiver_accepts_a_non_ascii_token_in_the_header(tmp_path: Path) -> None:
    from massiva_frames.receiving import receiver

    token = "tok-ñ-secreto"
    with receiver(tmp_path, token=token) as rc:
        request = (
            b"GET /recepcionsms?id=1&estatus=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"X-Massiva-Token: " + token.encode() + b"\r\nConnection: close\r\n\r\n"
        )
        status, _ = harness.raw_exchange(rc.port, request, 10)
        wrong = request.replace(token.encode(), b"tok-n-secreto")
        refused, _ = harness.raw_exchange(rc.port, wrong, 10)
    assert (status, refused) == (200, 403)


def test_send_where_every_row_is_invalid_returns_the_rows(
    sandbox_server: Any,
) -> None:
    from massiva_frames.sending.campaign import send
    from massiva_frames.wire.client import MassivaClient

    df = pd.DataFrame({"phone": ["no", None], "text": ["a", "b"]}, index=["x", "y"])
    dry = send(df, text="text", dry_run=True, progress=False)
    with MassivaClient(
        sandbox_server.usuario, sandbox_server.clave, sandbox_server.base_url
    ) as client:
        real = send(df, client=client, text="text", progress=False)
    for results in (dry, real):
        assert list(results.index) == ["x", "y"]
        assert (results["state"] == "invalid").all() and results["reason"].notna().all()
    assert len(sandbox_server.requests()) <= 1  # at most the credit check


@pytest.mark.parametrize("column", ["text", "phone"])
def test_a_lone_surrogate_is_a_row_reason_not_a_crash(column: str) -> None:
    # Text decoded with errors="surrogateescape" (read_csv(encoding_errors=...)) keeps
    # lone surrogates: one bad row must not stop the whole frame.
    from massiva_frames.prepare.validation import validate

    values = {"phone": ["04141234567", "04241234567"], "text": ["Hola", "Chao"]}
    values[column][0] += "\udcff"
    df = pd.DataFrame(values, dtype=object)
    out = validate(df, text="text")
    assert out.loc[0, "state"] == "invalid" and pd.notna(out.loc[0, "reason"])
    assert out.loc[1, "state"] == "ready"


def test_a_half_built_client_has_a_repr() -> None:
    # Debuggers, error trackers and verbose tracebacks repr every frame's locals,
    # including the `self` of a constructor that raised.
    import traceback

    from massiva_frames.errors import InputError
    from massiva_frames.wire.client import MassivaClient

    with pytest.raises(InputError) as info:
        MassivaClient("a@b.c", scanning.PASSWORD, "ftp://example.invalid")
    tb = traceback.TracebackException.from_exception(info.value, capture_locals=True)
    assert "self = MassivaClient(usuario='a@b.c', base_url=None" in "".join(tb.format())


def test_send_at_column_with_a_repeated_index_label() -> None:
    # A repeated label would make df.join(results) multiply rows: refused, naming it;
    # with unique labels the results keep the input's index.
    from massiva_frames.errors import InputError
    from massiva_frames.sending.campaign import send

    df = pd.DataFrame(
        {"phone": ["04141234567", "04241234567"], "text": ["a", "b"],
         "cuando": ["2999-01-01 10:00", "2999-01-02 10:00"]},
        index=[7, 7],
    )  # fmt: skip
    with pytest.raises(InputError, match=r"repeats labels \(7\)"):
        send(df, text="text", send_at="cuando", dry_run=True, progress=False)
    df.index = pd.Index([7, 3])
    results = send(df, text="text", send_at="cuando", dry_run=True, progress=False)
    assert list(results.index) == [7, 3]
    assert (results["state"] == "scheduled").all() and results["reason"].notna().all()


@pytest.mark.slow
def test_hardening_scenarios_in_the_table(tmp_path: Path) -> None:
    """The trickling provider and the journal fuzz run as rows of the suite's table."""
    rows = suite.run_scenarios(["trickle", "journal"], replace(QUICK, journal_trials=20))
    assert [f.scenario for f in rows] == ["provider trickling headers", "journal fuzz"]
    for fig in rows:
        assert fig.failing() == [], figures.format_table([fig])
        assert fig.tried > 0
    trickle = rows[0]
    assert trickle.unknown == trickle.tried and trickle.duplicated == 0
