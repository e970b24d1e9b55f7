"""``progress`` and its class: the fast path. ``jupyter_sse.tqdm`` (a real tqdm subclass) is in ``_tqdm``."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sized
from types import TracebackType
from typing import Any, Generic, TypeVar

from ..protocol import FINAL_STATES, NAME_MAX_LENGTH
from ._control import check_total, closing_exception, finish, step
from ._iterators import aiterate, iterate
from ._lifecycle import end_job, start_job
from ._notify import NotifyArg, with_notify
from ._state import DisplayOptions, JobState, clip, finite_or_none

__all__ = ["Progress", "progress"]

T = TypeVar("T")


def _format_num(n: object) -> str:
    """tqdm's ``format_num``: 3 significant digits unless the plain form is shorter."""
    f = f"{n:.3g}".replace("+0", "+").replace("-0", "-")
    s = str(n)
    return f if len(f) < len(s) else s


def _total_of(iterable: object, total: object) -> object:
    total = check_total(total)
    if total is None and iterable is not None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except (TypeError, AttributeError):
            total = None
    return total


def _check_iterable(iterable: object) -> None:
    if iterable is None or hasattr(iterable, "__aiter__"):
        return
    if not (hasattr(iterable, "__iter__") or hasattr(iterable, "__getitem__")):
        raise TypeError(f"progress() needs an iterable (or an async iterable), not {type(iterable).__name__}")


