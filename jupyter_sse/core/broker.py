"""The broker: applies publishers' updates and fans them out to subscribers, with resume and conflation.

A subscriber holds no queue. It holds a cursor, the id of the last event it was sent, and a wake-up flag. When
it wakes, it reads from the store what changed after its cursor: the current snapshot of each changed job, the
log lines after the cursor, the jobs removed. So a slow subscriber costs a few bytes and gets the latest state
instead of a backlog of stale ones (conflation); a reconnecting client with ``Last-Event-ID`` is served by the
very same read (resume). Ids are the store's sequence numbers, sent as ``<epoch>.<seq>``, and events go out in
sequence order, so "everything up to the last id I saw" is always a true statement.

A new subscriber gets a bounded first sync instead (``_sync``): the unfinished jobs and the most recently finished
ones, whatever the number of jobs kept, and no removals of jobs it never saw; the rest is in pages (``page_jobs``).
A resume the store cannot serve exactly (an id of another epoch, below the store's horizon, or too far behind)
gets a ``reset`` event, then the same sync.

A server adapter may give a subscription a writer (``set_writer``). While such a subscriber waits, the broker
writes it the new events itself, encoded once for every subscriber at the same cursor: with a thousand
subscribers, waking a task for each change is what costs most (the broadcast path).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import enum
import itertools
import json
import logging
import math
import operator
import re
import time
from collections import deque
from collections.abc import Callable, Container, Iterable
from typing import Any

from ..protocol import EVENT_ID_PATTERN, FINAL_STATES, STATES, TERMINAL_STATES, EventKind
from ._gc import untrack
from .errors import ProtocolError
from .metrics import BrokerMetrics
from .model import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Job,
    JobPage,
    JobUpdate,
    UpdateBatch,
    check_job_id,
    created_key,
    decode_page_cursor,
    encode_page_cursor,
)
from .sse import encode_event, encode_id
from .store import JobEntry, MemoryStore, Store, StoreUnavailable

__all__ = ["MAX_EVENTS_PER_READ", "RESET", "Broker", "Event", "Subscription"]

# ``<epoch>.<seq>``, or a bare seq (ids before epochs: taken as another epoch's). Not str.isdigit(): that accepts
# "²" and other non-ASCII digits.
_EVENT_ID = re.compile(EVENT_ID_PATTERN.strip("^$"))
# A subscription's cursor before its first sync; _RESET: the sync must start with a `reset` event.
_FRESH = -1
_RESET = -2
# A resume that would walk more changed jobs than this is served a reset and a bounded sync instead: it costs the
# server (and the client) less than replaying most of a large history.
_RESUME_LIMIT = 5000
RESET = EventKind.RESET
_WINDOW_PER_PASS = 2.0  # see Broker._timed_wake
# The most events one read hands a subscriber (2 KiB of references); a longer backlog is read in turns.
MAX_EVENTS_PER_READ = 256


class _Item(enum.IntEnum):
    """What one collected item is, before it becomes an event."""

    SNAPSHOT = 0
    LINE = 1
    DROPPED = 2  # retention dropped lines before this seq
    REMOVED = 3
    FINAL = 4  # the final snapshot of a job removed since


_NULLABLE = frozenset({"total", "rate", "error", "kernel_id", "cell_id", "path", "parent"})
_log = logging.getLogger("jupyter_sse")


def _dumps(value: Any) -> str:
    # ASCII-only output: any text a publisher sent (emoji, lone surrogates) becomes valid JSON escapes.
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_JOB_FIELDS = tuple(Job.__dataclass_fields__)
_job_fields = operator.attrgetter(*_JOB_FIELDS)  # one C call: this runs for every update
_STATE_INDEX = _JOB_FIELDS.index("state")


class _Saved:
    """What a change may alter in an entry, kept to put it back if the change cannot be stored."""

    __slots__ = ("appended", "cancel_asked_at", "dropped", "event", "fields", "heard", "last_dropped_seq", "seq")

    def __init__(self, entry: JobEntry) -> None:
        self.fields = _job_fields(entry.job)  # a change replaces fields, it never edits them in place
        self.seq = entry.seq
        self.last_dropped_seq = entry.last_dropped_seq
        self.heard = entry.heard
        self.cancel_asked_at = entry.cancel_asked_at
        self.event = entry.event
        self.appended = 0  # log lines added since
        self.dropped: list[tuple[int, str]] | None = None  # log lines retention let go of since, oldest first

    @property
    def terminal(self) -> bool:
        return self.fields[_STATE_INDEX] in TERMINAL_STATES

    def restore(self, entry: JobEntry) -> None:
        job = entry.job
        for name, value in zip(_JOB_FIELDS, self.fields, strict=True):
            setattr(job, name, value)
        for _ in range(self.appended):
            entry.logs.pop()
        if self.dropped:
            entry.logs.extendleft(reversed(self.dropped))
        entry.seq = self.seq
        entry.last_dropped_seq = self.last_dropped_seq
        entry.heard = self.heard
        entry.cancel_asked_at = self.cancel_asked_at
        entry.event = self.event


class Event:
    """One SSE event; its encoded frame is made once and shared by every subscriber that sends it.

    ``id`` is the store's sequence number; on the wire the id is ``<epoch>.<seq>`` (``event_id``), so that a client
    resuming against another history (another store, a memory store after a restart) is recognised. An event with
    a negative ``id`` carries no ``id:`` line (``reset``); one with no ``name`` is a bare ``id:`` (a sync's mark).
    """

    __slots__ = ("_frame", "data", "epoch", "id", "name")

    def __init__(self, id: int, name: str, data: str, epoch: str = "") -> None:
        self.id = id
        self.name = name
        self.data = data
        self.epoch = epoch
        self._frame: bytes | None = None

    @property
    def event_id(self) -> str | None:
        """The id as sent on the wire (None: the event has none)."""
        if self.id < 0:
            return None
        return f"{self.epoch}.{self.id}" if self.epoch else str(self.id)

    def encode(self) -> bytes:
        if self._frame is None:
            event_id = self.event_id
            if not self.name:
                assert event_id is not None
                self._frame = encode_id(event_id)
            else:
                self._frame = encode_event(self.data, event=self.name, id=event_id)
        return self._frame

    def __repr__(self) -> str:
        return f"Event({self.id}, {self.name!r}, {self.data[:80]!r})"


class Subscription:
    """One subscriber's view of the broker: ``await next_events(timeout)`` until ``done``."""

    def __init__(self, broker: Broker, jobs: frozenset[str] | None, cursor: int, end_with_job: str | None) -> None:
        self._broker = broker
        self.jobs = jobs
        self.cursor = cursor
        self.end_with_job = end_with_job
        self.done = False
        # the rest of a first sync too long for one read is still to come: later reads keep to what it chose
        self.syncing = False
        self._woken = True  # the first call sends the initial snapshot at once
        self._waiter: asyncio.Future[None] | None = None
        self._writer: Callable[[bytes], bool] | None = None
        # Told of every wake-up: a reader of several subscriptions waits on them all without a task each.
        self.on_wake: Callable[[], None] | None = None

    def set_writer(self, writer: Callable[[bytes], bool] | None) -> None:
        """Let the broker write this subscriber's new events itself, while it waits in ``next_events``.

        ``writer(frame)`` gets the encoded events and returns False, without raising, when it cannot take them
        at once (a full socket, a closed stream); the subscriber is then woken to read them the usual way. This
        is the broadcast path: subscribers that are up to date get one frame, encoded once per wake-up, written
        in one pass, with no task switch each (see ``Broker._wake``).
        """
        self._writer = writer

    def wake(self) -> None:
        self._woken = True
        if self._waiter is not None:
            _resolve(self._waiter)
        if self.on_wake is not None:
            self.on_wake()

    @property
    def woken(self) -> bool:
        """There is something to read (or the subscription ended): ``next_events`` returns without waiting."""
        return self._woken

    async def next_events(self, timeout: float) -> list[Event]:
        """The events after the cursor, waiting up to ``timeout`` for some; ``[]`` means none came in time."""
        if self.done:
            return []
        if not self._woken:
            # A bare future and a timer, not asyncio.wait_for(event.wait()): with a thousand subscribers woken
            # per update, wait_for's extra Task per wait is a large share of the server's time.
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self._woken:
                return []
        self._woken = False
        if self.cursor < 0 or self.syncing:
            # A sync is the costly read (hundreds of snapshots): one per turn of the loop, so that a crowd of new
            # subscribers does not keep every other request waiting until all of theirs are made.
            await self._broker._sync_turn()
        if self.done:
            return []
        in_sync = self.jobs is None and (self.cursor < 0 or self.syncing)
        events, ending = self._broker._collect(self)
        if ending:
            self.close()  # after this read: a job's stream ends with its final state and last lines
        self.syncing = False
        if len(events) > MAX_EVENTS_PER_READ and not self.done:
            self.syncing = in_sync
            # A newcomer to a large history: the rest is read again from the cursor once these are sent, so what
            # a subscriber holds between reads stays bounded whatever the number of jobs kept. Events go out in
            # id order, so the cursor still means "everything up to here". (A subscription that ended in this
            # read is one job's stream, a handful of events: it is never cut.)
            del events[MAX_EVENTS_PER_READ:]
            self._woken = True
        if events:
            self.cursor = events[-1].id
            self._broker.metrics.events_delivered += len(events)
        return events

    @property
    def parked(self) -> bool:
        """Waiting in ``next_events`` with nothing unread, a writer set and no end condition: the broker may
        then write its new events itself (``try_write``) instead of waking it."""
        return (
            self._writer is not None
            and self._waiter is not None
            and not self._woken
            and not self.done
            and self.end_with_job is None
        )

    def try_write(self, frame: bytes, last_id: int) -> bool:
        """Hand ``frame`` (the events up to ``last_id``) to the writer; on refusal, wake the subscriber instead.

        The writer refuses, without raising, when it cannot take the frame at once (a socket still sending, a
        closed stream, a frame over its bound); the subscriber then reads from its cursor the usual way, which
        conflates whatever it missed into the latest snapshots.
        """
        writer = self._writer
        try:
            written = writer is not None and writer(frame)
        except Exception:  # a writer must not raise; if it does, this subscriber takes the usual path
            written = False
        if written:
            self.cursor = last_id
        else:
            self.wake()
        return written

    def close(self) -> None:
        if not self.done:
            self.done = True
            self._broker._unsubscribe(self)
            self.wake()


class Broker:
    """Jobs, their updates and their subscribers. Everything runs on one asyncio loop; nothing here blocks."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        log_lines_kept: int = 1000,
        jobs_kept: int = 500,
        owner: str = "",
        clock: Callable[[], float] = time.time,
        wake_delay: float = 0.0,
        sync_finished_jobs: int = 100,
    ) -> None:
        if log_lines_kept < 1 or jobs_kept < 0 or sync_finished_jobs < 0:
            raise ValueError("log_lines_kept must be >= 1, jobs_kept and sync_finished_jobs >= 0")
        self.store: Store = store if store is not None else MemoryStore()
        self.log_lines_kept = log_lines_kept
        self.jobs_kept = jobs_kept
        self.owner = owner
        self._clock = clock
        self.wake_delay = wake_delay
        self.sync_finished_jobs = sync_finished_jobs
        # Indexes for the first sync and for pages of GET jobs, brought up to date from the store's change order
        # when they are read (see _refresh_indexes), so that publishing pays nothing for them.
        self._indexed_seq = -1
        self._unfinished: set[str] = set()
        self._created: dict[str, int] = {}  # created_key of every job
        self._by_created: list[tuple[int, str]] = []  # (created_key, id), ascending; pages read it backwards
        # Per subscriber synced with a bounded sync: the oldest snapshot seq a removal must have for it to be told
        # (older finished jobs were left out of its sync and never changed since: it never saw them).
        self._floors: dict[Subscription, int] = {}
        self._pending_wake: dict[str, JobEntry] = {}
        self._wake_timer: asyncio.TimerHandle | None = None
        self._next_wake = -math.inf  # loop time before which changes wait for the end of the window
        self._all_subscribers: set[Subscription] = set()
        self._subscribers_by_job: dict[str, set[Subscription]] = {}
        self._finished_count = 0
        self.metrics = BrokerMetrics()
        self._listeners: list[Callable[[list[Job]], None]] = []
        now = clock()
        for entry in self.store.entries():  # a store loaded from disk
            self._finished_count += entry.job.terminal
            entry.heard = now  # a running job's publisher gets a whole lease to come back after a restart
        self._sync_granted = False  # a sync has run in this turn of the loop
        self._sync_waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    async def _sync_turn(self) -> None:
        """Wait for this turn of the loop's sync (see ``Subscription.next_events``): at most one per turn."""
        if not self._sync_granted:
            self._sync_granted = True
            asyncio.get_running_loop().call_soon(self._next_sync_turn)
            return
        waiter = asyncio.get_running_loop().create_future()
        self._sync_waiters.append(waiter)
        await waiter

    def _next_sync_turn(self) -> None:
        # The next turn of the loop: hand it to the next waiter still waiting (a closed stream's was cancelled).
        while self._sync_waiters:
            waiter = self._sync_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                asyncio.get_running_loop().call_soon(self._next_sync_turn)
                return
        self._sync_granted = False

    # ---- reading -------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        entry = self.store.get(check_job_id(job_id))
        if entry is None:
            raise ProtocolError(404, "not_found", f"no job {job_id!r}")
        return entry.job

    def list_jobs(self, state: str | None = None) -> list[Job]:
        jobs = [e.job for e in self.store.entries() if state is None or e.job.state == state]
        jobs.sort(key=lambda job: job.created, reverse=True)
        return jobs

    def page_jobs(self, state: str | None = None, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None) -> JobPage:
        """One page of ``GET jobs``: up to ``limit`` jobs, newest first, created before ``cursor`` (a page's
        ``next``); with the number of jobs that match in all, and the cursor of the next page (None: this is the
        last). A cursor names a place in the order (a creation time and an id), not a position, so pages stay
        consistent while jobs come and go, and across a restart."""
        if state is not None and state not in STATES:
            raise ProtocolError(400, "invalid_query", f"state must be one of {', '.join(STATES)}")
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ProtocolError(400, "invalid_query", f"limit must be 1 to {MAX_PAGE_SIZE}")
        self._refresh_indexes()
        order = self._by_created
        end = len(order) if cursor is None else bisect.bisect_left(order, decode_page_cursor(cursor))
        store = self.store
        jobs: list[Job] = []
        i = end - 1
        while i >= 0 and len(jobs) < limit:
            entry = store.get(order[i][1])
            if entry is not None and (state is None or entry.job.state == state):
                jobs.append(entry.job)
            i -= 1
        next_cursor = encode_page_cursor(*order[i + 1]) if i >= 0 and jobs else None
        if state is None:
            total = len(order)
        elif state in TERMINAL_STATES:
            total = sum(1 for entry in store.entries() if entry.job.state == state)
        else:
            total = sum(1 for job_id in self._unfinished if (e := store.get(job_id)) and e.job.state == state)
        return JobPage(jobs, total, next_cursor)

    @property
    def subscriber_count(self) -> int:
        return len(self._all_subscribers) + sum(len(s) for s in self._subscribers_by_job.values())

    def add_listener(self, listener: Callable[[list[Job]], None]) -> None:
        """Call ``listener(jobs)`` after every change, with the jobs it touched (live objects: read them at once).

        It runs inside the change, on the broker's loop: it must be quick and must not block (notifications, the
        event bus and metrics hand their slow work on). An exception it raises is logged and goes no further.
        """
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[list[Job]], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # ---- writing -------------------------------------------------------------------------------------------
    def apply(self, batch: UpdateBatch) -> list[str]:
        """Apply a validated ``POST updates`` body whole, or refuse it whole; return the ids to cancel.

        Refused whole also when it cannot be stored (``StoreUnavailable``, 503): what it changed in memory is
        undone before the error goes out, so a publisher that sends it again finds nothing half done.
        """
        if self.closed:
            # 503, not 4xx: the publisher keeps the update and sends it again to the next server.
            raise ProtocolError(503, "closing", "the server is shutting down; send this again later")
        resent = self._check(batch)
        now = self._clock()
        touched: dict[str, JobEntry] = {}
        saved: dict[str, _Saved | None] = {}  # None: made by this batch
        try:
            for update in batch.jobs:
                if update.id in resent:
                    continue
                seq = self.store.next_seq()  # before any change: it may fail (a durable store reserves ids)
                entry = touched.get(update.id) or self.store.get(update.id)
                if entry is None:
                    job = Job(id=update.id, created=now, updated=now, owner=self.owner)
                    entry = JobEntry(job, 0, self.log_lines_kept)
                    saved.setdefault(update.id, None)
                elif update.id not in saved:
                    saved[update.id] = _Saved(entry)
                self._apply_update(entry, update, now)
                entry.seq = entry.change_seq = seq
                entry.event = None
                self.store.put(entry)
                touched[update.id] = entry
            for logs in batch.logs:
                if logs.job in resent:
                    continue
                entry = touched.get(logs.job) or self.store.get(logs.job)
                assert entry is not None  # _check made sure
                touched[logs.job] = entry
                if not logs.lines:
                    continue
                if logs.job not in saved:
                    saved[logs.job] = _Saved(entry)
                undo = saved[logs.job]
                for line in logs.lines:
                    seq = self.store.next_seq()
                    if len(entry.logs) == entry.logs.maxlen:
                        entry.last_dropped_seq = entry.logs[0][0]
                        if undo is not None:
                            if undo.dropped is None:
                                undo.dropped = []
                            undo.dropped.append(entry.logs[0])
                    entry.logs.append((seq, line))
                    if undo is not None:
                        undo.appended += 1
                    entry.change_seq = seq
                self.store.put(entry)  # moving an entry without a new seq would hide newer changes behind it
            self.store.sync()  # what the answer promises is stored before it goes out
        except StoreUnavailable:
            self._undo(saved)
            raise
        cancel = [e.job.id for e in touched.values() if e.job.cancel_requested and not e.job.terminal]
        # Retention's removals are not this request's change: one that cannot be stored waits for the next.
        with contextlib.suppress(StoreUnavailable):
            self._enforce_retention()
        self.metrics.updates_accepted += 1
        self._notify(touched)
        return cancel

    def _undo(self, saved: dict[str, _Saved | None]) -> None:
        """Put back what a batch that could not be stored changed. Nobody was told of it yet: the entries keep
        their new ``change_seq`` (so the store's order stays right) but not their new snapshot."""
        for job_id, before in saved.items():
            entry = self.store.get(job_id)
            if entry is None:
                continue
            if before is None:
                self._finished_count -= entry.job.terminal
                self.store.discard(job_id)
                continue
            self._finished_count += before.terminal - entry.job.terminal
            before.restore(entry)
            self.store.put(entry)

    def _check(self, batch: UpdateBatch) -> set[str]:
        """Everything that can refuse the batch, checked before anything changes. Returns the finished jobs whose
        very state the batch sends again (its earlier answer was lost): those are left as they are."""
        states: dict[str, str | None] = {}
        stored: dict[str, str | None] = {}
        resent: set[str] = set()
        for update in batch.jobs:
            if update.id not in states:
                entry = self.store.get(update.id)
                states[update.id] = stored[update.id] = entry.job.state if entry else None
            current = states[update.id]
            if current in FINAL_STATES:
                if update.state == current:
                    if stored[update.id] == current:
                        resent.add(update.id)
                    continue
                raise ProtocolError(
                    409,
                    "job_finished",
                    f"job {update.id!r} is {current}; it cannot change any more"
                    + (f" (to {update.state})" if update.state is not None else ""),
                )
            if update.state is not None:
                states[update.id] = update.state
            elif current is None:
                states[update.id] = "running"
        if resent:
            # A batch that sends a finished job's state again is one whose answer was lost: its log lines for
            # that job were stored the first time.
            resent = {j for j in resent if all(u.state == stored[j] for u in batch.jobs if u.id == j)}
        unknown = sorted(
            {logs.job for logs in batch.logs if logs.job not in states and self.store.get(logs.job) is None}
        )
        if unknown:
            raise ProtocolError(404, "not_found", f"logs for unknown jobs: {', '.join(unknown)}")
        return resent

    def _apply_update(self, entry: JobEntry, update: JobUpdate, now: float) -> None:
        job = entry.job
        was_terminal = job.terminal
        previous_state = job.state
        for name in update.model_fields_set:
            if name == "id":
                continue
            value = getattr(update, name)
            if name == "error":
                job.error = value.model_dump() if value is not None else None
            elif value is not None or name in _NULLABLE:
                setattr(job, name, value)
        if job.state == "lost" and update.state is None:
            job.state = "running"  # its publisher came back
            if entry.cancel_asked_at is not None:
                job.cancel_requested = True  # asked (and answered 202) before it was lost: tell it now
        job.updated = now
        entry.heard = now
        if job.terminal:
            if not was_terminal:
                self._finished_count += 1
            if job.state != previous_state:
                job.finished = now  # also lost -> succeeded: the publisher came back to finish
            job.cancel_requested = False
        elif was_terminal:
            job.finished = None
            self._finished_count -= 1
        job.compute_eta()

    def request_cancel(self, job_id: str) -> tuple[Job, bool]:
        """Ask for a job's cancellation; the publisher hears it in its next reply. False if it had ended."""
        entry = self.store.get(check_job_id(job_id))
        if entry is None:
            raise ProtocolError(404, "not_found", f"no job {job_id!r}")
        if entry.job.terminal:
            return entry.job, False
        if not entry.job.cancel_requested:
            seq = self.store.next_seq()
            before = _Saved(entry)
            entry.job.cancel_requested = True
            entry.job.updated = entry.cancel_asked_at = self._clock()
            entry.seq = entry.change_seq = seq
            entry.event = None
            self.store.put(entry)
            try:
                self.store.sync()  # a 202 promises the cancel survives a crash
            except StoreUnavailable:
                before.restore(entry)
                self.store.put(entry)
                raise
            self._notify({entry.job.id: entry})
        return entry.job, True

    def overdue_cancels(self, grace: float) -> list[tuple[str, str | None]]:
        """``(job id, kernel id)`` of jobs still running ``grace`` seconds after their cancel was asked.

        Each job is returned once: the caller escalates (interrupts the kernel) and does not repeat it.
        """
        now = self._clock()
        overdue = []
        for entry in self.unfinished_entries():
            asked = entry.cancel_asked_at
            if asked is not None and not entry.escalated and not entry.job.terminal and now - asked >= grace:
                entry.escalated = True
                # A job submitted to a background thread: interrupting the kernel would hit whatever cell runs in
                # its main thread, not the job. Its publisher passes the cancel on; nothing more to do here.
                if not entry.job.metadata.get("submitted"):
                    overdue.append((entry.job.id, entry.job.kernel_id))
        return overdue

    def unfinished_entries(self) -> list[JobEntry]:
        """The entries of the jobs that have not ended, without a pass over every job kept (there may be 100,000)."""
        self._refresh_indexes()
        store = self.store
        found = (store.get(job_id) for job_id in self._unfinished)
        return [entry for entry in found if entry is not None and not entry.job.terminal]

    def kernels_with_running_jobs(self) -> set[str]:
        return {e.job.kernel_id for e in self.unfinished_entries() if e.job.kernel_id is not None}

    def lose_kernel_jobs(self, kernel_id: str, reason: str) -> list[str]:
        """Mark ``lost`` every unfinished job of a kernel that died, restarted or was shut down."""
        lost = []
        for entry in self.unfinished_entries():
            if entry.job.kernel_id == kernel_id:
                self._lose(entry, reason)
                lost.append(entry.job.id)
        return lost

    def lose_orphans(self, kernels: Container[str], reason: str) -> list[str]:
        """Mark ``lost`` every unfinished job whose kernel is not among ``kernels`` (those this server runs).

        For a server that starts on jobs it kept: their kernels, or the scripts that published them, died with
        the old server or will report again, and then the job becomes running again. Until then a user sees the
        truth (no progress to expect), and a cancel is not promised to a kernel that may never hear it.
        """
        lost = []
        for entry in self.unfinished_entries():
            kernel_id = entry.job.kernel_id
            if kernel_id is None or kernel_id not in kernels:
                self._lose(entry, reason)
                lost.append(entry.job.id)
        return lost

    def _lose(self, entry: JobEntry, reason: str) -> None:
        seq = self.store.next_seq()  # first: if no id can be had, nothing changed
        job = entry.job
        job.state = "lost"
        job.cancel_requested = False  # it has ended; if it comes back, a cancel asked before is asked again
        job.message = reason
        job.finished = job.updated = self._clock()
        job.compute_eta()
        self._finished_count += 1
        entry.seq = entry.change_seq = seq
        entry.event = None
        self.store.put(entry)
        self._notify({entry.job.id: entry})

    def delete(self, job_id: str) -> None:
        entry = self.store.get(check_job_id(job_id))
        if entry is None:
            raise ProtocolError(404, "not_found", f"no job {job_id!r}")
        if not entry.job.terminal:
            raise ProtocolError(409, "job_running", f"job {job_id!r} is {entry.job.state}; cancel it first")
        self.store.sync(removing=(entry.job.id,))  # a 204 promises it stays gone: off the disk first
        self._remove(entry)

    def leases_expired(self, lease: float) -> bool:
        """Whether ``expire_leases(lease)`` would mark a job ``lost`` now: a caller can get the store ready first."""
        now = self._clock()
        return any(self._past_lease(entry, lease, now) for entry in self.unfinished_entries())

    @staticmethod
    def _past_lease(entry: JobEntry, lease: float, now: float) -> bool:
        return entry.job.state in ("running", "pending") and now - entry.heard > lease

    def expire_leases(self, lease: float) -> list[str]:
        """Mark ``lost`` the running jobs whose publisher has been silent for longer than ``lease`` seconds."""
        now = self._clock()
        lost = []
        for entry in self.unfinished_entries():
            if self._past_lease(entry, lease, now):
                self._lose(entry, f"no report from its kernel for {lease:g} s")
                lost.append(entry.job.id)
        return lost

    def _bump(self, entry: JobEntry) -> None:
        entry.seq = entry.change_seq = self.store.next_seq()
        entry.event = None
        self.store.put(entry)
        self._notify({entry.job.id: entry})

    def _remove(self, entry: JobEntry) -> None:
        # The tombstone keeps the final snapshot: a subscriber that had not read it yet still gets the terminal
        # state before the removal (retention may remove a job in the same batch that finished it).
        self.store.remove(entry.job.id, self.store.next_seq(), self._snapshot(entry))  # next_seq may refuse
        if entry.job.terminal:
            self._finished_count -= 1
        self._notify({entry.job.id: entry})

    def _snapshot(self, entry: JobEntry) -> Event:
        if entry.event is None:
            entry.event = event = Event(entry.seq, EventKind.JOB, _dumps(entry.job.to_dict()), self.store.epoch)
            untrack(event)  # kept as long as the job: out of the cycle collector's way too (see JobEntry)
        assert isinstance(entry.event, Event)
        return entry.event

    def _enforce_retention(self) -> None:
        if self._finished_count <= self.jobs_kept:
            return
        finished = sorted((e for e in self.store.entries() if e.job.terminal), key=lambda e: e.job.finished or 0.0)
        for entry in finished[: len(finished) - self.jobs_kept]:
            self._remove(entry)

    # ---- subscribing ---------------------------------------------------------------------------------------
    def subscribe(
        self,
        jobs: Iterable[str] | None = None,
        last_event_id: str | None = None,
        *,
        end_with_job: str | None = None,
    ) -> Subscription:
        """A subscription to every job, or to ``jobs``; resumes after ``last_event_id`` when given.

        ``end_with_job``: the subscription is done once that job's terminal state (or removal) was sent.
        """
        if self.closed:
            raise ProtocolError(503, "closing", "the server is shutting down")
        job_set = frozenset(check_job_id(j) for j in jobs) if jobs is not None else None
        cursor = self._cursor(last_event_id)
        sub = Subscription(self, job_set, cursor, end_with_job)
        if job_set is None:
            self._all_subscribers.add(sub)
        else:
            for job_id in job_set:
                self._subscribers_by_job.setdefault(job_id, set()).add(sub)
        return sub

    def _cursor(self, last_event_id: str | None) -> int:
        """The cursor a ``Last-Event-ID`` resumes from, or _FRESH (none given) or _RESET (a history that is gone)."""
        if last_event_id is None or last_event_id == "":
            return _FRESH
        found = _EVENT_ID.fullmatch(last_event_id)
        if found is None:
            raise ProtocolError(400, "invalid_query", "Last-Event-ID must be an id this server sent")
        epoch, seq_text = found.groups()
        store = self.store
        if epoch != store.epoch:
            return _RESET  # another store's, a memory store's before a restart, or a bare id from before epochs
        seq = int(seq_text)
        if seq < store.horizon or seq > store.current_seq:
            return _RESET  # removals it would need are forgotten; or an id this history never sent
        return seq

    def event_id(self, seq: int) -> str:
        """The wire id of sequence number ``seq`` in this broker's history (what ``Last-Event-ID`` takes)."""
        return f"{self.store.epoch}.{seq}"

    def _unsubscribe(self, sub: Subscription) -> None:
        self._floors.pop(sub, None)
        if sub.jobs is None:
            self._all_subscribers.discard(sub)
            return
        for job_id in sub.jobs:
            subs = self._subscribers_by_job.get(job_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers_by_job[job_id]

    def _notify(self, touched: dict[str, JobEntry]) -> None:
        # Every change ends here, once: the moment for the store to write what must not wait.
        with self.metrics.timing_store_write():
            self.store.commit()
        if self._listeners:
            jobs = [entry.job for entry in touched.values()]
            for listener in list(self._listeners):
                try:
                    listener(jobs)
                except Exception:
                    _log.warning("jupyter-sse: a job listener failed", exc_info=True)
        self._schedule_wake(touched)

    def _schedule_wake(self, touched: dict[str, JobEntry]) -> None:
        if self.wake_delay > 0:
            # Wake subscribers once per window, not once per change: with many subscribers and many publishers,
            # a pass over every subscriber for every request is what saturates the server. A subscriber reads
            # every change since its cursor anyway, so one pass serves all the changes of the window. The first
            # change after a quiet window goes out at once; the ones that follow within it wait for its end.
            if self._wake_timer is not None:
                self._pending_wake.update(touched)
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a plain synchronous caller): wake at once
                pass
            else:
                wait = self._next_wake - loop.time()
                if wait > 0:
                    self._pending_wake.update(touched)
                    self._wake_timer = loop.call_later(wait, self._wake_pending)
                    return
                self._timed_wake(touched, loop)
                return
        self._wake(touched)

    def changed_elsewhere(self, touched: dict[str, JobEntry]) -> None:
        """Another server sharing this broker's store changed (or removed) these jobs, and the store already holds
        the change: wake this server's subscribers. Listeners are not told (the server that made the change
        told its own), and nothing is written."""
        self._finished_count = sum(1 for entry in self.store.entries() if entry.job.terminal)
        # In windows, as this server's own changes: a busy replica hears of every other's changes one by one.
        self._schedule_wake(touched)

    def _wake_pending(self) -> None:
        pending, self._pending_wake = self._pending_wake, {}
        self._wake_timer = None
        self._timed_wake(pending, asyncio.get_running_loop())

    def _timed_wake(self, touched: dict[str, JobEntry], loop: asyncio.AbstractEventLoop) -> None:
        started = loop.time()
        self._wake(touched)
        ended = loop.time()
        # The window after a pass is as long as the pass took, times _WINDOW_PER_PASS, and at most wake_delay.
        # A cheap pass (few subscribers) can run again almost at once, so their latency stays low; a costly one
        # (thousands) waits longer, so passes never take more than about a third of the server's time; and
        # wake_delay caps the latency any window adds.
        self._next_wake = ended + min(self.wake_delay, _WINDOW_PER_PASS * (ended - started))

    def _wake(self, touched: dict[str, JobEntry]) -> None:
        # Subscribers that wait and read the same jobs from the same cursor (in a steady stream: all of them) get
        # the same events: collect and encode them once per (jobs, cursor) for this pass. The store does not change
        # during it, so the cache is only valid here.
        frames: dict[tuple[frozenset[str] | None, int, int], tuple[bytes, int, int, int] | None] = {}
        for sub in list(self._all_subscribers):
            self._deliver(sub, frames)
        if self._subscribers_by_job:
            woken: set[Subscription] = set()
            for job_id in touched:
                woken.update(self._subscribers_by_job.get(job_id, ()))
            for sub in woken:
                self._deliver(sub, frames)

    def _deliver(
        self,
        sub: Subscription,
        frames: dict[tuple[frozenset[str] | None, int, int], tuple[bytes, int, int, int] | None],
    ) -> None:
        # Only a parked subscriber is written to here; any other is woken and reads from its cursor, which covers
        # a stream that ends, lags or resumes.
        if not sub.parked:
            sub.wake()
            return
        # Subscribers synced at different times differ only in which removals they are told of (_collect); one
        # not synced yet is told of none, and takes the floor of the sync it is written.
        fresh = sub.cursor < 0
        floor = 0 if fresh else self._floors.get(sub, 0)
        if floor and next(iter(self.store.removed_since(sub.cursor)), None) is None:
            floor = 0
        key = (sub.jobs, sub.cursor, floor)
        if key not in frames:
            try:
                events, ending = self._collect(sub)
                if ending:  # never for a parked subscriber (it has no end condition); its own read ends it
                    raise RuntimeError("a parked subscription cannot end")
            except Exception:
                # Whatever went wrong belongs to this subscriber's read, not to the request that woke everyone:
                # it meets it again in next_events, and the other subscribers are still served.
                sub.wake()
                return
            # (frame, its last id, its events, the removal floor of a first sync)
            frames[key] = (
                (b"".join(event.encode() for event in events), events[-1].id, len(events), self._floors.get(sub, 0))
                if events
                else None
            )
        found = frames[key]
        if found is not None and sub.try_write(found[0], found[1]):  # None: none of its jobs changed
            self.metrics.events_delivered += found[2]
            if fresh:
                self._floors[sub] = found[3]

    def close(self) -> None:
        """End every subscription (server shutdown): their streams finish instead of hanging."""
        self.closed = True
        if self._wake_timer is not None:
            self._wake_timer.cancel()
            self._wake_timer = None
        for sub in list(self._all_subscribers):
            sub.close()
        for subs in list(self._subscribers_by_job.values()):
            for sub in list(subs):
                sub.close()

    def _collect(self, sub: Subscription) -> tuple[list[Event], bool]:
        """The events ``sub`` has not had yet, and whether its stream ends after them (its job's final state).

        Reads the store only: the caller moves the cursor and ends the subscription.
        """
        cursor = sub.cursor
        if cursor < 0:
            return self._sync(sub, reset=cursor == _RESET)
        if sub.jobs is None and sub.syncing:
            # The rest of a sync read in turns, not a resume from its middle: the unfinished jobs and the finished
            # ones from its floor on (older finished ones it left out are not pulled in, and no reset follows).
            sync_floor = self._floors.get(sub, 0)
            entries = [e for e in self.store.changed_since(cursor) if not e.job.terminal or e.seq >= sync_floor]
        elif sub.jobs is None:
            entries = list(itertools.islice(self.store.changed_since(cursor), _RESUME_LIMIT + 1))
            if len(entries) > _RESUME_LIMIT:
                return self._sync(sub, reset=True)
        else:
            found = (self.store.get(job_id) for job_id in sub.jobs)
            entries = [e for e in found if e is not None and e.change_seq > cursor]
        items = self._items(entries, cursor)
        floor = self._floors.get(sub, 0)
        for seq, job_id, final in self.store.removed_since(cursor):
            if isinstance(final, Event) and final.id < floor:
                continue  # a finished job its sync left out, unchanged since: never sent, so never removed
            if sub.jobs is None or job_id in sub.jobs:
                if isinstance(final, Event) and final.id > cursor:
                    items.append((final.id, _Item.FINAL, job_id, final))
                items.append((seq, _Item.REMOVED, job_id, None))
        seq = self.store.current_seq
        if not items:
            # the end of a sync read in turns: a bare id, as a sync in one read ends (see _sync)
            return ([Event(seq, "", "", self.store.epoch)] if sub.syncing and cursor < seq else []), False
        items.sort(key=lambda item: item[0])
        events, ending = self._events(sub, items)
        if sub.syncing and events and events[-1].id < seq:
            events.append(Event(seq, "", "", self.store.epoch))
        return events, ending

    @staticmethod
    def _items(entries: Iterable[JobEntry], cursor: int) -> list[tuple[int, int, str, Any]]:
        # (seq, kind, job id, payload): one item per snapshot, log line, drop mark and removal, in seq order.
        items: list[tuple[int, int, str, Any]] = []
        for entry in entries:
            job_id = entry.job.id
            if entry.seq > cursor:
                items.append((entry.seq, _Item.SNAPSHOT, job_id, entry))
            for seq, line in reversed(entry.logs):
                if seq <= cursor:
                    break
                items.append((seq, _Item.LINE, job_id, line))
            if entry.last_dropped_seq > cursor:
                items.append((entry.last_dropped_seq, _Item.DROPPED, job_id, None))
        return items

    def _sync(self, sub: Subscription, *, reset: bool) -> tuple[list[Event], bool]:
        """A subscriber's first events: what it needs to know now, bounded whatever the history's size.

        Every job of a filtered subscription (they are named, so few), with its retained lines and its removal if it
        was removed; for every job: the unfinished ones and the ``sync_finished_jobs`` most recently changed
        finished ones, and no removals (it never saw the removed jobs). ``reset`` puts a ``reset`` event first. It
        ends at the store's current seq (a bare ``id:`` if the last event is older), so a reconnect resumes from
        there and never hears of older jobs the sync left out, nor of their removal. (A filtered subscription's
        sync leaves nothing out, so a resume from any of its events is exact.)
        """
        store = self.store
        seq = store.current_seq
        if sub.jobs is not None:
            cursor, sub.cursor = sub.cursor, 0
            try:
                events, ending = self._collect(sub)
            finally:
                sub.cursor = cursor
        else:
            self._refresh_indexes()
            chosen: dict[str, JobEntry] = {}
            for job_id in self._unfinished:
                entry = store.get(job_id)
                if entry is not None:
                    chosen[job_id] = entry
            wanted = self.sync_finished_jobs
            # Removals the subscriber is told of from now on: of jobs it was sent, or that changed after this sync.
            # All finished jobs sent: every one; none: only those changed later; some: from the oldest sent.
            floor = seq + 1
            if wanted:
                floor = 0
                oldest = seq + 1
                for entry in store.changed_since(0):
                    if entry.job.terminal:
                        chosen[entry.job.id] = entry
                        oldest = min(oldest, entry.seq)
                        wanted -= 1
                        if not wanted:
                            floor = oldest  # there may be older finished jobs, left out
                            break
            self._floors[sub] = floor
            items = self._items(chosen.values(), 0)
            items.sort(key=lambda item: item[0])
            events, ending = self._events(sub, items) if items else ([], False)
        if reset:
            events.insert(0, Event(-1, RESET, _dumps({"epoch": store.epoch}), store.epoch))
        if sub.jobs is None and events and events[-1].id < seq:
            events.append(Event(seq, "", "", store.epoch))
        return events, ending

    def _refresh_indexes(self) -> None:
        """Bring the unfinished-job set and the by-creation list up to date with the store.

        From the changes and removals since the last refresh (newest first, stopping at it), or from every entry
        when the removals since are no longer all known (the store's horizon moved past the last refresh).
        """
        store = self.store
        seq = store.current_seq
        if seq == self._indexed_seq:
            return
        if self._indexed_seq < store.horizon or self._indexed_seq > seq:
            entries = list(store.entries())
            # Refilled in place: a long-lived server freezes its start-up objects out of the cycle collector's
            # passes (see server/_memory.py), these among them; new containers of 100,000 items would be visited
            # by every full pass again.
            self._unfinished.clear()
            self._unfinished.update(e.job.id for e in entries if not e.job.terminal)
            self._created.clear()
            self._created.update((e.job.id, created_key(e.job.created)) for e in entries)
            self._by_created[:] = sorted((created, job_id) for job_id, created in self._created.items())
        else:
            for entry in store.changed_since(self._indexed_seq):
                job = entry.job
                if job.terminal:
                    self._unfinished.discard(job.id)
                else:
                    self._unfinished.add(job.id)
                created = self._created.get(job.id)
                key = created_key(job.created)
                if created != key:
                    if created is not None:  # removed and made again under the same id
                        self._unlist(job.id, created)
                    self._created[job.id] = key
                    bisect.insort(self._by_created, (key, job.id))
            for _seq, job_id, _final in store.removed_since(self._indexed_seq):
                if store.get(job_id) is None:
                    self._unfinished.discard(job_id)
                    created = self._created.pop(job_id, None)
                    if created is not None:
                        self._unlist(job_id, created)
        self._indexed_seq = seq

    def _unlist(self, job_id: str, created: int) -> None:
        index = bisect.bisect_left(self._by_created, (created, job_id))
        if index < len(self._by_created) and self._by_created[index] == (created, job_id):
            del self._by_created[index]

    def _events(self, sub: Subscription, items: list[tuple[int, int, str, Any]]) -> tuple[list[Event], bool]:
        """Items (in seq order) as events: a snapshot each, a run of one job's lines as one ``log``; and whether
        they hold the end of the subscription's job (its final state or its removal)."""
        events: list[Event] = []
        epoch = self.store.epoch
        ending = False
        i = 0
        while i < len(items):
            seq, kind, job_id, payload = items[i]
            if kind == _Item.SNAPSHOT:
                entry: JobEntry = payload
                events.append(self._snapshot(entry))
                if job_id == sub.end_with_job and entry.job.terminal:
                    ending = True  # after the rest of this read: the final log lines come with it
                i += 1
            elif kind == _Item.FINAL:
                events.append(payload)
                if job_id == sub.end_with_job:
                    ending = True
                i += 1
            elif kind == _Item.REMOVED:
                events.append(Event(seq, EventKind.REMOVED, _dumps({"job": job_id}), epoch))
                if job_id == sub.end_with_job:
                    ending = True
                i += 1
            else:
                # A run of lines (and drop marks) of one job with nothing else between: one `log` event.
                lines: list[str] = []
                dropped = False
                last = seq
                while i < len(items) and items[i][1] in (_Item.LINE, _Item.DROPPED) and items[i][2] == job_id:
                    last = items[i][0]
                    if items[i][1] == _Item.LINE:
                        lines.append(items[i][3])
                    else:
                        dropped = True
                    i += 1
                body: dict[str, Any] = {"job": job_id, "lines": lines}
                if dropped:
                    body["dropped"] = True
                events.append(Event(last, EventKind.LOG, _dumps(body), epoch))
        return events, ending
