"""The send journal: the outbox that records every row before a request and every answer after.

- :mod:`.sqlite` -- the journal on a SQLite file (the embedded default);
- :mod:`.schema` -- its tables and the SQL that reads states back;
- :mod:`.writes` -- the writes of the request loop (in flight, answered).
"""

__all__: list[str] = []
