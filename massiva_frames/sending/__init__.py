"""Sending: validate -> plan -> journal -> wire -> results, idempotent and resumable.

- :mod:`.campaign` -- ``send`` and ``dispatch``, the public verbs;
- :mod:`.cancelling` -- ``cancel``: pending messages taken out of the outbox, never sent;
- :mod:`.resending` -- follow-up sends: the rows whose delivery failed, as a new attempt;
- :mod:`.due` -- what both share: the due messages timed, checked against credits, planned, sent;
- :mod:`.rows` -- the rows of a send: stable keys, stored values, outcomes mapped back;
- :mod:`.loop` -- the request loop: threads, pacing, outcome of each answer;
- :mod:`.results` -- the results frame's columns, states and dtypes;
- :mod:`.scheduling` -- ``send_at``, quiet-hour windows, rate limits;
- :mod:`.journal` -- the outbox that makes "never sent twice" true.

Never imports the faces (widgets, CLI) nor the receiving side.
"""

__all__: list[str] = []
