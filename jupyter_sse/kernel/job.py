"""``job()``: progress for work that is not a loop."""

from __future__ import annotations

from typing import Any

from ..protocol import TEXT_MAX_LENGTH
from ._control import check_total, finish, step
from ._lifecycle import start_job
from ._notify import NotifyArg, with_notify
from ._state import DisplayOptions, JobState, clip, finite_or_none
from .display import show_log

__all__ = ["JobHandle", "JobSteps", "job"]


class JobSteps:
    """The steps of a job its code reports by hand (``job()``'s handle, ``submit()``'s). Each raises
    :class:`JobCancelled` once cancellation was asked for; after the job ended they change nothing."""

    __slots__ = ()
    _state: JobState

    def update(self, n: float = 1) -> None:
        """Add ``n`` to the work done."""
        if step(self._state):
            self._state.count += n

    def set(self, n: float) -> None:
        """Set the work done to ``n``."""
        if step(self._state):
            self._state.count = n

    def message(self, text: str) -> None:
        """The job's latest status text."""
        if step(self._state):
            self._state.message = clip(text, TEXT_MAX_LENGTH)


class JobHandle(JobSteps):
    """The object ``with job(...) as j`` gives. Every step (``update``, ``set``, ``message``, ``log``) raises
    :class:`JobCancelled` once cancellation was asked for: that is where the job stops. Steps after the job
    ended change nothing."""

    __slots__ = ("_state",)

    def __init__(self, state: JobState) -> None:
        self._state = state

    @property
    def id(self) -> str:
        return self._state.id

    @property
    def n(self) -> float:
        return self._state.count

    @property
    def state(self) -> str:
        return self._state.state

    @property
    def total(self) -> float | None:
        return self._state.total

    @total.setter
    def total(self, value: float | None) -> None:
        self._state.total = finite_or_none(check_total(value))

    @property
    def cancel_requested(self) -> bool:
        return self._state.cancel_requested

    def log(self, line: str) -> None:
        """Append log lines (multi-line text is split); subscribers get them as ``log`` events."""
        state = self._state
        if not step(state):
            return
        if state.publisher is not None and state.publisher.server is not None:
            state.add_log(str(line))
        else:  # nothing is published: the job's own output shows its last lines
            show_log(state, str(line))

    def __enter__(self) -> JobHandle:
        if self._state.state == "pending":
            start_job(self._state)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        finish(self._state, exc)

    def __repr__(self) -> str:
        s = self._state
        return f"<JobHandle {s.id} {s.name!r} {s.state} n={s.count} total={s.total}>"


def job(
    name: str = "",
    total: float | None = None,
    unit: str = "it",
    *,
    metadata: dict[str, Any] | None = None,
    leave: bool = True,
    notify: NotifyArg = None,
) -> JobHandle:
    """A job for work that is not a loop: ``with job("load", total=3) as j: ...; j.update()``."""
    metadata = with_notify(metadata, notify)
    total = check_total(total)
    return JobHandle(JobState(name, total, unit, metadata=metadata, options=DisplayOptions(leave=leave), manual=True))
