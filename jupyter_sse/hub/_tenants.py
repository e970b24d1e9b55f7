"""One broker per user: how the hub keeps users' jobs apart.

Why a broker each rather than one broker with an owner check: job ids are the publisher's, so two users may
well pick the same one, and ids must be per user (bob publishing alice's id makes his own job). With a broker
per user, a user's ids, streams, cancels, deletes, retention and resume positions are separate by construction:
no route can reach another user's job by forgetting a check. Only an admin crosses brokers, explicitly: the
list merges them, and a stream subscribes to each (and to those made later).

Event ids stay comparable across brokers: their stores share one sequence and one epoch, so an admin's merged
stream is in one order and its Last-Event-ID means the same to every broker. A user's store made later has
missed nothing before it was made: its horizon is where the shared history began, so resuming an admin's
stream never resets because a user appeared. With replicas on Redis, ids reach a hub in order per user only, so
a merged stream over several brokers passes events on only up to the watermark the hub's Redis reader keeps
(``advance``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..core import Broker, JobPage, MemoryStore, ProtocolError
from ..core.broker import Event, Subscription
from ..core.model import created_key, encode_page_cursor

__all__ = ["MergedSubscription", "Tenants", "merge_pages"]

_HELD_MAX = 10_000  # events an admin's merged stream holds back for the watermark before it ends instead


class _Sequence:
    def __init__(self, start: int) -> None:
        self.start = start
        self.value = start
        self.epoch = MemoryStore().epoch


class _SharedSeqStore(MemoryStore):
    """A memory store whose sequence numbers come from a counter shared by every user's store."""

    def __init__(self, seq: _Sequence) -> None:
        super().__init__()
        self._shared = seq
        self._horizon = seq.start

    def next_seq(self) -> int:
        self._shared.value += 1
        return self._shared.value

    @property
    def current_seq(self) -> int:
        return self._shared.value

    @property
    def epoch(self) -> str:
        return self._shared.epoch


def merge_pages(pages: list[JobPage], limit: int) -> JobPage:
    """One page over several users' pages of the same query: the newest ``limit`` of them all. A cursor is a
    place in the order (creation time, then id), which means the same in every user's list."""
    jobs = sorted(
        (job for page in pages for job in page.jobs), key=lambda job: (created_key(job.created), job.id), reverse=True
    )
    more = len(jobs) > limit or any(page.next is not None for page in pages)
    jobs = jobs[:limit]
    last = jobs[-1] if jobs else None
    next_cursor = encode_page_cursor(created_key(last.created), last.id) if more and last is not None else None
    return JobPage(jobs, sum(page.total for page in pages), next_cursor)


class Tenants:
    """The brokers by owner, made on first use. ``on_new(broker)`` runs for each new one (metrics, notify).
    ``make_store(owner)``: the store of a new user's broker (default: a memory store on the shared sequence)."""

    def __init__(
        self,
        make: Callable[[Any, str], Broker],
        default_owner: str,
        make_store: Callable[[str], MemoryStore] | None = None,
    ) -> None:
        self._make = make
        self._make_store = make_store
        self._seq: _Sequence | None = None
        self._brokers: dict[str, Broker] = {}
        self._merged: set[MergedSubscription] = set()
        self.on_new: list[Callable[[Broker], None]] = []
        self.on_merge: list[Callable[[], None]] = []  # a merged stream opened (it may need a fresh watermark)
        self.default_owner = default_owner
        self.closed = False
        # With stores shared through Redis (``_shared``), the id up to which every change is known here: above
        # it, a change with a smaller id may still arrive, so admins' merged streams hold events back until
        # it passes them. None: ids arrive in order (one process), nothing is held.
        self.watermark: int | None = None

    def store(self) -> MemoryStore:
        """A store for a new broker, on the shared sequence."""
        if self._seq is None:
            self._seq = _Sequence(MemoryStore().current_seq)
        return _SharedSeqStore(self._seq)

    def get(self, owner: str, *, create: bool = True) -> Broker | None:
        broker = self._brokers.get(owner)
        if broker is None and create:
            if self.closed:
                raise ProtocolError(503, "closing", "the server is shutting down")
            store = self._make_store(owner) if self._make_store is not None else self.store()
            broker = self._brokers[owner] = self._make(store, owner)
            for hook in self.on_new:
                hook(broker)
            for merged in list(self._merged):
                merged.add(broker)
        return broker

    def __iter__(self) -> Iterator[Broker]:
        return iter(list(self._brokers.values()))

    def owners(self) -> list[str]:
        return list(self._brokers)

    def find(self, job_id: str, owner: str | None) -> Broker:
        """The broker holding ``job_id`` for an admin: the owner's if given, else the one broker that has it."""
        if owner is not None:
            broker = self._brokers.get(owner)
            if broker is None:
                raise ProtocolError(404, "not_found", f"no job {job_id!r} of {owner!r}")
            broker.get(job_id)
            return broker
        found = [b for b in self._brokers.values() if b.store.get(job_id) is not None]
        if not found:
            raise ProtocolError(404, "not_found", f"no job {job_id!r}")
        if len(found) > 1:
            owners = sorted(b.owner for b in found)
            raise ProtocolError(409, "ambiguous_job", f"job {job_id!r} exists for several users {owners}: add ?owner=")
        return found[0]

    def subscribe_all(
        self, jobs: Iterable[str] | None, last_event_id: str | None, end_with_job: str | None = None
    ) -> MergedSubscription:
        if self.closed:
            raise ProtocolError(503, "closing", "the server is shutting down")
        job_list = list(jobs) if jobs is not None else None
        merged = MergedSubscription(self, job_list, last_event_id)
        for broker in self:
            merged.add(broker)
        self._merged.add(merged)
        for hook in self.on_merge:
            hook()
        return merged

    @property
    def merging(self) -> bool:
        """Whether an admin's merged stream is open, and so needs ``advance``."""
        return bool(self._merged)

    def advance(self, watermark: int) -> None:
        """Every change with an id up to ``watermark`` is known here now: merged streams may pass them on."""
        if self.watermark is None or watermark > self.watermark:
            self.watermark = watermark
            for merged in list(self._merged):
                if merged.holding:
                    merged.wake()

    def _forget(self, merged: MergedSubscription) -> None:
        self._merged.discard(merged)

    def close(self) -> None:
        self.closed = True
        for broker in self:
            broker.close()
        for merged in list(self._merged):
            merged.close()


