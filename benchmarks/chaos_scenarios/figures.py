"""What a chaos scenario measured, how big it runs, and the one table the suite prints.

Every scenario returns :class:`Figures`: what it tried and what it lost, duplicated,
crashed, hung or leaked (:data:`MUST_BE_ZERO`, all must be 0). :func:`format_table` prints
them::

    scenario | tried | sent once | unknown | lost | duplicated | crashes | hangs | leaks | s

:data:`FULL` is the size of ``benchmarks/chaos.py``, :data:`QUICK` that of ``--quick`` and
tests/test_chaos.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["FULL", "Figures", "MUST_BE_ZERO", "QUICK", "Sizes", "format_table"]


MUST_BE_ZERO = ("lost", "duplicated", "crashes", "hangs", "leaks")


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is."""

    provider_rows: int = 20_000
    provider_max_phones: int = 50
    sender_rows: int = 8_000
    sender_kills: int = 20
    streaming_rows: int = 1_000_000
    streaming_kills: int = 10
    streaming_chunk_rows: int = 100_000
    #: seconds after the first credit moves within which a streamed send is killed
    streaming_kill_window: float = 0.5
    receiver_kills: int = 10
    receivers_kills: int = 12
    frame_examples: int = 3_000
    xml_examples: int = 6_000
    query_examples: int = 4_000
    example_timeout: float = 10.0
    network_quick: bool = False
    journal_trials: int = 1_000
    journal_rows: int = 600
    full_disk_rows: int = 2_000
    postgres_rows: int = 20_000
    postgres_kills: int = 20


FULL = Sizes()
QUICK = Sizes(
    provider_rows=2_000,
    provider_max_phones=25,
    sender_rows=1_500,
    sender_kills=4,
    streaming_rows=3_000,
    streaming_kills=3,
    streaming_chunk_rows=500,
    streaming_kill_window=0.1,  # a few 500-row chunks: each kill leaves work for the next
    receiver_kills=3,
    receivers_kills=4,
    frame_examples=300,
    xml_examples=800,
    query_examples=500,
    network_quick=True,
    journal_trials=100,
    journal_rows=300,
    full_disk_rows=1_000,
    postgres_rows=2_000,
    postgres_kills=4,
)


@dataclass
class Figures:
    """What a scenario tried and what it lost, duplicated, crashed, hung or leaked.

    ``None`` means the figure does not apply to the scenario. ``notes`` are extra
    evidence lines; ``problems`` say what each non-zero must-be-zero figure counted.
    """

    scenario: str
    tried: int = 0
    sent_once: int | None = None
    unknown: int | None = None
    lost: int | None = None
    duplicated: int | None = None
    crashes: int | None = None
    hangs: int | None = None
    leaks: int | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: machine-readable evidence that the scenario did what it says (kills, faults...)
    evidence: dict[str, int] = field(default_factory=dict)

    def failing(self) -> list[str]:
        """The must-be-zero figures that are not 0."""
        return [name for name in MUST_BE_ZERO if (getattr(self, name) or 0) != 0]

    def problem(self, text: str, limit: int = 20) -> None:
        """Record one example of what went wrong (bounded)."""
        if len(self.problems) < limit:
            self.problems.append(text[:500])

    def lines(self) -> list[str]:
        """The figures, notes and problems as printable lines."""
        names = ("tried", "sent_once", "unknown", "lost", "duplicated", "crashes", "hangs")
        cells = [f"{n.replace('_', ' ')} {getattr(self, n)}" for n in names]
        out = [f"{self.scenario}: " + ", ".join(cells) + f", {self.seconds:.1f} s"]
        out += [f"  {note}" for note in self.notes]
        out += [f"  PROBLEM {p}" for p in self.problems]
        return out


def format_table(figures: Sequence[Figures]) -> str:
    """The figures as a fixed-width table, notes and problems below it."""
    head = [
        "scenario",
        "tried",
        "sent once",
        "unknown",
        "lost",
        "duplicated",
        "crashes",
        "hangs",
        "leaks",
        "seconds",
    ]

    def cell(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    rows = [
        [
            f.scenario,
            f"{f.tried:,}",
            cell(f.sent_once),
            cell(f.unknown),
            cell(f.lost),
            cell(f.duplicated),
            cell(f.crashes),
            cell(f.hangs),
            cell(f.leaks),
            f"{f.seconds:.1f}",
        ]
        for f in figures
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return " | ".join([first, *rest])

    out = [line(head), "-+-".join("-" * w for w in widths), *(line(r) for r in rows)]
    for f in figures:
        for note in f.notes:
            out.append(f"  {f.scenario}: {note}")
        for problem in f.problems:
            out.append(f"  {f.scenario}: PROBLEM {problem}")
    return "\n".join(out)
