"""Jobs driven by a library's own progress callbacks (not by a loop of ours)."""

from __future__ import annotations

import sys
from typing import Any

from .._control import finish, step
from .._lifecycle import start_job
from .._state import MESSAGE_MAX, NAME_MAX, TERMINAL, DisplayOptions, JobState, clip, finite_or_none

__all__ = ["advance", "end", "new_job", "set_total"]


def new_job(name: str, total: float | None = None, unit: str = "it", *, leave: bool = True) -> JobState:
    """A running job, nested under the job current where this is called."""
    job = JobState(clip(name, NAME_MAX), finite_or_none(total), unit, options=DisplayOptions(leave=leave), manual=True)
    start_job(job)
    return job


def advance(job: JobState, n: float | None = None, message: str | None = None, *, check: bool = True) -> None:
    """Record progress; with ``check``, raise :class:`JobCancelled` if a cancel was asked for (the caller is the
    library's own loop, in the thread that runs it). Without it (a library's callback thread), never raises."""
    if job.state in TERMINAL:
        return
    if n is not None:
        job.count = n
    if message is not None:
        job.message = clip(message, MESSAGE_MAX)
    if check:
        step(job)


def set_total(job: JobState, total: float | None) -> None:
    if job.state not in TERMINAL:
        job.total = finite_or_none(total)


def end(job: JobState, exc: BaseException | None = None, *, failed: bool = False) -> None:
    """End ``job``: with ``exc``, or (``failed``) with the exception being handled now."""
    if failed and exc is None:
        exc = sys.exc_info()[1] or RuntimeError("failed")
    finish(job, exc)


def pending_cancel(job: Any) -> bool:
    return bool(getattr(job, "cancel_requested", False)) and job.state not in TERMINAL
