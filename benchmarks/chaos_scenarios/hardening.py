"""The hardening scenarios as rows of the chaos table: a receiver under a connection flood,
a provider that trickles its headers, a damaged send journal, a full disk under the sender.

The scenarios themselves live in ``benchmarks/scenarios_network.py`` and
``benchmarks/scenarios_journal.py`` (each also a command of its own, with more detail);
this module runs them at the suite's sizes and turns their figures into :class:`Figures`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import scenarios_journal
import scenarios_network

from .figures import Figures, Sizes

__all__ = [
    "scenario_full_disk",
    "scenario_journal_fuzz",
    "scenario_receiver_flood",
    "scenario_trickling_provider",
]


def _network_sizes(sizes: Sizes) -> scenarios_network.Sizes:
    return scenarios_network.QUICK if sizes.network_quick else scenarios_network.FULL


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def scenario_receiver_flood(sizes: Sizes, workdir: Path, *, seed: int = 0) -> Figures:
    """Real callbacks while hundreds of idle and header-trickling connections are open."""
    net = _network_sizes(sizes)
    fig = Figures("receiver under a connection flood")
    for label, run_sizes in (
        ("over its connection limit", net),
        ("under it", replace(net, connection_limit=net.idle + net.slow + 100)),
    ):
        flood = scenarios_network.receiver_flood(run_sizes, workdir)
        fig.tried += flood.callbacks
        fig.sent_once = (fig.sent_once or 0) + flood.stored
        fig.lost = (fig.lost or 0) + flood.lost + (flood.callbacks - flood.answered)
        fig.duplicated = (fig.duplicated or 0) + flood.duplicated
        fig.hangs = (fig.hangs or 0) + (flood.callbacks - flood.answered)
        fig.seconds += flood.seconds
        fig.notes.append(
            f"{label}: {flood.idle} idle + {flood.slow} slow connections, limit "
            f"{flood.connection_limit}; callback latency p50 {_ms(flood.p50)}, p99 "
            f"{_ms(flood.p99)} (quiet: p50 {_ms(flood.p50_quiet)}, p99 "
            f"{_ms(flood.p99_quiet)}); {flood.closed_by_server:,} attack connections closed"
        )
        if flood.answered < flood.callbacks:
            fig.problem(f"{label}: {flood.callbacks - flood.answered} callbacks unanswered")
    fig.evidence["callbacks"] = fig.tried
    return fig


def scenario_trickling_provider(sizes: Sizes, workdir: Path, *, seed: int = 0) -> Figures:
    """A send through a provider that trickles its response headers: bounded, rows unknown."""
    trickle = scenarios_network.trickling_provider(_network_sizes(sizes), workdir)
    fig = Figures(
        "provider trickling headers",
        tried=trickle.rows,
        sent_once=trickle.accepted,
        unknown=trickle.unknown,
        lost=trickle.rows - trickle.unknown - trickle.accepted,
        duplicated=trickle.resent,
        hangs=trickle.hangs,
        seconds=trickle.seconds,
    )
    fig.notes.append(
        f"{trickle.requests} requests with a {trickle.deadline:g} s deadline: the send ended "
        f"in {trickle.seconds:.1f} s (bound {trickle.bound:.1f} s); "
        f"{trickle.deadline_threads_left} watchdog threads left; a re-run sent "
        f"{trickle.resent} requests"
    )
    return fig


def scenario_journal_fuzz(sizes: Sizes, workdir: Path, *, seed: int = 0) -> Figures:
    """Damaged copies of a send journal (random bytes, the key index), each re-run."""
    return scenarios_journal.journal_fuzz(
        sizes.journal_trials, workdir, rows=sizes.journal_rows, seed=seed
    )


def scenario_full_disk(sizes: Sizes, workdir: Path, *, seed: int = 0) -> Figures:
    """A send whose journal's disk fills mid-run, then the same send with room."""
    return scenarios_journal.full_disk(workdir, rows=sizes.full_disk_rows, seed=seed)
