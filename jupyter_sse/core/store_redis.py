"""Jobs in Redis, so that any number of hub processes on one Redis act as one hub.

Each process keeps every entry in memory, as ``MemoryStore`` does, and reads only from there; Redis holds the
truth that all of them share:

- ``{prefix}jobs``: a hash of every job's latest snapshot (with its sequence numbers), ``{prefix}log:{id}`` its
  retained log lines; a process that starts loads them.
- ``{prefix}events``: a Redis Stream with one entry per change (a snapshot and its new log lines, or a removal
  with the job's final snapshot), capped at ``stream_kept`` entries. Every process follows it and applies the
  other processes' changes to its memory, then wakes its own subscribers (``on_remote``).
- ``{prefix}seq``: the counter every event id comes from (reserved in blocks), so ids are global: a client that
  resumes with ``Last-Event-ID`` on another process resumes from the same history. ``{prefix}epoch`` names it.
  Several stores (a hub's users') may share both under ``shared_prefix`` while keeping the rest apart: the
  counter only ever grows, whoever moves it.
- ``{prefix}lock``: held by a process from the first id of a change until that change is written (with a
  timeout, for a process that dies holding it; the others wait for it meanwhile). It makes the stream's order
  the ids' order: a process takes it, reads the stream up to its end (so it knows every change with a smaller
  id), then hands out ids and writes. Without it, a change with id 100 could reach another process after one
  with id 101, and a subscriber already at 101 would never be sent it.

What an answer promises (a new job, a change of state, a cancel, log lines, a removal) is written before the
answer; progress alone up to ``_BATCH_WINDOW`` later, with the changes that follow it, the lock held meanwhile,
unless another process failed to take the lock in the last ``_CONTENDED_MS``: then at once, so that the lock is
held for as short a time as the write takes.

A server's loop never waits for the lock while another process holds it: its write routes take a ``turn`` first,
which tries for up to ``_SPIN`` (a holder that is running lets go within a write's round trip), then waits for
the next entry a release adds to ``{prefix}lock:free`` (a short Stream: every waiter of every process is
woken by each release) without blocking. The other processes'
changes read while taking the lock are told to the broker once the loop comes back, not while it is held.
A write that fails raises ``StoreUnavailable`` where the change promises something (the broker undoes it and the
client gets 503), and is retried every second otherwise, with new ids.

"Acknowledged means stored" holds as far as Redis keeps what it acknowledged: run it with ``appendonly yes`` and
``appendfsync always`` (every write on disk before Redis answers). With the default ``appendfsync everysec`` a
crash of Redis (not of a hub) may lose the last second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import redis
import redis.asyncio as aioredis

from .broker import Event
from .model import Job
from .store import JobEntry, MemoryStore, StoreUnavailable

__all__ = ["RedisPresence", "RedisStore"]

_log = logging.getLogger("jupyter_sse")
_FIELDS = tuple(Job.__dataclass_fields__)

# Take the lock if it is free, reserve a block of ids, and hand back the stream after the given id: one round trip.
# None of it goes to the append-only file (REPL_NONE): with appendfsync always, a write there costs an fsync, and
# this one needs none. The lock is gone after a restart of Redis, as it should be; the counter is written with the
# change that uses its ids (``_PERSIST``, in the change's transaction), and ids nobody wrote may be handed out again.
_ACQUIRE = """
redis.set_repl(redis.REPL_NONE)
local mine = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if not mine and redis.call('GET', KEYS[1]) == ARGV[1] then
    mine = redis.call('PEXPIRE', KEYS[1], ARGV[2]) == 1  -- still ours: a process slower than it thought
end
if not mine then
    redis.call('SET', KEYS[5], '1', 'PX', ARGV[5])  -- contended: the holder writes sooner (see commit)
    local last = redis.call('XREVRANGE', KEYS[6], '+', '-', 'COUNT', 1)[1]
    return {0, last and last[1] or '0-0'}  -- a waiter is woken by the next release after this one
