"""The iterator a progress loop runs on: no Python frame per item.

Sized iterables whose native iterator can report and set its position (list, tuple, range, str, bytes,
bytearray, NumPy arrays and other sequence iterators) run on ``_Chain(native_it, _Finish(job))``. The loop
calls the native ``__next__`` through ``itertools.chain``'s C code; the publisher thread reads how far it got
with ``__length_hint__``. Other iterables (generators, dict views, sets, custom iterators) run on
``_Chain(compress(it, ctrl), _Finish(job))``, where ``ctrl`` is a huge ``range`` iterator consumed once per item:
its ``__length_hint__`` counts the items taken, again with no Python frame.

Counting follows tqdm: while the loop is inside item k (0-based), k items are done; at the end, all are.

The end of the loop:
- exhausted: chain calls ``_Finish.__iter__`` lazily, which marks the job ``succeeded`` (or raises
  ``JobCancelled`` when cancellation was asked for).
- cancelled: the publisher thread sets the native (or control) iterator to its end with ``__setstate__``;
  the loop's next step then reaches ``_Finish``, which raises ``JobCancelled``. (On the generator path the
  generator runs one more step first: ``compress`` takes the data item before the selector.)
- left early: ``_Chain.__del__`` runs when the loop drops the iterator. No exception is visible there
  (``sys.exc_info()`` is empty in ``__del__``), so the instruction the caller frame stopped at tells:
  ``POP_TOP`` (``break``, ``return``), a store or delete, ``FOR_ITER`` of an enclosing ``zip``, a generator's
  ``YIELD_VALUE`` (closed by its consumer) are a normal exit: the job ends ``succeeded`` at the count reached,
  with the message ``"stopped early at n/total"`` (a ``break`` is the user's choice, not a failure). Any other
  instruction (a call, ``RAISE_VARARGS``, a binary op...) means an exception is unwinding the frame: see
  ``_lifecycle.left_by_exception``.
"""

from __future__ import annotations

import dis
import itertools
import logging
import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from operator import length_hint
from types import FrameType, GeneratorType
from typing import Any, Generic, TypeVar

from ..protocol import FINAL_STATES
from ._control import finish, step
from ._lifecycle import end_early, end_job, left_by_exception
from ._state import JobState

__all__ = ["CTRL_LEN", "aiterate", "end_dropped", "end_left_loop", "iterate"]

T = TypeVar("T")
_log = logging.getLogger("jupyter_sse")
CTRL_LEN = (1 << 62) - 1  # len(range(1, 1 << 62)); a plain range_iterator (fits a C long)


class _Seq:
    def __getitem__(self, i: int) -> int:
        raise IndexError


# native iterators whose __setstate__ takes a position and __reduce__ reports it (reversed ones count down:
# they take the generic path)
_SAMPLES: tuple[Any, ...] = ([], (), range(0), range(1 << 64), "", "\u00e9", b"", bytearray(), _Seq())
_NATIVE: frozenset[type] = frozenset(type(iter(x)) for x in _SAMPLES)

_NORMAL_EXIT_OPS = frozenset(
    dis.opmap[name]
    for name in (
        "POP_TOP",
        "POP_ITER",
        "END_FOR",
        "FOR_ITER",
        "RETURN_VALUE",
        "RETURN_CONST",
        "YIELD_VALUE",
        "STORE_FAST",
        "STORE_NAME",
        "STORE_GLOBAL",
        "STORE_DEREF",
        "STORE_ATTR",
        "STORE_SUBSCR",
        "DELETE_FAST",
        "DELETE_NAME",
        "DELETE_GLOBAL",
        "DELETE_DEREF",
        "DELETE_SUBSCR",
    )
    if name in dis.opmap
)
_FOR_ITER = dis.opmap["FOR_ITER"]


def _left_normally(frame: FrameType, job: JobState) -> bool:
    lasti = frame.f_lasti
    code = frame.f_code.co_code
    if lasti < 0 or lasti >= len(code):
        return True
    op = code[lasti]
    if op == _FOR_ITER:
        # FOR_ITER of an enclosing zip() that ran out is normal; our own generator raising is not
        gen = job.gen
        return not (gen is not None and gen.gi_frame is None)
    return op in _NORMAL_EXIT_OPS


