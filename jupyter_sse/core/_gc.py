"""Keeping the objects of kept jobs out of the cycle collector's passes.

A full pass of Python's cycle collector visits every object it tracks, with everything else stopped: with 100,000
jobs kept, three or four objects each, one pass took 100-200 ms of the event loop. CPython already leaves out the
tuples and dicts that hold only atomic values; a job's entry, the job, its log deque and its cached event hold only
strings, numbers and such containers, so they can never be part of a reference cycle either, and are left out in
the same way. Reference counting frees them as before.

Why not a layout that CPython leaves out by itself: it does so only for exact tuples and dicts, and only while
they hold no dict and no tracked tuple, so the job itself would have to be a flat tuple. Measured with 100,000
kept jobs, tracked objects a job and the longest full pass: untracked here 0.01 and 22-38 ms; nothing untracked
4.0 and 178-310 ms; entry and job as dicts 2.0 and 121-130 ms; entry a tuple holding a flat job dict 1.0 and
65-77 ms.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

__all__ = ["untrack"]


def _untrack_function() -> Callable[[object], None] | None:
    if sys.implementation.name != "cpython":
        return None
    try:
        function = ctypes.pythonapi.PyObject_GC_UnTrack
    except AttributeError:  # an embedding without the C API exported
        return None
    function.argtypes = [ctypes.py_object]
    function.restype = None
    return function


_UNTRACK = _untrack_function()


def untrack(*objects: object) -> None:
    """Leave ``objects`` out of the cycle collector. Only for objects that no reference chain leads back to."""
    if _UNTRACK is not None:
        for obj in objects:
            _UNTRACK(obj)
