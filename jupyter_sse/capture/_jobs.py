"""Jobs driven by a library's own progress callbacks (not by a loop of ours).

The kernel side is imported at the first job, not when the extension loads: ``%load_ext`` stays cheap.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..protocol import FINAL_STATES

if TYPE_CHECKING:
    from ..kernel._state import JobState

__all__ = ["advance", "cancelled_error", "end", "ended", "new_job", "set_total"]


def ended(job: JobState) -> bool:
    return job.state in FINAL_STATES


def new_job(name: str, total: float | None = None, unit: str = "it", *, leave: bool = True) -> JobState:
    """A running job, nested under the job current where this is called."""
    from ..kernel._lifecycle import start_job
    from ..kernel._state import DisplayOptions, JobState, clip, finite_or_none
    from ..protocol import NAME_MAX_LENGTH

    options = DisplayOptions(leave=leave)
    job = JobState(clip(name, NAME_MAX_LENGTH), finite_or_none(total), unit, options=options, manual=True)
    start_job(job)
    return job


def advance(job: JobState, n: float | None = None, message: str | None = None, *, check: bool = True) -> None:
    """Record progress; with ``check``, raise :class:`JobCancelled` if a cancel was asked for (the caller is the
    library's own loop, in the thread that runs it). Without it (a library's callback thread), never raises."""
    if ended(job):
        return
    if n is not None:
        job.count = n
    if message is not None:
        from ..kernel._state import clip
        from ..protocol import TEXT_MAX_LENGTH

        job.message = clip(message, TEXT_MAX_LENGTH)
    if check:
        from ..kernel._control import step

        step(job)


def set_total(job: JobState, total: float | None) -> None:
    if not ended(job):
        from ..kernel._state import finite_or_none

        job.total = finite_or_none(total)


def end(job: JobState, exc: BaseException | None = None, *, failed: bool = False) -> None:
    """End ``job``: with ``exc``, or (``failed``) with the exception being handled now."""
    from ..kernel._control import finish

    if failed and exc is None:
        exc = sys.exc_info()[1] or RuntimeError("failed")
    finish(job, exc)


def cancelled_error(job: JobState) -> BaseException:
    """The :class:`JobCancelled` a cancelled ``job`` raises."""
    from ..kernel._errors import JobCancelled

    return JobCancelled(job.id)