class MergedSubscription:
    """An admin's subscription to every user's broker, with the same ``next_events``/``done``/``close`` as one."""

    def __init__(self, tenants: Tenants, jobs: list[str] | None, last_event_id: str | None) -> None:
        self._tenants = tenants
        self._jobs = jobs
        self._last_event_id = last_event_id
        self._subs: list[Subscription] = []
        self._added: asyncio.Future[None] | None = None
        self._writer: Callable[[bytes], bool] | None = None
        self._held: list[Event] = []  # read from the brokers, above the watermark: not to be sent yet
        self.done = False

    def add(self, broker: Broker) -> None:
        if self.done:
            return
        sub = broker.subscribe(self._jobs, self._last_event_id)
        sub.on_wake = self._woken
        self._subs.append(sub)
        if len(self._subs) == 2:
            # Two brokers write in their own order, not in one id order: the broadcast path is for one only.
            self._subs[0].set_writer(None)
            self._subs[0].wake()  # out of a wait on the first alone (see next_events)
        if self._added is not None:
            _resolve(self._added)

    def set_writer(self, writer: Callable[[bytes], bool] | None) -> None:
        """The broadcast path (``Subscription.set_writer``), while this stream reads a single broker."""
        self._writer = writer
        if len(self._subs) == 1:
            self._subs[0].set_writer(writer)

    async def next_events(self, timeout: float) -> list[Event]:
        if self.done:
            return []
        if len(self._subs) == 1:
            # The common case (one user, or the first of many): that broker's subscription as it is, without a
            # task per wait, and with the broadcast path. A broker added meanwhile wakes it (see add).
            first = await self._subs[0].next_events(timeout)
            if self._subs[0].done and len(self._subs) == 1:
                self.close()
            return first
        # Several brokers: one future for them all, resolved by any of them waking (on_wake), by a broker added or
        # by the watermark moving, rather than a task per subscription per wait (with many subscribers, most of
        # the hub's time). With a watermark (replicas on Redis), only events up to it go out: a change with a
        # smaller id may still arrive from another hub, and passing a larger id first would let a client that
        # resumes from it skip that change. The rest waits here for the mark to move.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.done:
            if len(self._held) > _HELD_MAX:
                # The mark is stuck (Redis away): rather than hold more, end the stream; the client resumes
                # from its Last-Event-ID, which is still exact.
                self.close()
                break
            if self._held and (ready := await self._ready()):
                return ready
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            if self._held or not any(sub.woken for sub in self._subs if not sub.done):
                waiter = self._added = loop.create_future()
                timer = loop.call_later(remaining, _resolve, waiter)
                try:
                    await waiter
                finally:
                    timer.cancel()
                    self._added = None
                if self._held:
                    continue  # what the brokers got meanwhile, _ready reads once the mark allows
            # Everything ready, read in one id order: one read leaves no gap behind the Last-Event-ID.
            for sub in list(self._subs):
                if not sub.done and sub.woken:
                    self._held.extend(await sub.next_events(0.0))
            self._held.sort(key=lambda event: event.id)
            if self._tenants.watermark is None:  # one process: ids are in order already
                ready, self._held = self._held, []
                return ready
        return []

    async def _ready(self) -> list[Event]:
        """The held events up to the watermark, after reading everything the brokers have below it."""
        mark = self._tenants.watermark
        if mark is None:
            ready, self._held = self._held, []
            return ready
        if self._held[0].id > mark:
            return []
        for sub in list(self._subs):  # every event up to the mark that a broker has but has not woken us for yet
            if not sub.done:
                sub.wake()
                self._held.extend(await sub.next_events(0.0))
                if sub.woken:  # a first sync too long for one read: the rest must come before what is above
                    mark = min(mark, sub.cursor)
        self._held.sort(key=lambda event: event.id)
        cut = next((i for i, event in enumerate(self._held) if event.id > mark), len(self._held))
        ready = self._held[:cut]
        del self._held[:cut]
        return ready

    @property
    def holding(self) -> bool:
        """Whether events wait here for the watermark."""
        return bool(self._held)

    def wake(self) -> None:
        """Look again: the tenants' watermark moved."""
        if self._added is not None:
            _resolve(self._added)

    def _woken(self) -> None:
        if self._added is not None:
            _resolve(self._added)

    def close(self) -> None:
        if not self.done:
            self.done = True
            for sub in self._subs:
                sub.close()
            self._tenants._forget(self)
            if self._added is not None:
                _resolve(self._added)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
