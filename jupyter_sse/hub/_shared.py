"""Every user's store in one Redis, shared by any number of hubs (``--store redis://...``).

Each user's jobs live under their own prefix (``jupyter-sse:{owner}:``), with their own stream and write lock,
so that a user's store is the redis branch's ``RedisStore`` unchanged; the event id counter and the epoch are
one for all users (``jupyter-sse:seq``, ``jupyter-sse:epoch``), as in memory, so an admin's merged stream has one
order and one Last-Event-ID across users and hubs.

Why a stream per user rather than one stream with the owner in each entry: a user's store then reads only its
own stream, under its own lock, which is what makes its ids arrive in order; one stream for all would need one
lock for all and a store that skips other users' entries.

One reader per hub follows them all. Every write of a user's store also adds ``{"o": owner}`` to one stream,
``jupyter-sse:news``, in the same transaction; the reader blocks on that one key, then reads (without waiting)
the streams of the users it names, and hands their entries to their stores, which tell their brokers. Its cost
follows the changes, not the users. Measured with 200 users on two replicas (``bench/replica_users.py``, the
replica that hears of 100 updates a second only through Redis): a reader per user cost 403 Redis connections
per replica, 2.1-3.1% of a core idle and 7-10% busy; one blocking ``XREAD`` naming all 200 streams cost 2
connections but 0.7 ms of Python per wake-up just to write the command (10-11% busy); this design costs 2
connections, 0.1-0.4% idle and 6-9% busy. Every store of the
hub also writes through one connection pool: their calls are made one at a time on the hub's loop. Every 10 s,
and once Redis is back after an absence, the reader reads every user's stream, in case it missed news.

A hub learns of users that first published on another hub from ``jupyter-sse:owners``, a set every hub adds a
user to when it first makes their store, also announcing them on the news stream.

The price of a lock per user is that ids are in order per user only: alice's store may take ids 1-256 under her
lock, bob's 257-512 under his, and bob's 257 reach a hub before alice's 2. An admin's merged stream that sent 257
and then dropped would resume past alice's 2. So the reader also keeps a watermark (``Tenants.advance``): the
id below which every id is written or given up (a store that takes its lock lists its block's first id in
``jupyter-sse:inflight`` until it writes, with the lock's timeout) and has been read here, or is this hub's own
and already in its memory. Merged streams pass events on up to it only, in id order. The reader reads it (one
more transaction per wake-up) only while a merged stream is open; a merged stream over a single broker holds
nothing (one user's ids are in order): in ``bench/replicas.py`` (300 subscribers on 3 replicas, the hub token's
streams) p99 was 44-83 ms with it against 58-109 ms without, in interleaved runs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from ..core import Broker
from ..core.store import StoreUnavailable

if TYPE_CHECKING:
    from ..core.store_redis import RedisStore
    from ._tenants import Tenants

__all__ = ["SharedStores", "open_shared", "write_turn"]

_log = logging.getLogger("jupyter_sse")
_PREFIX = "jupyter-sse:"
_BLOCK_MS = 1000  # how long one read waits for news, and how often a failed write is tried again
_READ_COUNT = 1000  # entries per stream per read: a stream far behind is read over several
_NEWS_KEPT = 10_000  # entries kept of the news stream (as a store keeps of its announcements)
_SWEEP_PERIOD = 10.0  # how often every user's stream is read, in case announcements were trimmed unread
# The blocks of ids held by stores whose lock has expired (a hub that died holding one): readers already pass them
# by (``_mark``); the sweep deletes them, so that the hash does not grow by one a crash. One script, so that an entry
# made again meanwhile by a live store (with a later expiry) is never the one deleted.
_FORGET_EXPIRED = """
redis.set_repl(redis.REPL_NONE)
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local held = redis.call('HGETALL', KEYS[1])
local gone = 0
for i = 1, #held, 2 do
    local until_ms = tonumber(string.match(held[i + 1], ':(%d+)$'))
    if until_ms and until_ms < ms then
        redis.call('HDEL', KEYS[1], held[i])
        gone = gone + 1
    end
