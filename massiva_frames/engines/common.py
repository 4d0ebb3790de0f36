"""What the Spark and Dask adapters share: row positions and the options they accept.

Duplicates keep the first occurrence in the input's order, so each row carries its
position through the engine: ``(partition number << POSITION_BITS) + row in partition``,
a 64-bit integer that orders rows as the input does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InputError

__all__ = ["DUPLICATE_COLUMN", "POSITION_BITS", "POSITION_COLUMN", "check_engine_options"]

#: The helper column holding each row's position (dropped from the result).
POSITION_COLUMN = "__massiva_position"
#: The helper column flagging duplicates (dropped from the result).
DUPLICATE_COLUMN = "__massiva_duplicate"
#: Room for 2**40 rows per partition and 2**23 partitions.
POSITION_BITS = 40


def check_engine_options(columns: list[str], options: Mapping[str, Any]) -> None:
    """Refuse a frame with a helper column's name, and a ``df`` among the options."""
    for name in (POSITION_COLUMN, DUPLICATE_COLUMN):
        if name in columns:
            raise InputError(f"df: column {name!r} is reserved by the engine adapters")
    if "df" in options:
        raise InputError("df: give the engine frame as the first argument")
