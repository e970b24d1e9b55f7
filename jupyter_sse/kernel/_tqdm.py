"""``jupyter_sse.tqdm``: a real tqdm (a subclass of ``tqdm.std.tqdm``, by way of ``tqdm.asyncio``) whose bar is
a job: switching is one import, and every tqdm API keeps working (``pandas()``, the locks, ``contrib.concurrent``,
``contrib.logging``, ``write``, the ``format_*`` helpers, ``_instances``, ``async for``, ``gather``).

Like ``tqdm.notebook`` it changes only where the bar goes: ``display`` and ``close`` write nothing to the
terminal; the job's own display (the cell output, or a text line outside a kernel) shows it, from the server's
state. The loop itself is tqdm's, unchanged, so a bar costs what a plain ``tqdm.std.tqdm`` costs per item.

How the job follows the bar:
- the count: the publisher reads the bar's ``n`` (tqdm writes it at each refresh, about every ``mininterval``);
- total, postfix and description: synced at each refresh and set at once by ``set_description``/``set_postfix``;
- cancel: :class:`JobCancelled` where tqdm considers a refresh (``update`` reads tqdm's clock there);
- the end: ``close``. Called while an exception propagates through its caller (``finally: bar.close()``, as
  pandas' ``progress_apply`` does, or a source that raises in tqdm's loop), the job fails with that exception.
  tqdm's loop also closes the bar when the loop is left (``GeneratorExit``): ``break`` is a normal early end,
  an exception in the loop's body a failure, told apart from the caller's frame as ``progress()`` does.
  Once closed, the bar ignores updates (tqdm's own rule), and the job never changes again.
"""

from __future__ import annotations

import contextlib
import sys
import time
import weakref
from collections.abc import Callable
from types import GeneratorType
from typing import Any

from tqdm.asyncio import tqdm_asyncio
from tqdm.std import tqdm as std_tqdm

from ..protocol import FINAL_STATES, NAME_MAX_LENGTH, TEXT_MAX_LENGTH
from ._control import check_total, closing_exception, finish, step
from ._iterators import end_left_loop
from ._lifecycle import start_job
from ._notify import with_notify
from ._state import DisplayOptions, JobState, clip, finite_or_none

__all__ = ["tqdm", "trange"]

_STD_ITER = std_tqdm.__iter__.__code__
_STEPS = (_STD_ITER, std_tqdm.update.__code__)
_FILE_ARG = 1  # index of ``file`` in the positional arguments after ``iterable, desc, total``


class _BarState(JobState):
    """A job whose count is its tqdm bar's ``n`` while it runs (a weak reference: the bar owns the job)."""

    __slots__ = ("bar",)
    bar: Callable[[], Any]

    def n(self) -> float:
        bar = self.bar() if self.state not in FINAL_STATES else None
        if bar is None:
            return self.count
        try:
            n: float = bar.n  # int stays int: "3/3", as tqdm prints it
            return n
        except Exception:  # a bar being torn down
            return self.count

    def freeze(self, exhausted: bool) -> None:
        # ending (or a cancel request): keep the count the bar reached
        if self.state not in FINAL_STATES:
            self.count = self.n()


def _print_nothing(s: str) -> None:
    """tqdm's status printer: the job's display shows the bar instead of the terminal."""


