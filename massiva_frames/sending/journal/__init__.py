"""The send journal: the outbox that records every row before a request and every answer after.

- :mod:`.backend` -- what a journal backend must provide (the storage seam) and its clock;
- :mod:`.sqlite` -- ``Journal``, the journal on a SQLite file (the embedded default): its
  tables, runs, the request loop's batches, recovery, ``results_from_journal``;
- :mod:`.connection` -- opening a SQLite journal (pragmas, schema version), its lock, commits;
- :mod:`.outbox` -- its rows and messages: written before any request, pending, read back;
- :mod:`.schema` -- its tables and the SQL that reads states back;
- :mod:`.writes` -- the writes of the request loop (in flight, answered);
- :mod:`.postgres` -- ``PostgresJournal``, the journal on PostgreSQL, shared by many
  workers (``postgresql://`` URLs), and copies between journals; beside it
  :mod:`.postgres_url` (the URL and its parameters), :mod:`.postgres_connection`
  (connecting, versions, transactions, reconnecting), :mod:`.postgres_claims` (workers,
  leases, claims, recovery), :mod:`.postgres_outbox` (rows, messages, results) and
  :mod:`.postgres_schema` (its tables and SQL);
- :mod:`.transfer` -- copying every table between the two backends.
"""

__all__: list[str] = []
