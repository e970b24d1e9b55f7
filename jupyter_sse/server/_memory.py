"""Giving freed memory back to the system after many connections close.

A burst of streams leaves connection objects that only the cycle collector frees, and glibc's heap full of freed
chunks that it keeps for reuse: without a collection and a trim the process stays at its peak size long after the
streams are gone.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable

__all__ = ["TrimScheduler"]


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
