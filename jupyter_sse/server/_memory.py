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

Even so, a burst's arenas stayed: whatever long-lived object is made after it (a name in the type cache, a metric's
value, a timer) goes into the burst's partly used pools first, and one such object keeps a whole arena. Measured
after 2,000 streams closed: the same 58 MB of objects before and after, in 57 arenas before and 79-92 after
(+23-38% RSS). So once the server has started, new small objects come from the C library's ``malloc`` instead
(``SystemAllocator``), whose free pages ``malloc_trim`` gives back one by one: +2-4% after the same burst. What the
server made while starting stays where it is, packed in its arenas.

A full pass of the cycle collector visits every object it tracks: with 100,000 jobs kept (and the Jupyter server's
own 200,000 objects) one took 100-220 ms, all of it with the event loop stopped. The jobs are kept out of its
passes where they are made (``core/_gc.py``); what the server made while starting is frozen once it has started.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import ctypes.util
import gc
import sys
import sysconfig
import tracemalloc
from collections.abc import Callable
from typing import Any

__all__ = ["GcFreezer", "SystemAllocator", "TrimScheduler", "release_burst_leftovers"]


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
# Passes of the collector and trim after the first one of a burst, each twice as far apart.
_FOLLOW_UPS = 4
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
    empty = contextvars.Context()
    for _ in range(len(scheduled) + _MIN_SCHEDULED_TIMERS + 1):
        loop.call_later(3600, _noop, context=empty).cancel()


def release_burst_leftovers() -> None:
    """Lets go of what the interpreter and asyncio keep of a burst of connections once they are gone."""
    sys._clear_type_cache()  # refilled by the next lookups, in microseconds
    loop = asyncio.get_running_loop()
    _renew_future_iterators(loop)
    _purge_cancelled_timers(loop)