end
local top = redis.call('INCRBY', KEYS[3], ARGV[4])
local start = top - ARGV[4] + 1
local held = redis.call('HGET', KEYS[4], ARGV[1])
if held then start = math.min(start, tonumber(string.match(held, '^(%d+)'))) end
local now = redis.call('TIME')
local expires = now[1] * 1000 + math.floor(now[2] / 1000) + ARGV[2]
redis.call('HSET', KEYS[4], ARGV[1], string.format('%d:%d', start, expires))
return {top, redis.call('XRANGE', KEYS[2], '(' .. ARGV[3], '+'), redis.call('EXISTS', KEYS[5])}
"""
_BATCH_WINDOW = 0.005  # seconds progress may wait for the changes that follow it, to share their write
_ID_BLOCK = (
    256  # ids reserved per taking of the lock; the unused rest of a block is a gap, and ids only need to increase
)
# The counter as it is now (never lower than the ids this change used), written so that the append-only file has it:
# with stores sharing the counter, another may have moved it since this one reserved its block.
_PERSIST = """
redis.call('SET', KEYS[1], redis.call('GET', KEYS[1]) or '0')
return 0
"""
_ANNOUNCED_KEPT = 10_000  # entries kept of an ``announce`` stream; a reader further behind reads every stream
# Letting go also adds an entry to ``{prefix}lock:free``: the processes waiting for the lock block on that Stream
# (XREAD from the last entry they saw when their try failed), so that each release wakes them all.
_RELEASE = """
redis.set_repl(redis.REPL_NONE)
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', 16, '*', 'r', ARGV[1])
    redis.call('PEXPIRE', KEYS[3], ARGV[2])
    return 1
end
return 0
"""
_CONTENDED_MS = 100  # a failed try to take the lock marks it contended for this long
_SPIN = 0.01  # how long a turn tries to take the lock before it waits without blocking the loop
_SPIN_PAUSE = 0.0003
_WAIT_SLICE = 0.05  # the longest a waiter blocks before it asks again (the lock of a process that died expires)


class RedisPresence:
    """Whether a reader found Redis away: said in the log once when it goes, once when it is back."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.away = False

    async def lost(self, exc: Exception) -> None:
        """A read failed: subscribers keep their streams and publishers get 503 meanwhile; wait a little."""
        if not self.away:
            _log.warning("jupyter-sse: the Redis store at %s is away (%s)", self.url, exc)
            self.away = True
        await asyncio.sleep(0.5)

    def back(self) -> bool:
        """A read succeeded; True when Redis was away until now."""
        if not self.away:
            return False
        _log.warning("jupyter-sse: the Redis store at %s is back", self.url)
        self.away = False
        return True


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


