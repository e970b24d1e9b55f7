"""What every kind of job shares: the step that checks for a cancel, the end of a ``with`` block, and the
validation of a total given by user code.

``job()``, ``submit()``, ``progress()`` and the tqdm subclass all step and end through these, so a cancel, an
exception or a ``with`` block ends each of them the same way.
"""

from __future__ import annotations

import math
import numbers
import sys
from types import FrameType

from ..protocol import FINAL_STATES
from ._errors import JobCancelled
from ._lifecycle import end_job, outcome
from ._state import JobState

__all__ = ["check_total", "closing_exception", "finish", "step"]


def step(job: JobState) -> bool:
    """Before a step changes ``job``: raise :class:`JobCancelled` if cancellation was asked for (the job ends
    ``cancelled`` first); False when the job has ended, so the step must change nothing (as tqdm ignores
    updates after ``close()``)."""
    if job.cancel_requested:
        end_job(job, "cancelled")
        raise JobCancelled(job.id)
    return job.state not in FINAL_STATES


def finish(job: JobState, exc: BaseException | None) -> None:
    """End ``job`` by how its code ended: ``exc`` (None: normally). Once; the exception is never swallowed.

    Ending normally after a cancel was asked for (the code caught :class:`JobCancelled`) is still ``cancelled``.
    """
    if job.state in FINAL_STATES:
        return
    if exc is None:
        end_job(job, "cancelled" if job.cancel_requested else "succeeded")
        return
    if _is_task_cancel(exc):
        end_job(job, "cancelled")
        return
    state, error = outcome(exc)
    end_job(job, state, error=error)


def closing_exception(frame: FrameType) -> BaseException | None:
    """The exception propagating through ``frame``, where ``close()`` was called: ``finally: bar.close()``.

    ``sys.exc_info()`` also shows an exception that an enclosing ``except`` block is handling (a loop run in a
    retry handler); only one whose traceback passed through ``frame`` is this code's end. The ends of iteration
    (``StopIteration``, ``GeneratorExit``...) are not failures: they are how a loop ends.
    """
    exc = sys.exc_info()[1]
    if exc is None or isinstance(exc, (StopIteration, StopAsyncIteration, GeneratorExit)):
        return None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame is frame:
            return exc
        tb = tb.tb_next
    return None


def _is_task_cancel(exc: BaseException) -> bool:
    # asyncio's CancelledError only exists once asyncio is loaded; a cancelled task is a cancelled job
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


def check_total(total: object, *, name: str = "total") -> float | None:
    """A total from user code: None or ``inf`` (unknown, as tqdm reads ``inf``), or a number >= 0.

    Raises TypeError for a non-number (a string, a bool...) and ValueError for NaN or a negative number, so the
    mistake shows at the call instead of as a bar with no total.
    """
    if total is None:
        return None
    if isinstance(total, (bool, complex)) or not isinstance(total, numbers.Number):
        raise TypeError(f"{name} must be a number or None, not {type(total).__name__}")
    value = float(total)  # type: ignore[arg-type]  # numbers.Number: int, float, Decimal, Fraction, NumPy
    if math.isnan(value):
        raise ValueError(f"{name} must be a number >= 0 or None, not NaN")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {total!r}")
    if math.isinf(value):
        return None
    return total  # type: ignore[return-value]  # keep ints ints (and NumPy scalars as given)
