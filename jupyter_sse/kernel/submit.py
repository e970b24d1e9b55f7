"""``submit(fn, *args, **kwargs)``: run ``fn`` as a background job in the kernel and return a handle at once.

The job is started from the caller's thread (so it records the running cell, the notebook path and the
enclosing job, and its output lands in the cell that submitted it), then handed to a daemon thread that runs
``fn``. In that thread the job is the current job (a context variable), so a ``progress()`` or ``job()``
inside ``fn`` reports as its child. A cancel (``handle.cancel()``, the API, the Cancel button) is passed down to
those children, so ``fn`` sees :class:`JobCancelled` at its next progress step.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..protocol import FINAL_STATES
from . import context
from ._control import check_total, finish
from ._errors import JobCancelled
from ._lifecycle import start_job
from ._notify import NotifyArg, with_notify
from ._state import JobState
from .job import JobSteps
from .publisher import get_publisher

__all__ = ["SubmittedJob", "submit"]

_log = logging.getLogger("jupyter_sse")
# seconds between re-sends of a running submitted job, so the server's reply can carry its cancel (see below)
CANCEL_POLL = 0.5


class _SubmittedState(JobState):
    """A submitted job's state: cancelling it cancels the jobs ``fn`` runs inside it.

    The server only knows the job it was asked to cancel; ``fn`` only steps its own inner loops. Without the
    cascade, a cancel of the background job would wait for ``fn`` to return.
    """

    __slots__ = ()

    def wire_fields(self, now: float) -> dict[str, Any]:
        # The server answers a batch with the cancels of the jobs *in that batch*, and an unchanged job is only
        # re-sent when its lease is due (10 s). A submitted job rarely changes itself (its children do), so it
        # would hear a cancel late, after the server's grace, which then interrupts the kernel's main thread.
        # Make its lease due every CANCEL_POLL seconds while it runs: one small update, and a prompt cancel.
        pub = self.publisher
        if pub is not None and self.state == "running" and now - self.sent_at >= CANCEL_POLL:
            self.sent_at = min(self.sent_at, now - pub.lease)
        return super().wire_fields(now)

    def request_cancel(self) -> None:
        super().request_cancel()
        try:
            _cancel_descendants(self.id)
        except Exception:  # the publisher thread calls this: never let it fail there
            _log.debug("jupyter-sse: cancelling the children of %s failed", self.id, exc_info=True)


def _cancel_descendants(job_id: str) -> None:
    """Ask every running job below ``job_id`` (children, grandchildren...) to stop."""
    running = [j for j in get_publisher().jobs() if j.state not in FINAL_STATES]
    below = {job_id}
    changed = True
    while changed:  # nesting is shallow: a few passes at most
        changed = False
        for j in running:
            if j.id not in below and j.parent in below:
                below.add(j.id)
                changed = True
    for j in running:
        if j.id != job_id and j.id in below:
            j.request_cancel()


class SubmittedJob(JobSteps):
    """The handle ``submit`` returns: like a ``concurrent.futures.Future`` for one background job."""

    def __init__(self, state: JobState, fn: Callable[..., Any]) -> None:
        self._state = state
        self._fn = fn
        self._done = threading.Event()
        self._value: Any = None
        self._exc: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def job_id(self) -> str:
        return self._state.id

    @property
    def state(self) -> str:
        """``running``, then ``succeeded``, ``failed`` or ``cancelled``."""
        return self._state.state

    @property
    def cancel_requested(self) -> bool:
        return self._state.cancel_requested

    def done(self) -> bool:
        """True once ``fn`` returned or raised."""
        return self._done.is_set()

    def cancel(self) -> bool:
        """Ask ``fn`` to stop: it gets :class:`JobCancelled` at its next progress step. False if it had ended."""
        if self._done.is_set() or self._state.state in FINAL_STATES:
            return False
        self._state.request_cancel()
        return True

    def result(self, timeout: float | None = None) -> Any:
        """``fn``'s return value; re-raises its exception (``JobCancelled`` if it was cancelled).

        Raises :class:`TimeoutError` if it has not finished within ``timeout`` seconds.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.job_id} still running after {timeout} s")
        if self._exc is not None:
            raise self._exc
        if self._state.state == "cancelled":
            raise JobCancelled(self.job_id)
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """``fn``'s exception (None if it returned); waits like :meth:`result`."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.job_id} still running after {timeout} s")
        return self._exc

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        state = self._state
        # in this thread the submitted job is the current one: progress() inside fn becomes its child
        state.stack = context.push_job(state)
        state.thread = threading.get_ident()
        try:
            try:
                self._value = self._fn(*args, **kwargs)
            except BaseException as exc:
                self._exc = exc
                finish(state, exc)
            else:
                # fn caught the JobCancelled of its inner loop and returned: finish() still ends it cancelled
                finish(state, None)
        finally:
            self._done.set()
            self._fn = _gone  # let go of fn (and what its closure holds)

    # -- display -------------------------------------------------------------------------------------------

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        # the live view was displayed once at submit time; showing the handle (a cell's last expression)
        # must not draw a second view of the same job, so it is only text
        return {"text/plain": repr(self)}

    def __repr__(self) -> str:
        s = self._state
        return f"<SubmittedJob {s.id} {s.name!r} {s.state}>"


def _gone(*args: Any, **kwargs: Any) -> None:
    return None


def submit(
    fn: Callable[..., Any],
    *args: Any,
    name: str | None = None,
    total: float | None = None,
    notify: NotifyArg = None,
    **kwargs: Any,
) -> SubmittedJob:
    """Run ``fn(*args, **kwargs)`` in a background daemon thread, as a job; return its handle at once.

    ``name`` (default: ``fn``'s name) and ``total`` describe the job; ``notify`` (True, False or Apprise URLs) says
    who is told when it ends. A ``progress()`` inside ``fn`` reports as its child. The cell that submits shows the
    job's live view; the kernel keeps running other cells.
    """
    if not callable(fn):
        raise TypeError(f"submit() needs a callable, not {type(fn).__name__}")
    total = check_total(total)
    label = name if name is not None else getattr(fn, "__name__", "") or "job"
    state = _SubmittedState(label, total, "it", metadata=with_notify({"submitted": True}, notify), manual=True)
    handle = SubmittedJob(state, fn)
    # started here, in the caller's thread: the job records this cell and its output goes to this cell
    start_job(state)
    # ...but it is not a job of this thread: a loop in a later cell must not become its child
    context.pop_job(state.stack, state)
    state.stack = None
    # the submitting cell failing after this line must not end the job (post_run_cell ends a cell's jobs)
    state.exec_count = None
    # fn runs in a copy of this cell's context, as an asyncio task would: ipykernel keeps the cell's parent header
    # in context variables, so fn's prints, displays and inner bars go to this cell (and record its id), not to
    # whichever cell runs last
    context_copy = contextvars.copy_context()
    thread = threading.Thread(
        target=context_copy.run,
        args=(handle._run, args, kwargs),
        name=f"jupyter-sse-job-{state.id}",
        daemon=True,
    )
    handle._thread = thread
    thread.start()
    return handle
