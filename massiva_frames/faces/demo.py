"""The end-to-end demo: sandbox, receiver, validate, send, callbacks, report.

:func:`run_demo` starts the sandbox and a callback receiver on free loopback ports,
validates and sends the sample campaign shipped with the package, waits for the status
callbacks and prints the validation summary, the send summary and the delivery report.
It writes ``results.parquet``, the callback logs and ``delivery.png`` into its output
folder. ``massiva-frames demo`` is its command-line face.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

import pandas as pd

__all__ = ["SAMPLE_TEMPLATE", "DemoReport", "load_sample_campaign", "run_demo", "sample_path"]

#: the message every customer of the sample campaign gets (fields are CSV columns)
SAMPLE_TEMPLATE = "Hola {nombre}, tu saldo es {saldo}. Paga antes del {vence} y evita recargos."
#: the sample's phone column
SAMPLE_PHONE = "telefono"
#: what the demo writes into its output folder (and removes there before a new run)
OUTPUTS = ("results.parquet", "delivery.png", "journal.sqlite", "callback-logs")


def sample_path() -> Path:
    """Path of the sample campaign CSV shipped with the package.

    Examples
    --------
    >>> sample_path().name
    'campaign.csv'
    """
    ref = resources.files("massiva_frames") / "data" / "campaign.csv"
    return Path(str(ref))


def load_sample_campaign(rows: int | None = None) -> pd.DataFrame:
    """The sample campaign as a DataFrame (phones kept as the strings they were typed).

    Parameters
    ----------
    rows : int, optional
        Keep only the first ``rows`` rows.

    Examples
    --------
    >>> df = load_sample_campaign(5)
    >>> len(df)
    5
    """
    frame = pd.read_csv(sample_path(), dtype=str, keep_default_na=False)
    return frame.head(rows) if rows is not None else frame


@dataclass
class DemoReport:
    """What a demo run produced (the frames it printed and the files it wrote)."""

    out: Path
    validated: pd.DataFrame
    results: pd.DataFrame
    delivery: pd.DataFrame
    summary: pd.DataFrame
    replies: pd.DataFrame
    opt_outs: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def _section(stream: IO[str], title: str) -> None:
    stream.write(f"\n== {title} ==\n")


def _frame_text(frame: pd.DataFrame, **options: Any) -> str:
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        text: str = frame.to_string(**options)
    return text


def _short(text: object, width: int = 50) -> str:
    text = "" if text is None or text is pd.NA else str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _fresh(out: Path) -> None:
    """Remove what an earlier demo run wrote (only those names), so runs never mix."""
    for name in OUTPUTS:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            # SQLite's -wal/-shm files and the journal's .lock go with it
            for extra in (target, *out.glob(f"{name}-*"), *out.glob(f"{name}.lock")):
                if extra.is_file():
                    extra.unlink()


def run_demo(
    out: str | os.PathLike[str] = "massiva-demo",
    *,
    rows: int | None = None,
    stream: IO[str] | None = None,
    callback_timeout: float = 30.0,
    seed: int = 7,
) -> DemoReport:
    """Run the whole flow against the sandbox and print a report.

    Parameters
    ----------
    out : str or path, default "massiva-demo"
        Output folder (created). Files of an earlier demo run there are replaced.
    rows : int, optional
        Send only the first ``rows`` rows of the sample campaign.
    stream : file, optional
        Where the report is printed (default: standard output).
    callback_timeout : float
        Seconds to wait for the status callbacks.
    seed : int
        Seed of the sandbox's simulated failures and replies.

    Returns
    -------
    DemoReport

    Examples
    --------
    >>> report = run_demo("massiva-demo", rows=20, stream=io.StringIO())  # doctest: +SKIP
    >>> report.results["state"].value_counts()  # doctest: +SKIP
    """
    from ..analytics.delivery import attach_delivery
    from ..analytics.inbound import opt_outs, replies
    from ..analytics.summary import delivery_summary
    from ..prepare.validation import failure_cases, validate, validation_summary
    from ..receiving import read_callbacks, receiver
    from ..sandbox import sandbox
    from ..sending.campaign import send
    from ..wire.client import MassivaClient

    write = (stream or sys.stdout).write
    started = time.monotonic()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    _fresh(folder)
    logdir = folder / "callback-logs"
    campaign = load_sample_campaign(rows)
    report_stream = stream or sys.stdout

    with (
        receiver(logdir) as rc,
        sandbox(
            credits=5000,
            status_url=rc.url,
            inbound_url=rc.url,
            # 1 to 4 s from send to delivery, spread per message (the callbacks' clock has
            # one-second resolution, docs/protocol.md §2)
            callback_delay=1.0,
            callback_jitter=3.0,
            fail_ratio=0.1,
            reply_ratio=0.15,
            seed=seed,
        ) as sb,
        MassivaClient(sb.usuario, sb.clave, sb.base_url) as client,
    ):
        write("massiva-frames demo\n")
        write(f"  sandbox   {sb.base_url}\n  receiver  {rc.url}\n")
        write(f"  campaign  {len(campaign)} rows from {sample_path().name}\n")
        write(f"  template  {SAMPLE_TEMPLATE!r}\n")

        # -- validation -------------------------------------------------------------
        validated = validate(campaign, phone=SAMPLE_PHONE, template=SAMPLE_TEMPLATE)
        _section(report_stream, "Validation")
        summary_table = validation_summary(validated)
        summary_table["message"] = summary_table["message"].map(_short)
        write(_frame_text(summary_table, index=False) + "\n")
        failures = failure_cases(validated)
        if len(failures):
            write("\nsome rows that will not be sent:\n")
            shown = failures.drop_duplicates("reason").head(8)
            write(_frame_text(shown[["index", "reason", "value"]], index=False) + "\n")

        # -- send ---------------------------------------------------------------------
        credits_before = client.credits()
        t0 = time.monotonic()
        results = send(
            campaign,
            client=client,
            phone=SAMPLE_PHONE,
            template=SAMPLE_TEMPLATE,
            journal=folder / "journal.sqlite",
            campaign="demo",
            progress=False,
        )
        send_seconds = time.monotonic() - t0
        credits_after = client.credits()
        _section(report_stream, "Send")
        states = results["state"].value_counts()
        write(_frame_text(states[states > 0].rename("rows").to_frame()) + "\n")
        figures = results.attrs.get("send", {})
        requests = figures.get("requests", int(results["batch"].dropna().nunique()))
        write(
            f"\n{requests} request(s) in {send_seconds:.2f} s; "
            f"credits {credits_before} -> {credits_after}\n"
        )
        refused = results[results["state"] == "rejected"]
        if len(refused):
            write(f"refused by the provider ({len(refused)}):\n")
            write(_frame_text(refused[["phone", "reason"]].head(5)) + "\n")

        # -- callbacks ----------------------------------------------------------------
        accepted = int((results["state"] == "accepted").sum())
        t0 = time.monotonic()
        sb.wait_callbacks(timeout=callback_timeout)
        status = _wait_for_log(
            lambda: read_callbacks(logdir, kind="status"),
            accepted,
            timeout=max(1.0, callback_timeout - (time.monotonic() - t0)),
        )
        waited = time.monotonic() - t0

    delivery = attach_delivery(results, status)
    summary = delivery_summary(delivery, by="operator", total=True)
    summary = summary[summary["sent"] > 0]
    _section(report_stream, f"Delivery ({len(status)} status callbacks in {waited:.1f} s)")
    columns = ["sent", "delivered", "failed", "pending", "delivery_rate", "median_latency_s"]
    write(_frame_text(summary[columns], float_format=lambda v: f"{v:.2f}") + "\n")

    inbound = read_callbacks(logdir, kind="inbound")
    got_replies = replies(delivery, inbound)
    got_opt_outs = opt_outs(inbound)
    _section(report_stream, "Replies and opt-outs")
    write(f"{len(inbound)} inbound message(s), {len(got_replies)} attributed to a send; ")
    write(f"{len(got_opt_outs)} opt-out(s)\n")
    if len(got_opt_outs):
        write(_frame_text(got_opt_outs[["phone", "keyword", "text"]].head(5), index=False) + "\n")

    files = _write_outputs(folder, delivery)
    _section(report_stream, "Files")
    for path in (*files.values(), logdir, folder / "journal.sqlite"):
        write(f"{path}\n")
    seconds = time.monotonic() - started
    write(f"\ndone in {seconds:.1f} s\n")
    return DemoReport(
        out=folder,
        validated=validated,
        results=results,
        delivery=delivery,
        summary=summary,
        replies=got_replies,
        opt_outs=got_opt_outs,
        files={**files, "logs": logdir},
        seconds=seconds,
    )


def _wait_for_log(
    read: Callable[[], pd.DataFrame], expected: int, *, timeout: float
) -> pd.DataFrame:
    """Read the status log until it covers ``expected`` messages (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        log = read()
        if log["message_id"].nunique() >= expected or time.monotonic() >= deadline:
            return log
        time.sleep(0.1)


def _write_outputs(folder: Path, delivery: pd.DataFrame) -> dict[str, Path]:
    files = {"results": folder / "results.parquet", "plot": folder / "delivery.png"}
    delivery.to_parquet(files["results"])
    # a pyplot-free Figure: no GUI backend is involved
    from ..analytics.plots import delivery_report_figure

    figure = delivery_report_figure(delivery, title="massiva-frames demo: delivery")
    figure.savefig(files["plot"], dpi=90)
    return files
