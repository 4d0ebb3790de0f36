"""Chaos suite: the reliability and security guarantees (docs/architecture.md) as figures.

Each scenario tries something hostile and counts what was lost, duplicated, crashed, hung
or leaked; those figures must all be 0. One table is printed:

    scenario | tried | sent once | unknown | lost | duplicated | crashes | hangs | leaks | s

1. ``provider``: rows sent through a sandbox that injects, by ratio, 500s, 503s, resets,
   accept-then-hang, truncated XML and HTML pages; then re-run on the same journal.
2. ``sender``: the send run as a subprocess, SIGKILLed at random moments and restarted
   on the same journal until it finishes.
3. ``receiver``: the callback receiver (``massiva-frames receive``) SIGKILLed and
   restarted while the sandbox and a load generator post callbacks at it.
4. ``input``: hypothesis-generated DataFrames into ``validate``/``send(dry_run=True)``,
   XML variants into the response parser, raw query strings into a live receiver.
5. ``secrets``: a run with failures of every kind, scanned for the password.
6. ``streaming``: a streamed send of a parquet dataset run as a subprocess, SIGKILLed
   while it sends and restarted on the same journal until it finishes.
7. ``postgres``: four dispatcher processes on one PostgreSQL journal, SIGKILLed at random
   moments and restarted, the database server restarted mid-send (skipped without
   PostgreSQL's server binaries).

    python benchmarks/chaos.py [--scenario NAME ...] [--quick] [--seed N]

``--quick`` runs the bounded sizes the test suite uses (tests/test_chaos.py). The exit
code is 1 when a must-be-zero figure is not 0. ``--worker send`` is the subprocess of the
killed-sender scenario, ``--worker stream`` that of the streaming one, ``--worker
dispatch`` that of the PostgreSQL one.

This file is the command only: each scenario is a module of ``benchmarks/chaos_scenarios/``
(``provider``, ``sender``, ``streaming``, ``receiver``, ``bad_frames``/``bad_xml``/
``bad_queries`` for ``input``, ``leaks`` for ``secrets``, ``postgres``), beside the harness
they share (``figures``: the figures and the table; ``harness``: processes, sockets, the
watchdog; ``scanning``: the search for the password; ``campaigns``: the send scenarios'
campaign and check; ``suite``: the scenarios by name and this command line).
"""

from __future__ import annotations

import sys

# Run as a script, this file's folder is first on sys.path: chaos_scenarios imports.
from chaos_scenarios.suite import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
