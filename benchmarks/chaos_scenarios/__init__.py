"""The chaos suite behind ``benchmarks/chaos.py``: one module per scenario, and the harness
they share.

- scenarios: :mod:`.provider` (faulty provider), :mod:`.sender` (killed sender),
  :mod:`.streaming` (killed streamed send), :mod:`.receiver` (killed receiver),
  :mod:`.receivers` (receivers on one directory),
  :mod:`.bad_frames`, :mod:`.bad_xml` and :mod:`.bad_queries` (hostile input),
  :mod:`.leaks` (secrets), :mod:`.postgres` (killed dispatchers sharing a PostgreSQL
  journal, the server restarted);
- harness: :mod:`.figures` (what a scenario counts, its sizes, the table), :mod:`.harness`
  (ports, raw HTTP, CLI subprocesses, the hang watchdog, hypothesis settings),
  :mod:`.scanning` (the passwords and the search for them), :mod:`.campaigns` (the send
  scenarios' campaign and the check of a send against the sandbox);
- :mod:`.suite`: the scenarios by name, running them, the command line.

Its modules import each other relatively; the folder holding this package
(``benchmarks/``) must be on ``sys.path``, as it is when ``benchmarks/chaos.py`` runs.
"""

from __future__ import annotations

__all__: list[str] = []