def end_left_loop(job: JobState, frame: FrameType | None) -> None:
    """End the job of a loop that was left before its end: by ``break`` or ``return`` (ended early), or by an
    exception in the loop's body, told apart from ``frame``, the frame that left it (None: no Python frame left
    it, as at interpreter shutdown)."""
    if frame is None or _left_normally(frame, job):
        end_early(job)
    else:
        left_by_exception(job)


def end_dropped(owner: Any, what: str) -> None:
    """For the ``__del__`` of a loop's iterator (``owner``, with the loop's job as ``_job``): end the job if the
    loop was left before its end, as the frame that dropped the iterator tells. Never raises: an exception out
    of ``__del__`` would print "Exception ignored in..." into the user's output."""
    try:
        job: JobState = owner._job
        if job.state in FINAL_STATES or job.stopping:
            return
        try:
            frame: FrameType | None = sys._getframe(2)  # 1 is the __del__ that called this, 2 what dropped it
        except ValueError:
            frame = None
        end_left_loop(job, frame)
    except Exception:
        _log.debug("jupyter-sse: ending %s failed", what, exc_info=True)


class _Finish:
    """Chain's second iterable: ``__iter__`` is called once, when the data ran out."""

    __slots__ = ("job",)

    def __init__(self, job: JobState) -> None:
        self.job = job

    def __iter__(self) -> Iterator[Any]:
        job = self.job
        step(job)  # a cancel asked for during the last item ends the job cancelled, not succeeded
        end_job(job, "succeeded", exhausted=True)
        return iter(())


class _Chain(itertools.chain):  # type: ignore[type-arg]
    """``itertools.chain`` keeps its C ``__next__``; the subclass only adds ``__del__``."""

    __slots__ = ("_job",)
    _job: JobState

    def __del__(self) -> None:
        end_dropped(self, "a loop")


def iterate(job: JobState, iterable: Iterable[T]) -> Iterator[T]:
    """The iterator to hand the loop; wires the job's sampler to it."""
    it = iter(iterable)
    if type(it) in _NATIVE:
        job.src_base = length_hint(it)
        job.src = it
        chain = _Chain(it, _Finish(job))
    else:
        ctrl = iter(range(1, CTRL_LEN + 1))
        job.src_base = CTRL_LEN
        job.src = ctrl
        if isinstance(it, GeneratorType):
            job.gen = it
        chain = _Chain(itertools.compress(it, ctrl), _Finish(job))
    chain._job = job
    return chain


class _AsyncSteps(Generic[T]):
    """``async for`` over ``progress(async_iterable)``: one awaited item, one step.

    An async iterator has no C fast path to ride on: each item is an ``await`` of the source's ``__anext__``
    anyway, so counting here costs little next to it. The ends are those of the sync loop: exhausted, the
    source raising (it is seen here), cancel (``JobCancelled`` at the next step), and left early (``break``
    or an exception in the body), told apart in ``__del__`` from the caller's frame.
    """

    __slots__ = ("_inside", "_it", "_job")

    def __init__(self, job: JobState, it: AsyncIterator[T]) -> None:
        self._job = job
        self._it = it
        self._inside = False  # the body is running on the last item handed out

    def __aiter__(self) -> _AsyncSteps[T]:
        return self

    async def __anext__(self) -> T:
        job = self._job
        if self._inside:  # the body asked for the next item: the last one is done (tqdm's count)
            self._inside = False
            if job.state not in FINAL_STATES:
                job.count += 1
        step(job)
        try:
            item = await self._it.__anext__()
        except StopAsyncIteration:
            end_job(job, "succeeded")
            raise
        except BaseException as exc:
            finish(job, exc)
            raise
        self._inside = True
        return item

    def __del__(self) -> None:
        end_dropped(self, "an async loop")


def aiterate(job: JobState, iterable: AsyncIterable[T]) -> AsyncIterator[T]:
    """The async iterator to hand an ``async for``."""
    return _AsyncSteps(job, iterable.__aiter__())
