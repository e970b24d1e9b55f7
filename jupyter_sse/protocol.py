"""The wire rules of protocol v1 that every part shares (docs/protocol.md). Standard library only: the kernel side,
the core, both servers and the client import it without pulling in anything else.
"""

from __future__ import annotations

import enum

__all__ = ["EventKind"]


class EventKind(str, enum.Enum):
    """The names of the SSE events a stream carries. Clients ignore names they do not know."""

    JOB = "job"  # data: the whole Job
    LOG = "log"  # data: {"job", "lines"[, "dropped": true]}
    REMOVED = "removed"  # data: {"job"}
    RESET = "reset"  # data: {"epoch"}: forget what you know, a full sync follows

    def __str__(self) -> str:  # the name on the wire, in f-strings too (Python 3.12 formats enums with str())
        return self.value
