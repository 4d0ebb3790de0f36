"""Engines: validation run by Spark or Dask, partition by partition, never collected.

- :mod:`.spark` -- ``validate(sdf, ...)`` (``mapInPandas`` per partition, duplicates by a
  window over the key) and ``estimate(sdf)``; needs ``pip install 'massiva-frames[spark]'``;
- :mod:`.dask` -- ``validate(ddf, ...)`` (``map_partitions``, duplicates by a shuffle on
  the key) and ``estimate(ddf)``; needs ``pip install 'massiva-frames[dask]'``;
- :mod:`.common` -- what both share: the position of each row, the options checked.

Both call the pandas checks of :mod:`massiva_frames.prepare.partitions` on every
partition, so the rules are :func:`massiva_frames.validate`'s own. Import them
explicitly (``from massiva_frames.engines import spark``): the top-level package does not
import Spark or Dask.
"""

__all__: list[str] = []
