"""Preparation: from a DataFrame of customers to API-sized batches, vectorised over columns.

- :mod:`.phones` -- phone numbers normalised to the API's 12 digits, or a reason;
- :mod:`.cells` -- phone cells of any kind (ints, Excel floats, objects) as digit text;
- :mod:`.templates` -- templates parsed into fields and filled from columns;
- :mod:`.formatting` -- column values formatted once per distinct value, fixed-point vectorised;
- :mod:`.texts` -- texts as carriers see them: GSM-7/UCS-2, segments, transliteration, checks;
- :mod:`.validation` -- ``validate``: one verdict (state, reason) per row, duplicates, opt-outs;
- :mod:`.reasons` -- the stable reason codes and their messages;
- :mod:`.sizing` -- the planning options resolved into request limits; rows measured against them;
- :mod:`.batching` -- ``plan_batches``: requests that respect the API's limits; ``iter_batches``;
- :mod:`.lower_bound` -- ``minimum_requests``: the fewest requests any plan could use;
- :mod:`.arrow` -- the Arrow plumbing these modules share.

Never talks HTTP; may use the wire protocol's pure parts (URL lengths).
"""

__all__: list[str] = []
