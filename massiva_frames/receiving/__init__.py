"""Delivery and inbound callbacks: a durable receiver and the parquet logs it keeps.

::

    from massiva_frames.receiving import receiver, read_callbacks

    with receiver("callback-logs") as rc:
        print(rc.url)        # register with the provider (docs/protocol.md §2, §3)
        ...
    status = read_callbacks("callback-logs", kind="status")
    inbound = read_callbacks("callback-logs", kind="inbound")
"""

from __future__ import annotations

from .receiver import Receiver, receiver
from .store import CompactionStats, compact, read_callbacks

__all__ = ["CompactionStats", "Receiver", "compact", "read_callbacks", "receiver"]
