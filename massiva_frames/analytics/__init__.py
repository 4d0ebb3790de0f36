"""Delivery analytics: results joined with the callback logs, summaries, replies, plots.

- :mod:`.delivery` -- ``attach_delivery``, ``delivery_summary``, ``replies``, ``opt_outs``;
- :mod:`.plots` -- matplotlib figures (matplotlib is imported only there).

Reads results and logs; never talks HTTP.
"""

__all__: list[str] = []