def _later(delay: float, callback: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
    """``call_later`` in an empty context, not in the caller's.

    A timer keeps the context it was made in until it fires or asyncio drops it, also once cancelled; the context
    of a request's task holds its handler (the Jupyter server's call context), and through it the request, its
    connection and stream. Made from the closing streams' contexts, the trimmer's timers kept 300-900 of 2,000
    closed streams reachable at its collection, and so in memory until the collector's next full pass.
    """
    return asyncio.get_running_loop().call_later(delay, callback, *args, context=contextvars.Context())


class TrimScheduler:
    """Trims the heap once closes have stopped for ``delay`` seconds, after at least ``min_closes`` of them.

    A trim walks the whole heap (milliseconds on a large one), so it runs after a burst (and a few times more,
    further apart), never per close.
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
        self._timer = _later(self.delay, self._run)

    def _run(self) -> None:
        self._timer = None
        self._closes = 0
        # Collected at the loop's next turn, once asyncio has dropped its cancelled timers (at the start of that
        # turn): each keeps the context it was made in, which holds the Jupyter server's handler of the request.
        release_burst_leftovers()
        asyncio.get_running_loop().call_soon(self._collect_and_trim, 0, context=contextvars.Context())

    def _collect_and_trim(self, passes: int) -> None:
        # A closed connection's handler, stream and futures refer to each other: only the cycle collector frees
        # them. Collected first, so the trim finds them free. A full collection also empties the interpreter's
        # freelists (tuples, floats, lists, dicts, contexts).
        gc.collect()
        if self._trim is not None:
            self._trim()
        # And again 2, 6, 14 and 30 s later, in case something else still held a closed stream at this pass (as
        # the trimmer's own timers did, in 300-900 of 2,000, before they were made in an empty context): left to
        # the collector's oldest generation, which may not run for hours, those kept 20-40 MB. A pass costs
        # milliseconds.
        if passes < _FOLLOW_UPS and self._timer is None:
            self._timer = _later(self.delay * 2**passes, self._follow_up, passes + 1)

    def _follow_up(self, passes: int) -> None:
        self._timer = None
        self._collect_and_trim(passes)


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


class _AllocatorFunctions(ctypes.Structure):
    """CPython's ``PyMemAllocatorEx``: an allocator's context and its four functions."""

    _fields_ = [
        ("ctx", ctypes.c_void_p),
        ("malloc", ctypes.c_void_p),
        ("calloc", ctypes.c_void_p),
        ("realloc", ctypes.c_void_p),
        ("free", ctypes.c_void_p),
    ]

    def same(self, other: _AllocatorFunctions) -> bool:
        return all(getattr(self, field[0]) == getattr(other, field[0]) for field in self._fields_)


# CPython's PyMemAllocatorDomain
_RAW, _MEM, _OBJ = 0, 1, 2


def _allocator_api() -> tuple[Any, Any] | None:
    if sys.implementation.name != "cpython" or sysconfig.get_config_var("Py_GIL_DISABLED"):
        return None  # another interpreter, or the free-threaded build's allocator (mimalloc): left as it is
    try:
        get = ctypes.pythonapi.PyMem_GetAllocator
        put = ctypes.pythonapi.PyMem_SetAllocator
    except AttributeError:
        return None
    for function in (get, put):
        function.argtypes = [ctypes.c_int, ctypes.POINTER(_AllocatorFunctions)]
        function.restype = None
    return get, put


class SystemAllocator:
    """Has Python take its new small objects from the C library's ``malloc``, from now on, instead of pymalloc.

    What this is and why: see the module's text. It wraps the allocator in place, as CPython requires of a change
    made after start: new blocks come from the raw domain's ``malloc`` and ``calloc`` (the C library's), and every
    block is resized and freed by the functions in place before, which hand a block that is not pymalloc's to the
    C library. So objects made before and after mix freely, and ``restore`` is safe at any time. ``ctypes.pythonapi``
    holds the GIL during each call, so no other thread allocates meanwhile.

    Left as it is, and said why: another interpreter than CPython, the free-threaded build, an allocator that is
    already the C library's (``PYTHONMALLOC=malloc``), and hooks installed by someone else (tracemalloc tracing,
    ``PYTHONMALLOC=debug``, ``-X dev``, memory profilers): each of those has a context of its own.
    """

    def __init__(self) -> None:
        self.installed = False
        self.reason = "not asked for"
        self._saved: dict[int, _AllocatorFunctions] = {}
        self._ours: dict[int, _AllocatorFunctions] = {}

    def install(self) -> bool:
        """Returns whether it is installed; if not, ``reason`` says why."""
        if self.installed:
            return True
        api = _allocator_api()
        if api is None:
            self.reason = "not CPython with pymalloc"
            return False
        get, put = api
        if tracemalloc.is_tracing():
            self.reason = "tracemalloc is tracing"
            return False
        current = {domain: _AllocatorFunctions() for domain in (_RAW, _MEM, _OBJ)}
        for domain, functions in current.items():
            get(domain, ctypes.byref(functions))
        raw = current[_RAW]
        if any(functions.ctx for functions in current.values()):
            self.reason = "another allocator hook is installed (tracemalloc, PYTHONMALLOC=debug, -X dev, a profiler)"
            return False
        if all(current[domain].malloc == raw.malloc for domain in (_MEM, _OBJ)):
            self.reason = "Python already allocates with the C library (PYTHONMALLOC=malloc)"
            return False
        for domain in (_MEM, _OBJ):
            before = current[domain]
            ours = _AllocatorFunctions(None, raw.malloc, raw.calloc, before.realloc, before.free)
            put(domain, ctypes.byref(ours))
            self._saved[domain] = before
            self._ours[domain] = ours
        self.installed = True
        self.reason = ""
        return True

    def restore(self) -> None:
        """Puts back the allocator found by ``install`` (when the extension stops, in a process that goes on),
        unless another hook has been put over ours since: taking ours away would take that one too."""
        api = _allocator_api()
        if not self.installed or api is None:
            return
        get, put = api
        for domain, before in self._saved.items():
            now = _AllocatorFunctions()
            get(domain, ctypes.byref(now))
            if now.same(self._ours[domain]):
                put(domain, ctypes.byref(before))
        self._saved.clear()
        self._ours.clear()
        self.installed = False
        self.reason = "restored"

    def status(self) -> dict[str, Any]:
        """For ``GET jupyter-sse/api/status``."""
        return {"system_allocator": self.installed, **({"reason": self.reason} if self.reason else {})}
