"""Preparation: from a DataFrame of customers to API-sized batches, vectorised over columns.

- :mod:`.phones` -- phone numbers normalised to the API's 12 digits, or a reason;
- :mod:`.texts` -- texts and templates: rendering, GSM-7/UCS-2, segments, transliteration;
- :mod:`.validation` -- ``validate``: one verdict (state, reason) per row, duplicates, opt-outs;
- :mod:`.batching` -- ``plan_batches``: requests that respect the API's limits.

Never talks HTTP; may use the wire protocol's pure parts (URL lengths).
"""

__all__: list[str] = []