class Progress(Generic[T]):
    """A progress bar whose state lives on the Jupyter server; tqdm's common arguments and methods.

    Arguments tqdm has that do not apply here (``position``, ``lock_args``, ``colour``, ``nrows``...) are
    accepted and ignored; unknown keyword arguments too. A total that is not a number >= 0 (or None, or ``inf``:
    unknown) raises at the call, before anything is published. ``async for`` works over an async iterable.
    """

    _lock: Any = None  # tqdm.get_lock()/set_lock(), for code that shares tqdm's lock with workers

    def __init__(
        self,
        iterable: Iterable[T] | None = None,
        desc: str | None = None,
        total: float | None = None,
        leave: bool | None = True,
        file: Any = None,
        ncols: int | None = None,
        mininterval: float = 0.1,
        maxinterval: float = 10.0,
        miniters: float | None = None,
        ascii: bool | str | None = None,
        disable: bool | None = False,
        unit: str = "it",
        unit_scale: bool | float = False,
        dynamic_ncols: bool = False,
        smoothing: float = 0.3,
        bar_format: str | None = None,
        initial: float = 0,
        position: int | None = None,
        postfix: Mapping[str, Any] | str | None = None,
        unit_divisor: float = 1000,
        write_bytes: bool = False,
        lock_args: tuple[Any, ...] | None = None,
        nrows: int | None = None,
        colour: str | None = None,
        delay: float = 0.0,
        metadata: dict[str, Any] | None = None,
        notify: NotifyArg = None,
        **kwargs: Any,
    ) -> None:
        _check_iterable(iterable)
        self._total = _total_of(iterable, total)  # raises on a bad total: nothing made, nothing published
        self.iterable = iterable
        # tqdm: disable=None means "disable when not a TTY"; here the server is the display, so keep it on
        self.disable = bool(disable)
        self._desc = desc or ""
        self.unit = unit
        self._initial = initial
        self._smoothing = smoothing
        self._metadata = with_notify(metadata, notify)  # True, False or Apprise URLs: told when it ends
        self._options = DisplayOptions(
            leave=True if leave is None else bool(leave),
            file=file,
            ncols=ncols,
            unit_scale=unit_scale,
            unit_divisor=unit_divisor,
            bar_format=bar_format,
            ascii=ascii,
            mininterval=mininterval,
        )
        self._job: JobState | None = None
        self._postfix_str = ""
        if self.disable:
            return
        self._job = self._new_job(manual=iterable is None)
        if postfix is not None:
            if isinstance(postfix, str):
                self._job.message = postfix
            else:
                self.set_postfix(postfix, refresh=False)
        if iterable is None:
            start_job(self._job)  # a manual bar starts now; an iterating one at __iter__

    def _new_job(self, *, manual: bool) -> JobState:
        return JobState(
            self._desc,
            self._total,
            self.unit,
            initial=self._initial,
            smoothing=self._smoothing,
            metadata=self._metadata,
            options=self._options,
            manual=manual,
        )

    # -- iteration -------------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[T]:
        iterable = self.iterable
        if iterable is None:
            raise TypeError("'Progress' object is not iterable: it was made without an iterable")
        if self.disable:
            return iter(iterable)
        job = self._fresh_job()
        it = iterate(job, iterable)
        start_job(job)
        return it

    def __aiter__(self) -> AsyncIterator[T]:
        iterable: Any = self.iterable
        if iterable is None or not hasattr(iterable, "__aiter__"):
            raise TypeError("'async for' over progress() needs an async iterable")
        if self.disable:
            return iterable.__aiter__()  # type: ignore[no-any-return]
        job = self._fresh_job()
        it = aiterate(job, iterable)
        start_job(job)
        return it

    def _fresh_job(self) -> JobState:
        job = self._job
        if job is None or job.state != "pending":  # iterated again: a new job for the new pass
            job = self._job = self._new_job(manual=False)
        return job

    def __len__(self) -> int:
        total: Any = self._total
        if total is not None:
            return int(total)
        if isinstance(self.iterable, Sized):
            return len(self.iterable)
        raise TypeError(f"{type(self).__name__} of an iterable without len() has no len()")

    def __bool__(self) -> bool:
        total = self._total
        return True if total is None else bool(total)

    def __contains__(self, item: object) -> bool:
        return item in self.iterable if self.iterable is not None else False  # type: ignore[operator]

    # -- context manager -------------------------------------------------------------------------------------

    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        job = self._job
        if job is None or (exc is None and job.state == "pending"):
            return  # disabled, or made with an iterable that was never iterated: no job to end
        finish(job, exc)

    def __del__(self) -> None:
        # a manual bar dropped without close(), as tqdm closes it; an iterating bar is ended by its loop
        try:
            job = self._job
            if job is not None and job.manual and job.state == "running":
                end_job(job, "succeeded", wait=False)
        except Exception:
            pass

    # -- tqdm's methods ---------------------------------------------------------------------------------------

    def update(self, n: float | None = 1) -> bool | None:
        """Add ``n`` to the count; raises JobCancelled when cancellation was asked for; ignored after close."""
        job = self._job
        if job is not None and step(job) and n:
            job.count += n
        return None

    def close(self) -> None:
        """End the job: ``failed`` when called while an exception propagates (``finally: bar.close()``)."""
        job = self._job
        if job is not None and job.state == "running":
            finish(job, closing_exception(sys._getframe(1)))

    def reset(self, total: float | None = None) -> None:
        """Back to 0 (and a new total), restarting the timer, as tqdm's reset."""
        job = self._job
        if job is None or job.state in FINAL_STATES:
            return
        if total is not None:
            self.total = total
        import time

        job.count = 0
        job.start = time.monotonic()
        job.rate = None

    def refresh(self, nolock: bool = False, lock_args: Any = None) -> None:
        job = self._job
        if job is not None and job.publisher is not None:
            job.publisher.wake()

    def clear(self, nolock: bool = False) -> None:
        """tqdm clears the terminal line; here the display redraws on its own."""

    def unpause(self) -> None:
        """tqdm resets its print timer; nothing to do here."""

    def display(self, msg: str | None = None, pos: int | None = None) -> None:
        self.refresh()

    def set_description(self, desc: str | None = None, refresh: bool | None = True) -> None:
        self._set_name(desc or "")

    def set_description_str(self, desc: str | None = None, refresh: bool | None = True) -> None:
        self._set_name(desc or "")

    def _set_name(self, name: str) -> None:
        self._desc = name
        if self._job is not None and self._job.state not in FINAL_STATES:
            self._job.name = clip(name, NAME_MAX_LENGTH)

    def set_postfix(
        self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool | None = True, **kwargs: Any
    ) -> None:
        """``loss=0.123, acc=0.9`` as tqdm formats it; goes to the job's ``message``."""
        postfix: dict[str, Any] = dict(ordered_dict or {})
        for key in sorted(kwargs):
            postfix[key] = kwargs[key]
        parts = []
        for key, value in postfix.items():
            is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
            text = _format_num(value) if is_num else str(value)
            parts.append(f"{key}={text.strip()}")
        self.set_postfix_str(", ".join(parts))

    def set_postfix_str(self, s: str = "", refresh: bool | None = True) -> None:
        self._postfix_str = str(s)
        if self._job is not None and self._job.state not in FINAL_STATES:
            self._job.message = self._postfix_str

    @classmethod
    def write(cls, s: str, file: Any = None, end: str = "\n", nolock: bool = False) -> None:
        """Print a line (tqdm's way of printing without breaking bars)."""
        fp = file if file is not None else sys.stdout
        fp.write(s)
        fp.write(end)

    @classmethod
    def get_lock(cls) -> Any:
        if cls._lock is None:
            import threading

            cls._lock = threading.RLock()
        return cls._lock

    @classmethod
    def set_lock(cls, lock: Any) -> None:
        cls._lock = lock

    # -- properties -------------------------------------------------------------------------------------------

    @property
    def n(self) -> float:
        job = self._job
        return job.n() if job is not None else 0

    @n.setter
    def n(self, value: float) -> None:
        job = self._job
        if job is not None and job.state not in FINAL_STATES:
            job.count = value

    @property
    def total(self) -> float | None:
        return self._total  # type: ignore[return-value]

    @total.setter
    def total(self, value: float | None) -> None:
        self._total = _total_of(None, value)
        if self._job is not None and self._job.state not in FINAL_STATES:
            self._job.total = finite_or_none(self._total)

    @property
    def desc(self) -> str:
        return self._desc

    @desc.setter
    def desc(self, value: str) -> None:
        self._set_name(value or "")

    @property
    def postfix(self) -> str:
        return self._postfix_str

    @property
    def leave(self) -> bool:
        return self._options.leave

    @property
    def job_id(self) -> str | None:
        """The id of the job on the server (None when disabled)."""
        return self._job.id if self._job is not None else None

    @property
    def format_dict(self) -> dict[str, Any]:
        job = self._job
        n = job.n() if job is not None else 0
        elapsed = job.elapsed() if job is not None else 0.0
        rate = job.rate if job is not None else None
        return {
            "n": n,
            "total": self._total,
            "elapsed": elapsed,
            "prefix": self._desc,
            "unit": self.unit,
            "rate": rate,
            "postfix": self._postfix_str,
        }

    def __repr__(self) -> str:
        job = self._job
        if job is None:
            return f"<{type(self).__name__} disabled>"
        from .display import format_text

        return format_text(job, final=job.state in FINAL_STATES)


def progress(
    iterable: Iterable[T] | None = None,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    **tqdm_kwargs: Any,
) -> Progress[T]:
    """Wrap an iterable (or make a manual bar with ``total``): ``for x in progress(data): ...``.

    ``async for x in progress(async_iterable)`` works too. A bad ``total`` or ``iterable`` raises TypeError or
    ValueError here, and nothing is published.
    """
    if iterable is None and total is None:
        raise TypeError("progress() needs an iterable, or total= for a manual bar")
    return Progress(iterable, desc=desc, total=total, unit=unit, **tqdm_kwargs)
