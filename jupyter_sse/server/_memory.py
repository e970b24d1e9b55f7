"""Memory of a long-running server: giving freed memory back after many connections close, and keeping the
cycle collector's full passes short however many jobs are kept.

A burst of streams leaves connection objects that only the cycle collector frees, and glibc's heap full of freed
chunks that it keeps for reuse: without a collection and a trim the process stays at its peak size long after the
streams are gone.

Python's small-object allocator takes 1 MiB arenas from the system for such a burst and gives one back only once
every object in it is freed. Measured after 2,000 streams closed, the arenas made for them stayed, each kept by a
few small objects that the interpreter and asyncio hold on to after the streams are gone: names of attributes
looked up per request (held by the interpreter's type cache), the iterators ``await future`` makes (a freelist in
asyncio's C module), and cancelled timers (asyncio drops them from its heap only when they are the majority, or
when they would have fired: an hour later for tornado's idle-connection timeouts). After a burst those are let go
or made anew, so that the burst's arenas can empty.

A full pass of the cycle collector visits every object it tracks: with 100,000 jobs kept (and the Jupyter server's
own 200,000 objects) one took 100-220 ms, all of it with the event loop stopped. The jobs are kept out of its
passes where they are made (``core/_gc.py``); what the server made while starting is frozen once it has started.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["GcFreezer", "TrimScheduler", "release_burst_leftovers"]


def _malloc_trim() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only: musl has none
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def run() -> None:
        trim(0)  # 1 or 0: whether it released anything; either is fine

    return run


# asyncio's C module keeps up to this many freed future iterators for reuse (CPython's FI_FREELIST_MAXLEN).
_FUTURE_ITER_FREELIST = 255
# asyncio purges cancelled timers once more than this many are scheduled and over half of them are cancelled.
_MIN_SCHEDULED_TIMERS = 100


def _noop() -> None:
    pass


def _renew_future_iterators(loop: asyncio.AbstractEventLoop) -> None:
    """Replaces the iterators asyncio keeps for reuse with new ones: those it kept were made during the burst."""
    futures = [loop.create_future() for _ in range(2 * _FUTURE_ITER_FREELIST)]
    kept = [f.__await__() for f in futures[:_FUTURE_ITER_FREELIST]]  # empties the freelist
    new = [f.__await__() for f in futures[_FUTURE_ITER_FREELIST:]]  # made now, where new objects go
    del new  # these fill the freelist again ...
    del kept  # ... so the old ones are freed for good


def _purge_cancelled_timers(loop: asyncio.AbstractEventLoop) -> None:
    """Has asyncio drop every cancelled timer from its heap at its next turn, rather than when each would fire.

    Adding enough cancelled timers tips asyncio's own rule (over 100 scheduled, over half cancelled); where the
    loop does not keep its heap as expected, nothing is done.
    """
    scheduled = getattr(loop, "_scheduled", None)
    if not isinstance(scheduled, list):
        return
    for _ in range(len(scheduled) + _MIN_SCHEDULED_TIMERS + 1):
        loop.call_later(3600, _noop).cancel()


def release_burst_leftovers() -> None:
    """Lets go of what the interpreter and asyncio keep of a burst of connections once they are gone."""
    sys._clear_type_cache()  # refilled by the next lookups, in microseconds
    loop = asyncio.get_running_loop()
    _renew_future_iterators(loop)
    _purge_cancelled_timers(loop)


class TrimScheduler:
    """Trims the heap once closes have stopped for ``delay`` seconds, after at least ``min_closes`` of them.

    A trim walks the whole heap (milliseconds on a large one), so it runs once after a burst, never per close.
    """

    def __init__(self, delay: float = 2.0, min_closes: int = 16) -> None:
        self.delay = delay
        self.min_closes = min_closes
        self._trim = _malloc_trim()
        self._closes = 0
        self._timer: asyncio.TimerHandle | None = None

    def closed_one(self) -> None:
        self._closes += 1
        if self._closes < self.min_closes:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.delay, self._run)

    def _run(self) -> None:
        self._timer = None
        self._closes = 0
        # A closed connection's handler, stream and futures refer to each other: only the cycle collector frees
        # them, and its oldest generation may not run for a long time. Collected first, so the trim finds them free.
        # A full collection also empties the interpreter's freelists (tuples, floats, lists, dicts, contexts).
        gc.collect()
        release_burst_leftovers()
        if self._trim is not None:
            # At the loop's next turn: asyncio drops the cancelled timers at the start of it.
            asyncio.get_running_loop().call_soon(self._trim)


class GcFreezer:
    """Moves what the server made while starting out of the cycle collector's full passes, once it has started.

    A full pass visits every object the collector tracks and every reference they hold, with the event loop
    stopped: the Jupyter server's own 200,000 objects (modules, classes, functions, its apps and managers) cost it
    60-70 ms on an idle machine, much more on a busy one, each time. They live as long as the process, so after
    start they are frozen (``gc.freeze``, as the ``gc`` documentation suggests for long-lived servers): later passes
    visit only what was made since. So are the broker's large containers, made at start and changed in place.
    Frozen objects are still freed by their reference count; only a cycle among them would wait for ``thaw``.
    """

    def __init__(self) -> None:
        self.frozen = False
        self.frozen_objects = 0

    def freeze(self) -> None:
        gc.collect()  # what start-up left as garbage is freed, not frozen
        gc.freeze()
        self.frozen = True
        # Counted once: gc.get_freeze_count() walks the whole frozen list (6 ms for 300,000 objects), too much
        # for a status route that monitors poll.
        self.frozen_objects = gc.get_freeze_count()

    def thaw(self) -> None:
        """Gives the frozen objects back to the collector (when the extension stops, in a process that goes on)."""
        if self.frozen:
            gc.unfreeze()
            self.frozen = False
            self.frozen_objects = 0

    def status(self) -> dict[str, Any]:
        """For ``GET jupyter-sse/api/status``: how many objects were frozen after start."""
        return {"frozen_objects": self.frozen_objects}