class tqdm(tqdm_asyncio):  # type: ignore[misc]  # tqdm ships no types; the name is tqdm's: one import
    """tqdm, published as a job. Arguments are tqdm's, plus ``metadata=`` (a dict stored with the job) and
    ``notify=`` (True, False or Apprise URLs: who is told when it ends).

    ``disable=None`` (tqdm: "off when not a terminal") keeps the bar on: the display is the job's, not the
    terminal. A total that is not a number >= 0 (or None, or ``inf``: unknown) raises TypeError/ValueError at
    the call, and a call that raises publishes nothing.
    """

    _job: _BarState | None = None
    _async_loop = False
    _clock: Callable[[], float] = time.time

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if "_lock" not in cls.__dict__:
            # its own reference to tqdm's shared write lock: code that deletes the class's lock and has it made
            # again (tqdm.contrib.concurrent's ensure_lock, tqdm's own tests) then works on this class as on tqdm
            cls.set_lock(cls.get_lock())
        return super().__new__(cls, *args, **kwargs)

    def __init__(
        self,
        iterable: Any = None,
        desc: str | None = None,
        total: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        metadata = with_notify(kwargs.pop("metadata", None), kwargs.pop("notify", None))
        check_total(total)
        if kwargs.get("disable", False) is None:
            kwargs["disable"] = False
        file = kwargs.get("file", args[_FILE_ARG] if len(args) > _FILE_ARG else None)
        self._job = None
        super().__init__(iterable, desc, total, *args, **kwargs)
        if self.disable:
            return
        job = _BarState(
            self.desc,
            self.total,
            self.unit,
            initial=self.n,
            smoothing=self.smoothing,
            metadata=metadata,
            options=DisplayOptions(
                leave=True if self.leave is None else bool(self.leave),
                file=file,
                ncols=self.ncols,
                unit_scale=self.unit_scale,
                unit_divisor=self.unit_divisor,
                bar_format=self.bar_format,
                ascii=self.ascii,
                mininterval=self.mininterval,
            ),
            manual=True,
        )
        job.bar = weakref.ref(self)
        if isinstance(iterable, GeneratorType):
            job.gen = iterable  # tells "the source raised" from "zip() ran out" when tqdm's loop is left
        self._job = job
        start_job(job)

    @property
    def _time(self) -> Callable[[], float]:
        """tqdm's clock; reading it raises :class:`JobCancelled` once cancellation was asked for.

        tqdm reads it where it considers a refresh (in ``update``, which its loop calls at each refresh), so the
        check costs nothing per item and nothing per ``update()`` between refreshes. Its loop reads it once
        and keeps it as a local: the loop runs exactly as tqdm's. Only those two readers see the cancel: where
        else tqdm reads its clock (``str(bar)``, ``reset``) a cancel must not surface.
        """
        job = self._job
        if job is None or not job.cancel_requested or job.state in FINAL_STATES:
            return self._clock
        if sys._getframe(1).f_code in _STEPS:
            step(job)
        return self._clock

    @_time.setter
    def _time(self, clock: Callable[[], float]) -> None:
        self._clock = clock  # tqdm's own, or a test's mock

    # -- where tqdm writes to the terminal: the job's display shows the bar instead -------------------------

    @staticmethod
    def status_printer(file: Any) -> Any:
        return _print_nothing

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Called at each refresh: carry what changed on the bar to the job."""
        job = self._job
        if job is not None and job.state not in FINAL_STATES:
            job.total = finite_or_none(self.total)
            job.message = clip(self.postfix or "", TEXT_MAX_LENGTH)
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing on the terminal to clear."""

    def moveto(self, n: int) -> None:
        """No terminal rows to move over."""

    # -- the job's steps and end ------------------------------------------------------------------------------

    def close(self) -> None:
        """End the bar and its job (see the module's notes for how the end is read)."""
        if getattr(self, "disable", True):
            return
        job = self._job
        if job is not None and job.state not in FINAL_STATES:
            self._end(job, sys._getframe(1))
        self.disable = True
        self._decr_instances(self)

    def _end(self, job: _BarState, caller: Any) -> None:
        job.count = self.n
        self.display()
        if isinstance(sys.exc_info()[1], GeneratorExit) and caller.f_code is _STD_ITER:
            # tqdm's loop was left: by break/return, or by an exception in the body of the caller's loop
            end_left_loop(job, caller.f_back)
            return
        finish(job, closing_exception(caller))

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        job = self._job
        if job is not None and job.state not in FINAL_STATES and not self.disable:
            job.count = self.n
            self.display()
            finish(job, exc)
        super().__exit__(exc_type, exc, tb)

    def __aiter__(self) -> tqdm:
        self._async_loop = True
        return self

    def __del__(self) -> None:
        # a bar dropped without close() ends as tqdm's does (its __del__ closes it): normally. An ``async for``
        # over it that was left early drops it here: by break, or by an exception in the loop's body, told
        # apart from the frame that dropped it as progress() does
        with contextlib.suppress(Exception):  # __del__ must not raise
            job = self._job
            if self._async_loop and job is not None and job.state not in FINAL_STATES and not self.disable:
                job.count = self.n
                end_left_loop(job, sys._getframe(1))
            self.close()

    # -- changes to the bar the job shows at once ------------------------------------------------------------

    def set_description(self, desc: str | None = None, refresh: bool | None = True) -> None:
        self._rename(desc)
        super().set_description(desc, refresh)

    def set_description_str(self, desc: str | None = None, refresh: bool | None = True) -> None:
        self._rename(desc)
        super().set_description_str(desc, refresh)

    def _rename(self, desc: str | None) -> None:
        job = self._job
        if job is not None and job.state not in FINAL_STATES:
            job.name = clip(desc or "", NAME_MAX_LENGTH)

    def set_postfix(self, ordered_dict: Any = None, refresh: bool | None = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh, **kwargs)
        self.display()

    def set_postfix_str(self, s: str = "", refresh: bool | None = True) -> None:
        super().set_postfix_str(s, refresh)
        self.display()

    def reset(self, total: Any = None) -> None:
        """tqdm's ``reset``: the job goes back to 0 (and the new total) and its timer restarts."""
        check_total(total)
        super().reset(total)
        job = self._job
        if job is not None and job.state not in FINAL_STATES:
            job.count = 0
            job.start = time.monotonic()
            job.rate = None
            self.display()

    @property
    def job_id(self) -> str | None:
        """The id of the job on the server (None when disabled)."""
        return self._job.id if self._job is not None else None


def trange(*args: int, **kwargs: Any) -> tqdm:
    """``tqdm(range(*args), **kwargs)``."""
    return tqdm(range(*args), **kwargs)
