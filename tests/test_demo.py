"""``massiva-frames demo``: the end-to-end run, as a subprocess, into a temporary folder."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from massiva_frames.faces.demo import load_sample_campaign, run_demo, sample_path
from massiva_frames.receiving import read_callbacks

ROOT = Path(__file__).resolve().parents[1]


def test_packaged_sample_matches_data_samples() -> None:
    # the package ships a copy so an installed (non-editable) demo finds it
    assert sample_path().read_bytes() == (ROOT / "data" / "samples" / "campaign.csv").read_bytes()
    frame = load_sample_campaign()
    assert len(frame) >= 100
    assert {"telefono", "nombre"} <= set(frame.columns)
    assert len(load_sample_campaign(7)) == 7


@pytest.mark.slow
def test_demo_command(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    for name in ("MASSIVA_USUARIO", "MASSIVA_CLAVE", "MASSIVA_BASE_URL"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-m", "massiva_frames.faces.cli", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = proc.stdout
    for section in (
        "== Validation ==",
        "== Send ==",
        "== Delivery (",
        "== Replies and opt-outs ==",
        "== Files ==",
    ):
        assert section in printed
    sections = printed.split("\n== ")
    assert all(len(s.strip().splitlines()) >= 2 for s in sections), printed
    assert "Movistar" in printed and "total" in printed
    assert "Traceback" not in proc.stderr

    results = pd.read_parquet(out / "results.parquet")
    campaign = load_sample_campaign()
    assert len(results) == len(campaign)
    states = set(results["state"].astype(str))
    assert {"delivered", "failed", "invalid"} <= states
    assert "accepted" not in states  # every accepted message got its final status
    status = read_callbacks(out / "callback-logs", kind="status")
    # rejected entries carry ids too (docs/protocol.md §1.5), but only accepted ones get a callback
    sent = results.loc[results["state"].isin(["delivered", "failed"]), "message_id"]
    assert set(status["message_id"]) == set(sent)
    assert (out / "delivery.png").read_bytes().startswith(b"\x89PNG")
    # the password of the demo account never shows
    assert "clave" not in printed.lower()


@pytest.mark.slow
def test_demo_reruns_fresh_into_the_same_folder(tmp_path: Path) -> None:
    first = run_demo(tmp_path, rows=15, stream=io.StringIO())
    stream = io.StringIO()
    second = run_demo(tmp_path, rows=25, stream=stream)
    # a second run never inherits the first one's journal or logs
    assert len(second.results) == 25
    states = second.delivery["state"].astype(str)
    assert not (states == "accepted").any()
    assert int(states.isin(["delivered", "failed"]).sum()) > int(
        first.delivery["state"].astype(str).isin(["delivered", "failed"]).sum()
    )
    status = read_callbacks(tmp_path / "callback-logs", kind="status")
    accepted = second.results.loc[second.results["state"] == "accepted", "message_id"]
    assert set(status["message_id"]) == set(accepted)
    assert "== Delivery (" in stream.getvalue()


def test_demo_rejects_a_bad_row_count(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "massiva_frames.faces.cli",
            "demo",
            "--rows",
            "0",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--rows" in proc.stderr
