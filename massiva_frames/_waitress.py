"""A waitress channel whose event loop does not spin while a task sends its own answer.

waitress reports a channel writable whenever output is pending, but while a task runs
its worker sends that output itself (``write_soon`` flushes at ``send_bytes``, 1 byte,
holding the buffer's lock) and ``handle_write`` sends nothing. ``poll`` then returns at
once and the loop spins, taking the GIL from the worker that must finish (measured:
tens to a hundred idle turns per request in the receiver and the sandbox). The
receiver (:mod:`massiva_frames.receiving.server`) and the sandbox
(:mod:`massiva_frames.sandbox.server`) both serve through :class:`QuietChannel`.
"""

from __future__ import annotations

from waitress.channel import HTTPChannel

__all__ = ["LOOP_FLUSHES", "QuietChannel"]

#: pending output (bytes) a running task leaves to the event loop: a big answer waiting
#: for room in the socket, which the worker would otherwise wait on
LOOP_FLUSHES = 64 * 1024


class QuietChannel(HTTPChannel):
    """An ``HTTPChannel`` not polled for writing while its running task sends its output.

    The loop steps in for what the worker could not send: once the task has ended (it
    pulls the server's trigger then), past :data:`LOOP_FLUSHES` pending bytes, or when
    the channel is to be closed.
    """

    def writable(self) -> bool:
        if (
            self.requests
            and self.total_outbufs_len < LOOP_FLUSHES
            and not (self.will_close or self.close_when_flushed)
        ):
            return False
        return bool(super().writable())
