"""Delivery analytics: results joined with the callback logs, summaries, replies, plots.

- :mod:`.delivery` -- ``attach_delivery``: each message's final status joined to the results;
- :mod:`.summary` -- ``delivery_summary``, ``operator_of``: counts and rates per group;
- :mod:`.inbound` -- ``replies``, ``opt_outs``: what customers text back;
- :mod:`.plots` -- matplotlib figures (matplotlib is imported only there);
- :mod:`.shapes` -- the shapes they share: states, UTC timestamps, phones, logs.

Reads results and logs; never talks HTTP.
"""

__all__: list[str] = []
