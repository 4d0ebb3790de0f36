"""Scenario ``provider``: rows sent through a sandbox that injects, by ratio, 500s, 503s,
429s, resets, accept-then-hang, truncated XML and HTML pages; then re-run on the same
journal.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .campaigns import campaign, send_figures
from .figures import Figures, Sizes
from .harness import (
    USUARIO,
    quiet,
)
from .scanning import PASSWORD

__all__ = ["scenario_faulty_provider"]


def scenario_faulty_provider(sizes: Sizes, workdir: Path, *, seed: int = 0) -> Figures:
    """``sizes.provider_rows`` rows through a sandbox injecting faults by ratio, then the
    same call re-run on the same journal until no row is left to send.

    Faults (share of requests): 500 after processing, 502 before, 503 without and with
    Retry-After, 429, connection reset after and before processing, accept-then-hang,
    truncated XML, an HTML page. ``resend_unknown`` stays False; afterwards a
    ``resend_unknown=True`` run shows the duplicates the user would opt into.
    """
    from massiva_frames.sandbox import sandbox
    from massiva_frames.sending.campaign import send
    from massiva_frames.wire.client import MassivaClient

    fig = Figures("faulty provider", crashes=0)
    start = time.perf_counter()
    df = campaign(sizes.provider_rows, seed=seed)
    journal = workdir / "provider.db"
    faults: list[tuple[str, float, dict[str, Any]]] = [
        ("http500", 0.02, {}), ("http502", 0.01, {"before": True}), ("http503", 0.02, {}),
        ("http503", 0.03, {"retry_after": 0}), ("http429", 0.08, {"retry_after": 0}),
        ("reset", 0.02, {}), ("reset", 0.01, {"before": True}), ("hang", 0.01, {}),
        ("truncated", 0.02, {}), ("html", 0.02, {}),
    ]  # fmt: skip
    options = dict(
        text="mensaje", phone="telefono", journal=journal, progress=False, concurrency=4,
        max_phones=sizes.provider_max_phones,
    )  # fmt: skip
    runs = 0
    with (
        quiet("massiva_frames.sending.loop", "massiva_frames.sending.campaign"),
        sandbox(usuario=USUARIO, clave=PASSWORD, credits=10**7, hang_seconds=5, seed=seed) as sb,
    ):
        for i, (name, ratio, opts) in enumerate(faults):
            sb.inject(name, ratio=ratio, seed=seed * 100 + i, **opts)
        # max_refusals=1: some 429s exhaust the waits, their rows stay scheduled
        # (not_sent_rate_limited) and the re-runs send them.
        client = MassivaClient(
            USUARIO, PASSWORD, sb.base_url, timeout=(1.0, 2.0), max_refusals=1, backoff_factor=0.01
        )
        with client:
            results = send(df, client=client, **options)  # type: ignore[arg-type]
            runs += 1
            first = results["state"].astype("string").value_counts().to_dict()
            fault_counts = sb.requests()["fault"].value_counts().to_dict()
            sb.clear_faults()
            while (results["state"] == "scheduled").any() and runs < 6:
                results = send(df, client=client, **options)  # type: ignore[arg-type]
                runs += 1
            send_figures(fig, df, results, sb.messages())
            # Evidence the duplicate count can see duplicates: the user opts in.
            before = len(sb.messages())
            again = send(df, client=client, resend_unknown=True, **options)  # type: ignore[arg-type]
            record = sb.messages()
            dups = int((record.groupby(["phone", "text"]).size() > 1).sum())
    fig.evidence.update(
        faults_fired=int(sum(fault_counts.values())),
        runs=runs,
        resent=len(record) - before,
        duplicates_when_resending=dups,
    )
    fig.notes.insert(0, f"first run: {first}; faults fired: {fault_counts}; {runs} runs")
    fig.notes.append(
        f"then resend_unknown=True: {len(record) - before} messages resent, {dups} (phone, "
        f"text) now accepted twice (expected: the unknown rows the provider had accepted); "
        f"states after: {again['state'].astype('string').value_counts().to_dict()}"
    )
    fig.seconds = time.perf_counter() - start
    return fig
