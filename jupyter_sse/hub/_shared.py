"""Every user's store in one Redis, shared by any number of hubs (``--store redis://...``).

Each user's jobs live under their own prefix (``jupyter-sse:{owner}:``), with their own stream and write lock,
so that a user's store is the redis branch's ``RedisStore`` unchanged; the event id counter and the epoch are
one for all users (``jupyter-sse:seq``, ``jupyter-sse:epoch``), as in memory, so an admin's merged stream has one
order and one Last-Event-ID across users and hubs.

Why a listener per user rather than one stream with the owner in each entry: a user's store then reads only its
own stream, under its own lock, which is what makes its ids arrive in order; one stream for all would need one
lock for all and a store that skips other users' entries. The cost is one Redis connection per user per hub.
The price of a lock per user: two users' changes written through different hubs within the same few
milliseconds may reach a third hub in either order, so an admin's merged stream that drops in that instant can
resume past the earlier one. A user's own stream is exact.

A hub learns of users that first published on another hub from ``jupyter-sse:owners``, a set every hub adds a
user to when it first makes their store, and reads every ``_DISCOVER_PERIOD`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..core import Broker
from ..core.store import StoreUnavailable

if TYPE_CHECKING:
    from ..core.store_redis import RedisStore
    from ._tenants import Tenants

__all__ = ["SharedStores", "open_shared"]

_log = logging.getLogger("jupyter_sse")
_DISCOVER_PERIOD = 0.5
_PREFIX = "jupyter-sse:"


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
    """Makes each user's ``RedisStore``, follows them, and finds the users other hubs made."""

    def __init__(self, url: str, log_lines_kept: int) -> None:
        import redis

        self.url = url
        self._log_lines_kept = log_lines_kept
        # Any: redis-py's annotations cover every protocol and decoding at once, which no caller can use.
        self._redis: Any = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._k_owners = _PREFIX + "owners"
        self._stores: dict[str, RedisStore] = {}
        self._listening: dict[str, asyncio.Task[None]] = {}
        self._running = False
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            self._redis.close()
            raise StoreUnavailable(f"the Redis store at {url} cannot be reached ({exc}); nothing was changed") from exc

    def make(self, owner: str) -> RedisStore:
        """``owner``'s store (``Tenants``' ``make_store``), written down as a user every hub should know."""
        import redis

        from ..core.store_redis import RedisStore

        store = RedisStore(
            self.url, log_lines_kept=self._log_lines_kept, prefix=f"{_PREFIX}{{{owner}}}:", shared_prefix=_PREFIX
        )
        try:
            self._redis.sadd(self._k_owners, owner)
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
        if self._running and broker.owner not in self._listening:
            self._listening[broker.owner] = asyncio.ensure_future(store.listen())

    async def run(self, tenants: Tenants) -> None:
        """Follow every user's store, and make the brokers of users other hubs made, until cancelled."""
        import redis

        self._running = True
        for broker in tenants:
            self.attach(broker)
        try:
            while True:
                try:
                    owners = await asyncio.to_thread(self._redis.smembers, self._k_owners)
                    for owner in sorted(owners):
                        if tenants.get(owner, create=False) is None and not tenants.closed:
                            tenants.get(owner)
                except (redis.RedisError, StoreUnavailable) as exc:
                    _log.debug("jupyter-sse: cannot read the hub's users from Redis yet (%s)", exc)
                await asyncio.sleep(_DISCOVER_PERIOD)
        finally:
            self._running = False

    async def close(self) -> None:
        for task in self._listening.values():
            task.cancel()
        for task in self._listening.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listening.clear()
        for store in self._stores.values():
            store.close()
        self._redis.close()