end
return gone
"""


def write_turn(broker: Broker) -> contextlib.AbstractAsyncContextManager[Any]:
    """Around a change through ``broker``: a turn of its store's write lock (``RedisStore.turn``), waited for
    without blocking the loop; nothing for a store of this process only."""
    turn = getattr(broker.store, "turn", None)
    return turn() if turn is not None else contextlib.nullcontext()


def open_shared(url: str | None, log_lines_kept: int) -> SharedStores | None:
    """The shared stores ``url`` names, or None for memory. Raises ValueError for a URL it cannot use, and
    StoreUnavailable when Redis cannot be reached."""
    if url is None:
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"--store must be a Redis URL (redis://HOST:PORT/DB), not {url!r}")
    try:
        import redis  # noqa: F401

        from ..core.store_redis import RedisStore  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"a Redis store needs the redis extra: pip install 'jupyter-sse[redis]' ({exc})") from exc
    return SharedStores(url, log_lines_kept)


class SharedStores:
    """Makes each user's ``RedisStore``, follows them all with one reader, and finds the users other hubs made."""

    def __init__(self, url: str, log_lines_kept: int) -> None:
        import redis

        self.url = url
        self._log_lines_kept = log_lines_kept
        # Any: redis-py's annotations cover every protocol and decoding at once, which no caller can use.
        self._redis: Any = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        # The stores' waits for their locks (``RedisStore.turn``), on the hub's loop; the reader has its own.
        self._aredis: Any = None
        self._k_owners = _PREFIX + "owners"
        self._k_news = _PREFIX + "news"
        self._k_inflight = _PREFIX + "inflight"  # the stores' (shared_prefix) names
        self._k_seq = _PREFIX + "seq"
        self._stores: dict[str, RedisStore] = {}
        self._followed: dict[str, RedisStore] = {}  # the stores whose broker is made: the reader reads these
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            self._redis.close()
            raise StoreUnavailable(f"the Redis store at {url} cannot be reached ({exc}); nothing was changed") from exc

    def make(self, owner: str) -> RedisStore:
        """``owner``'s store (``Tenants``' ``make_store``), written down as a user every hub should know."""
        import redis
        import redis.asyncio as aioredis

        from ..core.store_redis import RedisStore

        if self._aredis is None:
            self._aredis = aioredis.Redis.from_url(
                self.url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
            )
        store = RedisStore(
            self.url,
            log_lines_kept=self._log_lines_kept,
            prefix=f"{_PREFIX}{{{owner}}}:",
            shared_prefix=_PREFIX,
            client=self._redis,
            aclient=self._aredis,
            announce=(self._k_news, owner),
        )
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.sadd(self._k_owners, owner)
            pipe.xadd(self._k_news, {"o": owner}, maxlen=_NEWS_KEPT, approximate=True)
            pipe.execute()
        except redis.RedisError as exc:
            store.close()
            raise StoreUnavailable(
                f"the Redis store at {self.url} cannot be reached ({exc}); nothing was changed"
            ) from exc
        self._stores[owner] = store
        return store

    def attach(self, broker: Broker) -> None:
        """Route the other hubs' changes of ``broker``'s store to it (``Tenants.on_new``)."""
        store = self._stores.get(broker.owner)
        if store is None or store is not broker.store:
            return
        store.on_remote = broker.changed_elsewhere
        self._followed[broker.owner] = store

    async def run(self, tenants: Tenants) -> None:
        """Follow every user's store, and make the brokers of users other hubs made, until cancelled."""
        import redis
        import redis.asyncio as aioredis

        from ..core.store_redis import RedisPresence

        if tenants.watermark is None:
            tenants.watermark = 0  # ids arrive out of order from now on: merged streams hold them to the mark
        tenants.on_merge.append(self._poke)
        for broker in tenants:
            self.attach(broker)
        client: Any = aioredis.Redis.from_url(self.url, decode_responses=True, socket_connect_timeout=2.0)
        news = "0-0"
        sweep_at = 0.0  # when to read every user's stream, not only the announced ones
        retry_at = 0.0
        presence = RedisPresence(self.url)
        try:
            while True:
                try:
                    if time.monotonic() >= sweep_at:
                        # The news stream's end first: whatever is written after it is announced below.
                        newest = await client.xrevrange(self._k_news, count=1)
                        news = newest[0][0] if newest else news
                        self._discover(tenants, await client.smembers(self._k_owners))
                        await client.eval(_FORGET_EXPIRED, 1, self._k_inflight)
                        await self._read(client, list(self._followed.values()))
                        sweep_at = time.monotonic() + _SWEEP_PERIOD
                    # Below the mark, every id is written (or given up), so what the news names now holds it all:
                    # read that, then admins' merged streams may pass on everything up to the mark. Only merged
                    # streams need it: with none open, the reader only waits for news.
                    mark: int | None = None
                    found = None
                    if tenants.merging:
                        # One round trip, one transaction: the blocks held and the counter must be of one instant
                        # (a block reserved between the two reads would pass unseen), the news read after them.
                        pipe = client.pipeline(transaction=True)
                        pipe.hgetall(self._k_inflight)
                        pipe.get(self._k_seq)
                        pipe.time()
                        pipe.xread({self._k_news: news}, count=_READ_COUNT)
                        held, top, now, found = await pipe.execute()
                        mark = self._mark(held, top, now)
                    waited = not found
                    if waited:
                        if mark is not None:
                            tenants.advance(mark)
                        found = await client.xread({self._k_news: news}, count=_READ_COUNT, block=_BLOCK_MS)
                    owners: set[str] = set()
                    for _, entries in found or ():
                        news = str(entries[-1][0])
                        owners.update(fields.get("o", "") for _, fields in entries)
                        waited = waited or len(entries) >= _READ_COUNT  # more news behind: no mark yet
                    self._discover(tenants, owners)
                    await self._read(client, [self._followed[o] for o in sorted(owners) if o in self._followed])
                    if not waited and mark is not None:
                        tenants.advance(mark)
                except (redis.RedisError, OSError) as exc:
                    await presence.lost(exc)
                    continue
                if presence.back():
                    sweep_at = 0.0  # what was written meanwhile, and users who joined through other hubs
                if time.monotonic() >= retry_at:  # write again what an earlier write could not, once a second
                    retry_at = time.monotonic() + _BLOCK_MS / 1000
                    for store in list(self._followed.values()):
                        self._apply(store, [])
        finally:
            await client.aclose()

    def _mark(self, held: dict[str, str], top: str | None, now: tuple[int, int]) -> int:
        """The highest id below which every id is written to Redis or already in this hub's memory: ids in the
        blocks other hubs' stores hold (``jupyter-sse:inflight``, until the lock's timeout) may still come; so
        may those that this hub's own stores have yet to hand out."""
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        local = {store.replica: store for store in self._stores.values()}
        mark = int(top or 0)
        for replica, value in held.items():
            first, _, until = value.partition(":")
            if replica not in local and int(until) >= now_ms:  # past its time, the lock is another's to take
                mark = min(mark, int(first) - 1)
        for store in local.values():
            low = store.lowest_unsent
            if low is not None:
                mark = min(mark, low - 1)
        return mark

    async def _read(self, client: Any, stores: list[RedisStore]) -> None:
        """Read the given stores' streams up to their ends (without waiting) and apply what they hold."""
        while stores:
            found = await client.xread({store.events_key: store.position for store in stores}, count=_READ_COUNT)
            by_key = {store.events_key: store for store in stores}
            stores = []
            for key, entries in found or ():
                store = by_key[key]
                self._apply(store, [(str(stream_id), fields) for stream_id, fields in entries])
                if len(entries) >= _READ_COUNT:  # more behind: read on
                    stores.append(store)

    def _poke(self) -> None:
        """Wake the reader (every hub's, harmlessly), so that it reads the mark for a merged stream just opened
        now rather than at the next news."""
        import redis

        try:
            self._redis.xadd(self._k_news, {"o": ""}, maxlen=_NEWS_KEPT, approximate=True)
        except redis.RedisError as exc:  # the reader's wait ends within a second anyway
            _log.debug("jupyter-sse: cannot wake the Redis reader (%s)", exc)

    def _discover(self, tenants: Tenants, owners: set[str]) -> None:
        for owner in sorted(owners):
            if tenants.closed:
                return
            if owner and tenants.get(owner, create=False) is None:
                try:
                    tenants.get(owner)
                except StoreUnavailable as exc:
                    _log.debug("jupyter-sse: cannot make the store of %s yet (%s)", owner, exc)

    @staticmethod
    def _apply(store: RedisStore, items: list[tuple[str, dict[str, str]]]) -> None:
        try:
            store.apply(items)
        except Exception:  # one user's bad entry must not stop every other user's changes
            _log.exception("jupyter-sse: cannot apply changes read from %s", store.events_key)

    async def close(self) -> None:
        for store in self._stores.values():
            await store.aclose()
        self._redis.close()
        if self._aredis is not None:
            await self._aredis.aclose()
