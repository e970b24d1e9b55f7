"""Where jobs live: a small store interface and the in-memory store.

The broker owns the rules (sequence numbers, retention, events); a store keeps the entries and hands them back
in the order they last changed, which is what makes a resume cheap: a subscriber that is behind walks back from
the newest change until it reaches what it already has.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import Protocol

from ._gc import untrack
from .errors import ProtocolError
from .model import Job

__all__ = ["JobEntry", "MemoryStore", "Store", "StoreUnavailable"]


class StoreUnavailable(ProtocolError):
    """A change could not be stored (a full disk, a failing file): 503, so publishers send it again later.

    Whoever raises it has changed nothing, or undoes what it changed before passing it on.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(503, "storage_unavailable", detail)


class JobEntry:
    """A job, its retained log lines, and the sequence numbers that say when each part changed.

    The entry, its job, its deque and its cached event are left out of the cycle collector (``untrack``): a
    hundred thousand kept jobs made each full pass stop the server for 100-200 ms. That is sound only while they
    hold plain data (strings, numbers, JSON-like containers), never a reference to anything that could lead back.
    """

    __slots__ = (
        "cancel_asked_at",
        "change_seq",
        "escalated",
        "event",
        "heard",
        "job",
        "last_dropped_seq",
        "logs",
        "seq",
    )

    def __init__(self, job: Job, seq: int, log_lines_kept: int) -> None:
        self.job = job
        self.seq = seq  # the snapshot's sequence number: its event id
        self.change_seq = seq  # the latest of seq and any log line's
        self.logs: deque[tuple[int, str]] = deque(maxlen=max(log_lines_kept, 0))
        self.last_dropped_seq = 0  # the newest log line that retention dropped
        self.event: object | None = None  # the broker's cached `job` event, shared by every subscriber
        self.heard = job.updated  # when its publisher last reported, for the lease
        self.cancel_asked_at: float | None = None  # when a cancel was asked, to escalate if the loop ignores it
        self.escalated = False
        untrack(self, job, self.logs)


class Store(Protocol):
    """What the broker needs from a store. A persistent store implements the same calls."""

    def next_seq(self) -> int:
        """A new sequence number, greater than every one handed out before (also across restarts)."""

    @property
    def current_seq(self) -> int: ...

    @property
    def epoch(self) -> str:
        """Names this store's history (``[A-Za-z0-9]``): an id from another epoch (another store, or a memory store
        before a restart) cannot be resumed from."""

    @property
    def horizon(self) -> int:
        """The oldest sequence number a subscriber can resume from and still learn everything that happened since
        (changes and removals). A cursor below it, or from another epoch, needs a full sync."""

    def get(self, job_id: str) -> JobEntry | None: ...

    def put(self, entry: JobEntry) -> None:
        """Store a new or changed entry; it becomes the most recently changed."""

    def remove(self, job_id: str, seq: int, final: object = None) -> None:
        """Forget a job, leaving a tombstone at ``seq`` (with its ``final`` snapshot event) so subscribers that
        are behind hear of it. A durable store writes the removal with its next ``sync``; a removal that must
        be durable before an answer is passed to ``sync(removing=...)`` first."""

    def changed_since(self, seq: int) -> Iterator[JobEntry]:
        """Entries whose ``change_seq`` is greater than ``seq``, newest change first."""

    def removed_since(self, seq: int) -> Iterator[tuple[int, str, object]]:
        """Tombstones ``(seq, job_id, final)`` newer than ``seq``, newest first."""

    def entries(self) -> Iterator[JobEntry]: ...

    def discard(self, job_id: str) -> None:
        """Forget an entry that nobody was told of (a creation undone because it could not be stored): no
        tombstone."""

    def flush(self) -> None:
        """Write pending changes to durable storage, if the store has any."""

    def sync(self, *, removing: Iterable[str] = ()) -> None:
        """Write now what an answer promises (creations, state changes, cancels, log lines, removals), or raise
        ``StoreUnavailable``; what could not be written stays pending. Progress alone may wait for ``flush``.
        ``removing``: jobs about to be removed, taken off durable storage in the same transaction, so that a
        removal is stored before the job leaves memory."""

    def commit(self) -> None:
        """The end of one change: ``sync`` at best, never raising (what failed stays pending for the next
        ``sync`` or ``flush``). Called once per change, however many jobs it touched."""

    def close(self) -> None: ...

    def __len__(self) -> int: ...


class MemoryStore:
    """Everything in memory: lost when the server stops."""

    def __init__(self, *, tombstones_kept: int = 2_000) -> None:
        # Start from the clock in microseconds, so the ids of a restarted server are greater than the old
        # server's: a client resuming with an old Last-Event-ID then gets every job again, not nothing.
        self._seq = time.time_ns() // 1000
        self._entries: OrderedDict[str, JobEntry] = OrderedDict()
        self._tombstones: deque[tuple[int, str, object]] = deque(maxlen=tombstones_kept)
        self._epoch = secrets.token_hex(4)
        self._horizon = self._seq

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def current_seq(self) -> int:
        return self._seq

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def horizon(self) -> int:
        return self._horizon

    def get(self, job_id: str) -> JobEntry | None:
        return self._entries.get(job_id)

    def put(self, entry: JobEntry) -> None:
        self._entries[entry.job.id] = entry
        self._entries.move_to_end(entry.job.id)

    def remove(self, job_id: str, seq: int, final: object = None) -> None:
        if self._entries.pop(job_id, None) is not None:
            tombstones = self._tombstones
            if tombstones.maxlen is not None and len(tombstones) == tombstones.maxlen:
                # the oldest removal is forgotten: a cursor before it could no longer hear of it
                self._horizon = max(self._horizon, tombstones[0][0] if tombstones.maxlen else seq)
            tombstones.append((seq, job_id, final))

    def changed_since(self, seq: int) -> Iterator[JobEntry]:
        for entry in reversed(self._entries.values()):
            if entry.change_seq <= seq:
                return
            yield entry

    def removed_since(self, seq: int) -> Iterator[tuple[int, str, object]]:
        for tombstone in reversed(self._tombstones):
            if tombstone[0] <= seq:
                return
            yield tombstone

    def entries(self) -> Iterator[JobEntry]:
        return iter(list(self._entries.values()))

    def discard(self, job_id: str) -> None:
        self._entries.pop(job_id, None)

    def flush(self) -> None:
        """Nothing to write: memory is all there is."""

    def sync(self, *, removing: Iterable[str] = ()) -> None:
        """Nothing to write."""

    def commit(self) -> None:
        """Nothing to write."""

    def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        return len(self._entries)
