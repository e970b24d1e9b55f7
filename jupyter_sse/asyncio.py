"""Progress for asyncio: ``gather`` and ``as_completed`` as ``tqdm.asyncio`` has them, each awaited item a step.

``await gather(*aws, desc="fetch")`` is ``asyncio.gather`` (results in order; ``return_exceptions``) whose job
counts the awaitables as they finish. ``for f in as_completed(aws, desc="fetch"): await f`` is
``asyncio.as_completed`` whose job counts each awaited result.

The job ends ``succeeded`` when every awaitable is done; ``failed`` with the first exception that reaches the
caller (the others keep running, as with ``asyncio.gather``); ``cancelled`` when the caller's task is cancelled
or cancellation is asked for (the awaitables still running are cancelled then: nobody waits for them any more).
For ``async for`` over an async iterable, use ``progress(async_iterable)``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any, TypeVar

from .kernel._control import check_total, finish, step
from .kernel._errors import JobCancelled
from .kernel._iterators import end_dropped
from .kernel._lifecycle import start_job
from .kernel._state import DisplayOptions, JobState

__all__ = ["as_completed", "gather"]

T = TypeVar("T")
_log = logging.getLogger("jupyter_sse")


def _awaitables(aws: Iterable[Any], caller: str) -> list[Any]:
    aws = list(aws)
    for a in aws:
        if not inspect.isawaitable(a):
            raise TypeError(f"{caller}() takes awaitables, not {type(a).__name__}")
    return aws


def _new_job(
    count: int, desc: str | None, total: object, unit: str, leave: bool, metadata: dict[str, Any] | None
) -> JobState:
    checked = check_total(total)
    return JobState(
        desc or "",
        count if total is None else checked,
        unit,
        metadata=metadata,
        options=DisplayOptions(leave=leave),
        manual=True,
    )


async def gather(
    *aws: Awaitable[Any],
    desc: str | None = None,
    total: float | None = None,
    unit: str = "it",
    return_exceptions: bool = False,
    leave: bool = True,
    metadata: dict[str, Any] | None = None,
) -> list[Any]:
    """``asyncio.gather(*aws)`` as a job: one step per awaitable done; the results in the order of ``aws``."""
    checked = _awaitables(aws, "gather")
    job = _new_job(len(checked), desc, total, unit, leave, metadata)  # a bad argument raises before any work
    futures = [asyncio.ensure_future(a) for a in checked]
    start_job(job)
    pending = set(futures)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for f in done:
                if not return_exceptions:
                    if f.cancelled():
                        raise asyncio.CancelledError
                    exc = f.exception()
                    if exc is not None:
                        raise exc
                if step(job):
                    job.count += 1
    except BaseException as exc:
        if not isinstance(exc, Exception) or isinstance(exc, JobCancelled):
            for f in pending:
                f.cancel()
        finish(job, exc)
        raise
    finish(job, None)
    return [_outcome(f) for f in futures]


def _outcome(f: asyncio.Future[Any]) -> Any:
    if f.cancelled():
        return asyncio.CancelledError()
    exc = f.exception()
    return exc if exc is not None else f.result()


class _Completed(Iterator["Awaitable[Any]"]):
    """``asyncio.as_completed``'s iterator; each awaitable it yields steps the job once awaited."""

    def __init__(self, job: JobState, it: Iterator[Awaitable[Any]]) -> None:
        self._job = job
        self._it = it

    def __iter__(self) -> _Completed:
        return self

    def __next__(self) -> Awaitable[Any]:
        job = self._job
        step(job)
        try:
            nxt = next(self._it)
        except StopIteration:
            finish(job, None)
            raise
        except BaseException as exc:
            finish(job, exc)
            raise
        return self._counted(nxt)

    async def _counted(self, aw: Awaitable[Any]) -> Any:
        job = self._job
        try:
            result = await aw
        except BaseException as exc:
            finish(job, exc)
            raise
        if step(job):
            job.count += 1
        return result

    def __del__(self) -> None:
        # dropped before the end: by break (a normal early end) or an exception in the caller's loop body
        end_dropped(self, "as_completed")


def as_completed(
    aws: Iterable[Awaitable[T]],
    *,
    timeout: float | None = None,
    desc: str | None = None,
    total: float | None = None,
    unit: str = "it",
    leave: bool = True,
    metadata: dict[str, Any] | None = None,
) -> Iterator[Awaitable[T]]:
    """``asyncio.as_completed(aws, timeout=...)`` as a job: each awaitable it yields counts once awaited."""
    checked = _awaitables(aws, "as_completed")
    job = _new_job(len(checked), desc, total, unit, leave, metadata)
    it = asyncio.as_completed(checked, timeout=timeout)
    start_job(job)
    return _Completed(job, iter(it))