class RedisStore(MemoryStore):
    """``MemoryStore`` shared through Redis with every other process on the same ``url`` and ``prefix``.

    Raises ``StoreUnavailable`` when Redis cannot be reached at start. ``listen()`` (or a reader of many stores'
    streams handing entries to ``apply``) must run on the broker's loop for the other processes' changes to
    arrive; ``on_remote`` is told of them.
    """

    def __init__(
        self,
        url: str,
        *,
        log_lines_kept: int = 1000,
        tombstones_kept: int = 2000,
        stream_kept: int = 10_000,
        prefix: str = "jupyter-sse:",
        shared_prefix: str | None = None,
        lock_timeout: float = 2.0,
        socket_timeout: float = 2.0,
        client: Any = None,
        aclient: Any = None,
        announce: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(tombstones_kept=tombstones_kept)
        self.url = url
        self.replica = secrets.token_hex(8)
        self.fault: str | None = None  # why the last write failed; None once one succeeds again
        # Told, on the broker's loop, of the entries another process changed (removed ones included).
        self.on_remote: Callable[[dict[str, JobEntry]], None] | None = None
        # Any: redis-py's annotations cover every protocol and decoding at once, which no caller can use.
        # ``client`` (decoding responses) lets many stores in one process share one pool: their calls are made
        # one at a time on the broker's loop, so one connection serves them all.
        self._own_client = client is None
        self._redis: Any = client or redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )
        self._socket_timeout = socket_timeout
        # The same for ``turn``'s waits (redis.asyncio, made at the first one when not given): the loop serves
        # its streams while another process holds the lock.
        self._own_aclient = aclient is None
        self._aredis: Any = aclient
        # (stream, name): each write also adds {"o": name} to that stream, in the same transaction, so that one
        # reader following many stores learns whose stream has news from one key.
        self._announce = announce
        self._log_lines_kept = log_lines_kept
        self._stream_kept = stream_kept
        self._lock_timeout = lock_timeout
        self._k_jobs = prefix + "jobs"
        self._k_log = prefix + "log:"
        self._k_events = prefix + "events"
        self._k_seq = (shared_prefix if shared_prefix is not None else prefix) + "seq"
        self._k_epoch = (shared_prefix if shared_prefix is not None else prefix) + "epoch"
        self._k_lock = prefix + "lock"
        self._k_free = prefix + "lock:free"  # an entry per release, for the processes waiting for the lock
        self._free_seen = "0-0"  # its last entry when a try to take the lock last failed
        self._k_wanted = prefix + "lock:wanted"  # present for _CONTENDED_MS after a try to take it failed
        # {replica: "<first id reserved>:<until, ms since the epoch>"} while a store holds its lock: ids not written
        # yet, which a reader of several stores' streams waits for before it passes on anything above them.
        self._k_inflight = (shared_prefix if shared_prefix is not None else prefix) + "inflight"
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)
        self._persist = self._redis.register_script(_PERSIST)
        self._held_until = 0.0  # monotonic time until which this process may count on holding the lock
        self._contended = False  # another process wanted the lock shortly before this one took it
        self._turns = 0  # open ``turn``s: the lock stays held (and progress unwritten) until the last one ends
        self._release_wait: asyncio.Task[None] | None = None  # the one wait for a release that every turn shares
        self._next_id = self._top_id = 0  # the ids reserved while the lock is held: _next_id up to _top_id
        self._pos = "0-0"  # the last stream entry applied
        self._dirty: set[str] = set()
        self._urgent: set[str] = set()  # changed in a way an answer promises (see sync)
        self._saved: dict[str, tuple[str, bool]] = {}  # (state, cancel_requested) as last written
        self._batch: asyncio.TimerHandle | None = None  # the write of progress held back, lock still held
        self._removed: list[tuple[str, int, str]] = []  # (job, seq, final snapshot) not yet written
        self._written_log_seq: dict[str, int] = {}
        self._untold: dict[str, JobEntry] = {}  # applied while taking the lock, for on_remote (see _apply_remote)
        try:
            self._load()
        except redis.RedisError as exc:
            if self._own_client:
                self._redis.close()
            raise self._failed(exc) from exc

    @property
    def events_key(self) -> str:
        """The key of the Stream this store's changes are written to."""
        return self._k_events

    @property
    def lowest_unsent(self) -> int | None:
        """The lowest id this store may still hand out under the lock it holds, or None when it holds none: every
        id below it that it handed out is already in its memory, and so with its broker."""
        return self._next_id if self._top_id else None

    @property
    def position(self) -> str:
        """The id of the last entry of ``events_key`` this store applied: a reader of it reads on from there."""
        return self._pos

    # ---- loading -------------------------------------------------------------------------------------------
    def _load(self) -> None:
        r: Any = self._redis
        r.set(self._k_epoch, secrets.token_hex(4), nx=True)
        newest = r.xrevrange(self._k_events, count=1)
        self._pos = newest[0][0] if newest else "0-0"  # so that taking the lock does not read the whole stream
        self._lock()  # a consistent picture: nobody writes while it is read
        try:
            self._entries.clear()  # what taking the lock applied is read again below
            self._tombstones.clear()
            self._epoch = str(r.get(self._k_epoch))
            self._seq = int(r.get(self._k_seq) or 0)
            last = r.xrevrange(self._k_events, count=1)
            self._pos = last[0][0] if last else "0-0"
            rows = [json.loads(value) for value in r.hgetall(self._k_jobs).values()]
            rows.sort(key=lambda row: row["change_seq"])
            for row in rows:
                entry = self._entry(row)
                lines = r.lrange(self._k_log + entry.job.id, -self._log_lines_kept, -1)
                entry.logs.extend((int(seq), line) for seq, line in map(json.loads, lines))
                self._written_log_seq[entry.job.id] = entry.logs[-1][0] if entry.logs else 0
                self._saved[entry.job.id] = (entry.job.state, entry.job.cancel_requested)
                self._entries[entry.job.id] = entry
            # Removals are known as far back as the stream goes: a cursor older than its first entry may have
            # missed some (when the stream was ever trimmed).
            info = r.xinfo_stream(self._k_events) if last else None
            self._horizon = 0
            if info is not None and int(info.get("entries-added", 0)) > int(info.get("length", 0)):
                first = info["first-entry"]
                self._horizon = int(first[1]["s"])
            for _, fields in r.xrange(self._k_events, "-", "+") if last else ():
                if fields.get("k") == "rm":
                    self._tombstones.append((int(fields["s"]), fields["j"], self._final(fields["d"])))
        finally:
            self._unlock()

    def _entry(self, row: dict[str, Any]) -> JobEntry:
        entry = JobEntry(Job(**row["job"]), int(row["seq"]), self._log_lines_kept)
        entry.change_seq = int(row["change_seq"])
        entry.last_dropped_seq = int(row["dropped"])
        entry.cancel_asked_at = row.get("cancel_at")
        return entry

    @staticmethod
    def _final(data: str) -> Event:
        row = json.loads(data)
        return Event(int(row["seq"]), "job", _dumps(row["job"]))

    # ---- the lock ------------------------------------------------------------------------------------------
    def _lock_call(self) -> tuple[list[str], list[Any]]:
        keys = [self._k_lock, self._k_events, self._k_seq, self._k_inflight, self._k_wanted, self._k_free]
        return keys, [self.replica, int(self._lock_timeout * 1000), self._pos, _ID_BLOCK, _CONTENDED_MS]

    def _took(self, found: list[Any]) -> None:
        # Half the timeout: past that, another process may have taken it over, and this one asks again.
        self._held_until = time.monotonic() + self._lock_timeout / 2
        self._top_id = int(found[0])
        self._next_id = self._top_id - _ID_BLOCK + 1
        self._contended = bool(found[2])
        self._apply_remote([(str(item[0]), _pairs(item[1])) for item in found[1]], later=True)

    def _lock(self) -> None:
        """Hold the write lock, and apply every change written before it was taken. Waits (blocking) while
        another process holds it: a caller on a loop that serves others takes a ``turn`` first."""
        if time.monotonic() < self._held_until:
            return
        if not self._spin(self._lock_timeout):
            raise self._not_free()

    def _try_lock(self) -> bool:
        keys, args = self._lock_call()
        try:
            found = self._acquire(keys=keys, args=args)
        except redis.RedisError as exc:
            raise self._failed(exc) from exc
        if not int(found[0]):
            self._free_seen = str(found[1])
            return False
        self._took(found)
        return True

    def _spin(self, seconds: float) -> bool:
        """Try to take the lock for up to ``seconds``, blocking."""
        until = time.monotonic() + seconds
        while not self._try_lock():
            if time.monotonic() >= until:
                return False
            time.sleep(_SPIN_PAUSE)
        return True

    def _not_free(self) -> StoreUnavailable:
        return StoreUnavailable(f"the Redis store's write lock was not free within {self._lock_timeout:g} s")

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the write lock for the changes made inside (synchronously: no await), so that the store's calls
        there find it held. While another process holds it, wait without blocking the loop.

        The lock is taken without yielding (a round trip, retried for up to ``_SPIN``): it is then held for the
        synchronous work of this turn only, never across the loop's other work (a holder that yielded would keep
        every other process waiting for as long as its loop is busy). Measured on 3 replicas behind nginx, a
        wait that yields at once costs more than it saves: a woken waiter comes back only when its busy loop
        does, and another process has taken the lock by then. Past ``_SPIN``, the turn waits for a release
        without blocking; the requests that come meanwhile wait for the same release and share the next taking:
        what an answer promises is written by each before its answer, progress once, by the last turn to end,
        which lets the lock go. Raises ``StoreUnavailable`` (nothing changed) when the lock is not free within its
        timeout, or Redis cannot be reached.
        """
        self._turns += 1
        try:
            deadline = time.monotonic() + self._lock_timeout
            while time.monotonic() >= self._held_until:
                waiting = self._release_wait
                if waiting is None or waiting.done():  # else the lock is elsewhere: wait with the others
                    if self._spin(_SPIN):
                        break
                    if time.monotonic() > deadline:
                        raise self._not_free()
                    waiting = self._release_wait = asyncio.ensure_future(self._wait_release(deadline))
                    waiting.add_done_callback(self._released)
                # Shielded: a request that goes away must not end the wait of the others.
                await asyncio.shield(waiting)
            yield
        finally:
            self._turns -= 1
            if not self._turns:
                self._end_turns()

    async def _wait_release(self, deadline: float) -> None:
        if self._aredis is None:
            self._aredis = aioredis.Redis.from_url(
                self.url,
                decode_responses=True,
                socket_timeout=self._socket_timeout,
                socket_connect_timeout=self._socket_timeout,
            )
        timeout = max(0.001, min(_WAIT_SLICE, deadline - time.monotonic()))
        try:
            await self._aredis.xread({self._k_free: self._free_seen}, count=1, block=max(1, int(timeout * 1000)))
        except (redis.RedisError, OSError) as exc:
            raise self._failed(exc) from exc

    def _released(self, task: asyncio.Task[None]) -> None:
        if self._release_wait is task:
            self._release_wait = None
        if not task.cancelled():
            task.exception()  # the turns waiting for it raise it; with none left, it is not worth a warning

    def _end_turns(self) -> None:
        """The last open turn ended: write what the turns left, unless a batch holds it back, and let go."""
        if not self._held_until or self._batch is not None:
            return
        if self._dirty or self._removed:
            with contextlib.suppress(StoreUnavailable):  # left pending: written again by flush()
                self._write()
        else:
            self._unlock()

    def _unlock(self) -> None:
        if self._batch is not None:
            self._batch.cancel()
            self._batch = None
        if self._held_until:
            # The ids left of the block are given up: handed out later, they could come after other processes'.
            self._held_until = 0.0
            self._next_id = self._top_id = 0
            with contextlib.suppress(redis.RedisError):
                pipe: Any = self._redis.pipeline(transaction=False)
                self._release(keys=self._release_keys, args=self._release_args, client=pipe)
                if self._announce is not None:  # no change, but readers waiting for these ids may go on
                    key, name = self._announce
                    pipe.xadd(key, {"o": name}, maxlen=_ANNOUNCED_KEPT, approximate=True)
                pipe.execute()

    @property
    def _release_keys(self) -> list[str]:
        return [self._k_lock, self._k_inflight, self._k_free]

    @property
    def _release_args(self) -> list[Any]:
        return [self.replica, int(self._lock_timeout * 1000)]

    # ---- the Store calls -----------------------------------------------------------------------------------
    def next_seq(self) -> int:
        self._lock()
        if self._next_id > self._top_id:  # a change with many lines: another block, still under the lock
            try:
                self._top_id = int(self._redis.incrby(self._k_seq, _ID_BLOCK))
            except redis.RedisError as exc:
                self._unlock()
                raise self._failed(exc) from exc
            self._next_id = self._top_id - _ID_BLOCK + 1
        seq = self._next_id
        self._next_id += 1
        self._seq = max(self._seq, seq)
        return seq

    def put(self, entry: JobEntry) -> None:
        super().put(entry)
        job = entry.job
        self._dirty.add(job.id)
        saved = self._saved.get(job.id)
        if (
            saved is None
            or saved[0] != job.state
            or saved[1] != job.cancel_requested
            or (entry.logs and entry.logs[-1][0] > self._written_log_seq.get(job.id, 0))
        ):
            self._urgent.add(job.id)
        else:
            self._urgent.discard(job.id)

    def discard(self, job_id: str) -> None:
        super().discard(job_id)
        self._dirty.discard(job_id)
        self._urgent.discard(job_id)

    def remove(self, job_id: str, seq: int, final: object = None) -> None:
        entry = self._entries.get(job_id)
        super().remove(job_id, seq, final)
        self._dirty.discard(job_id)
        self._urgent.discard(job_id)
        self._saved.pop(job_id, None)
        if entry is not None:
            data = final.data if isinstance(final, Event) else _dumps(entry.job.to_dict())
            final_id = final.id if isinstance(final, Event) else entry.seq
            self._removed.append((job_id, seq, f'{{"seq":{final_id},"job":{data}}}'))

    def sync(self, *, removing: Iterable[str] = ()) -> None:
        gone = [job_id for job_id in removing if job_id in self._entries]
        if gone:
            self._lock()
            try:
                pipe = self._redis.pipeline(transaction=True)
                pipe.hdel(self._k_jobs, *gone)
                pipe.delete(*(self._k_log + job_id for job_id in gone))
                pipe.execute()
            except redis.RedisError as exc:
                self._unlock()
                raise self._failed(exc) from exc
            return  # the removal's tombstone follows, with the change that removes it (the lock is still held)
        if self._urgent or self._removed:
            self._write()

    def commit(self) -> None:
        if self._urgent or self._removed:
            with contextlib.suppress(StoreUnavailable):
                self._write()
        elif self._dirty and self._held_until:
            # Progress alone (as the SQLite store writes it behind): written a moment later with whatever
            # follows, the lock held meanwhile so that ids stay in the stream's order. With publishers posting
            # hundreds of times a second, one write then carries several changes. Turns opened together: the
            # last one to end writes it. Another process waiting for the lock: written now, held back by no one.
            if self._batch is None and self._turns <= 1:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # no loop: a synchronous caller
                    loop = None
                if loop is None or self._contended:
                    with contextlib.suppress(StoreUnavailable):
                        self._write()
                    return
                self._batch = loop.call_later(_BATCH_WINDOW, self._write_batch)
            return
        if self._turns <= 1:
            self._unlock()

    def _write_batch(self) -> None:
        self._batch = None
        if self._held_until and (self._dirty or self._removed):
            with contextlib.suppress(StoreUnavailable):  # left pending: flush() retries it
                self._write()
        else:
            self._unlock()

    def flush(self) -> None:
        """Write what an earlier write could not (Redis was away), with new ids: subscribers elsewhere may be
        past the old ones by now."""
        if not (self._dirty or self._removed):
            return
        if self._batch is not None:  # a write held back, not failed: its ids are still in order
            self._write_batch()
            return
        self._lock()
        retried = set(self._dirty)
        try:
            for job_id in retried:
                entry = self._entries.get(job_id)
                if entry is not None:
                    entry.seq = entry.change_seq = self.next_seq()
                    entry.event = None
                    self._place(entry)
        except StoreUnavailable:
            self._unlock()
            raise
        self._write()
        if self.on_remote is not None:  # this process's own subscribers hear of the new snapshots too
            self.on_remote({job_id: e for job_id in retried if (e := self._entries.get(job_id)) is not None})

    def _write(self) -> None:
        """Write every pending change in one transaction, then let go of the lock."""
        dirty = [job_id for job_id in self._dirty if job_id in self._entries]
        removed = list(self._removed)
        pipe: Any = self._redis.pipeline(transaction=True)
        if self._announce is not None and (dirty or removed):  # first: the last id in the results is our stream's
            key, name = self._announce
            pipe.xadd(key, {"o": name}, maxlen=_ANNOUNCED_KEPT, approximate=True)
        new_logs: dict[str, int] = {}
        # In id order, removals among the rest: the stream's order is the ids' order, within a write too.
        changes = sorted(
            [(self._entries[job_id].change_seq, job_id, None) for job_id in dirty]
            + [(seq, job_id, final) for job_id, seq, final in removed],
            key=lambda change: change[0],
        )
        for seq, job_id, final in changes:
            if final is not None:
                pipe.hdel(self._k_jobs, job_id)
                pipe.delete(self._k_log + job_id)
                fields = {"r": self.replica, "k": "rm", "j": job_id, "s": seq, "d": final}
                pipe.xadd(self._k_events, fields, maxlen=self._stream_kept, approximate=True)
                continue
            entry = self._entries[job_id]
            row = (
                f'{{"seq":{entry.seq},"change_seq":{entry.change_seq},"dropped":{entry.last_dropped_seq},'
                f'"cancel_at":{_dumps(entry.cancel_asked_at)},"job":{_dumps(entry.job.to_dict())}}}'
            )
            done = self._written_log_seq.get(job_id, 0)
            lines = [(seq, line) for seq, line in entry.logs if seq > done]
            pipe.hset(self._k_jobs, job_id, row)
            if lines:
                key = self._k_log + job_id
                pipe.rpush(key, *(_dumps(line) for line in lines))
                pipe.ltrim(key, -self._log_lines_kept, -1)
                new_logs[job_id] = lines[-1][0]
            fields = {"r": self.replica, "k": "job", "j": job_id, "s": entry.change_seq, "d": row, "l": _dumps(lines)}
            pipe.xadd(self._k_events, fields, maxlen=self._stream_kept, approximate=True)
        held = bool(self._held_until) and time.monotonic() < self._held_until
        # Other turns opened with this one have yet to make their changes: they keep the lock (see turn).
        keep = held and self._turns > 1
        if self._top_id:  # the ids this change used, on disk with it (see _ACQUIRE)
            self._persist(keys=[self._k_seq], client=pipe)
        if self._held_until and not keep:
            # in the same transaction
            self._release(keys=self._release_keys, args=self._release_args, client=pipe)
        try:
            results = pipe.execute()
        except redis.RedisError as exc:
            self._unlock()
            raise self._failed(exc) from exc
        self.fault = None
        if held:
            # Nobody wrote since this process read the stream (it held the lock): its own entries are the last.
            ids = [result for result in results if isinstance(result, str) and "-" in result]
            if ids:
                self._pos = ids[-1]
        if not keep:
            self._held_until = 0.0
            self._next_id = self._top_id = 0
        if self._batch is not None:
            self._batch.cancel()
            self._batch = None
        self._dirty.difference_update(dirty)
        self._urgent.difference_update(dirty)
        for job_id in dirty:
            job = self._entries[job_id].job
            self._saved[job_id] = (job.state, job.cancel_requested)
        del self._removed[: len(removed)]
        self._written_log_seq.update(new_logs)
        for job_id, _, _ in removed:
            self._written_log_seq.pop(job_id, None)

    def close(self) -> None:
        """Write what is pending, if Redis takes it, and let go of the connection."""
        try:
            with contextlib.suppress(StoreUnavailable):
                self.flush()
        finally:
            if self._own_client:
                self._redis.close()

    async def aclose(self) -> None:
        """``close``, and let go of the connections ``turn`` made."""
        self.close()
        if self._release_wait is not None:
            self._release_wait.cancel()
            with contextlib.suppress(asyncio.CancelledError, StoreUnavailable):
                await self._release_wait
        if self._own_aclient and self._aredis is not None:
            await self._aredis.aclose()
            self._aredis = None

    def _failed(self, exc: Exception) -> StoreUnavailable:
        self.fault = f"{type(exc).__name__}: {exc}"
        return StoreUnavailable(f"the Redis store at {self.url} cannot be reached ({exc}); nothing was changed")

    # ---- the other processes' changes ----------------------------------------------------------------------
    def _place(self, entry: JobEntry) -> None:
        """Put an entry where its ``change_seq`` belongs: ``changed_since`` relies on that order."""
        entries = self._entries
        entries[entry.job.id] = entry
        entries.move_to_end(entry.job.id)
        newest_first = reversed(entries.values())
        next(newest_first)
        before = next(newest_first, None)
        if before is not None and before.change_seq > entry.change_seq:  # rare: a write retried after a fault
            ordered = sorted(entries.values(), key=lambda e: e.change_seq)
            entries.clear()
            entries.update((e.job.id, e) for e in ordered)

    def _apply_remote(self, items: list[tuple[str, dict[str, str]]], *, later: bool = False) -> None:
        """Apply the other processes' entries. ``later``: tell ``on_remote`` once the loop comes back to it,
        not now: the lock is held now, and telling may wake every subscriber (a pass over thousands of them,
        which every other process would wait for)."""
        touched: dict[str, JobEntry] = {}
        pos = _stream_id(self._pos)
        for stream_id, fields in items:
            here = _stream_id(stream_id)
            if here <= pos:
                continue  # read twice: by the lock and by the listener
            pos = here
            self._pos = stream_id
            if fields.get("r") == self.replica:
                continue
            job_id = fields["j"]
            seq = int(fields["s"])
            self._seq = max(self._seq, seq)
            entry = self._entries.get(job_id)
            if fields["k"] == "rm":
                if entry is not None:
                    MemoryStore.remove(self, job_id, seq, self._final(fields["d"]))
                    self._dirty.discard(job_id)
                    self._urgent.discard(job_id)
                    self._saved.pop(job_id, None)
                    self._written_log_seq.pop(job_id, None)
                    touched[job_id] = entry
                continue
            row = json.loads(fields["d"])
            if entry is not None and entry.change_seq >= int(row["change_seq"]):
                continue
            fresh = self._entry(row)
            if entry is None:
                entry = fresh
            else:
                # In place: the broker may hold this entry (never across a change, but across an await).
                for name in _FIELDS:
                    setattr(entry.job, name, getattr(fresh.job, name))
                entry.seq, entry.change_seq = fresh.seq, fresh.change_seq
                entry.last_dropped_seq, entry.cancel_asked_at = fresh.last_dropped_seq, fresh.cancel_asked_at
            entry.event = None
            entry.heard = time.time()  # its publisher reported, to another process: the lease starts again
            last = entry.logs[-1][0] if entry.logs else 0
            for line_seq, line in json.loads(fields["l"]):
                if line_seq > last:
                    entry.logs.append((int(line_seq), str(line)))
            self._written_log_seq[job_id] = entry.logs[-1][0] if entry.logs else 0
            self._saved[job_id] = (entry.job.state, entry.job.cancel_requested)
            self._place(entry)
            touched[job_id] = entry
        if not touched or self.on_remote is None:
            return
        if later:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                if not self._untold:
                    loop.call_soon(self._tell)
                self._untold.update(touched)
                return
        self.on_remote(touched)

    def _tell(self) -> None:
        touched, self._untold = self._untold, {}
        if touched and self.on_remote is not None:
            self.on_remote(touched)

    async def listen(self, *, block_ms: int = 1000) -> None:
        """Apply the other processes' changes as they are written, and retry failed writes, until cancelled."""
        client: Any = aioredis.Redis.from_url(
            self.url, decode_responses=True, socket_connect_timeout=self._socket_timeout
        )
        presence = RedisPresence(self.url)
        try:
            while True:
                try:
                    found = await client.xread({self._k_events: self._pos}, count=1000, block=block_ms)
                except (redis.RedisError, OSError) as exc:
                    await presence.lost(exc)
                    continue
                presence.back()
                items = [(str(stream_id), fields) for _, entries in found or () for stream_id, fields in entries]
                self.apply(items)
        finally:
            await client.aclose()

    def apply(self, items: list[tuple[str, dict[str, str]]]) -> None:
        """Apply entries read from ``events_key`` after ``position`` (another reader's, or ``listen``'s), then
        write again what an earlier write could not. Runs on the broker's loop."""
        self._apply_remote(items)
        if (self._dirty or self._removed) and self._batch is None:
            with contextlib.suppress(StoreUnavailable):
                self.flush()
