"""Memory of a long-running server: giving freed memory back after many connections close, and keeping the
cycle collector's full passes short however many jobs are kept.

A burst of streams leaves connection objects that only the cycle collector frees, and glibc's heap full of freed
chunks that it keeps for reuse: without a collection and a trim the process stays at its peak size long after the
streams are gone.

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

__all__ = ["GcFreezer", "TrimScheduler"]


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
        gc.collect()
        if self._trim is not None:
            self._trim()


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
