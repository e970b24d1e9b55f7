"""Starting and ending jobs: context, display, publisher; and how a job learns how its loop ended."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

from ..protocol import FINAL_STATES, TEXT_MAX_LENGTH
from . import _fork, _propagate, context
from ._errors import JobCancelled
from ._state import END_LOCK, JobState
from .display import make_display
from .publisher import get_publisher

__all__ = ["end_early", "end_job", "left_by_exception", "outcome", "start_job"]

_log = logging.getLogger("jupyter_sse")
# loops left by an exception in IPython's main thread, waiting for post_run_cell to say which exception
_stopping: list[JobState] = []


def outcome(exc: BaseException | None) -> tuple[str, dict[str, str] | None]:
    """The terminal state (and error) for a job whose code ended with ``exc``."""
    if exc is None:
        return "succeeded", None
    if isinstance(exc, (KeyboardInterrupt, JobCancelled)):
        return "cancelled", None
    return "failed", {"type": type(exc).__name__, "message": str(exc)[:TEXT_MAX_LENGTH]}


def start_job(job: JobState) -> None:
    """From the user's thread: where it runs, its display, and the publisher. Never raises."""
    try:
        job.state = "running"
        job.kernel_id = context.kernel_id()
        job.cell_id = context.cell_id()
        job.path = context.notebook_path()
        _propagate.install()
        outer = context.current_job()
        job.outer = outer
        job.parent = None if outer is None else outer.id
        job.stack = context.push_job(job)
        job.thread = threading.get_ident()
        shell = context.ipython_shell()
        # a forked child runs no cells: no post_run_cell will come to settle its loops
        if shell is not None and threading.current_thread() is threading.main_thread() and not _fork.forked():
            job.exec_count = getattr(shell, "execution_count", None)
            context.on_post_run_cell(shell, _post_run_cell)
        # a forked child of a kernel shares the kernel's output channels, which only the kernel may use
        display = None if _fork.forked_kernel_child() else make_display(job)
        if display is not None:
            try:
                display.start(job)
            except Exception:
                _log.debug("jupyter-sse: display start failed", exc_info=True)
        job.display = display
        get_publisher().add(job)
    except Exception:
        _log.debug("jupyter-sse: starting job %s failed", job.id, exc_info=True)


def end_job(
    job: JobState,
    state: str,
    *,
    error: dict[str, str] | None = None,
    message: str | None = None,
    exhausted: bool = False,
    wait: bool = True,
) -> bool:
    """Move ``job`` to a terminal state once (False if it had ended); final display; send it. Never raises."""
    with END_LOCK:
        if job.state in FINAL_STATES:
            return False
        job.freeze(exhausted)
        job.state = state
        job.error = error
        if message is not None:
            job.message = message
        job.stopping = False
        job.end = time.monotonic()
        # an ended job points at a running one: a chain of ended jobs (bars closed out of order) is never kept
        job.outer = context.live(job.outer)
    if job.pid != os.getpid():
        return True
    try:
        context.pop_job(job.stack, job)
        job.stack = None
        display = job.display
        if display is not None:
            try:
                display.finish(job)
            except Exception:
                _log.debug("jupyter-sse: display finish failed", exc_info=True)
        pub = job.publisher
        if pub is not None:
            # only the outermost job of this process waits: an inner loop that ends a thousand times must not
            # wait each time, but a child process's job must (the process may end with os._exit right after)
            pub.job_ended(job, wait=wait and not _nested_here(job))
    except Exception:
        _log.debug("jupyter-sse: ending job %s failed", job.id, exc_info=True)
    return True


def end_early(job: JobState) -> None:
    """The loop was left by ``break``/``return`` (or its iterator dropped): succeeded at the count reached."""
    with END_LOCK:
        if job.state in FINAL_STATES:
            return
        job.freeze(exhausted=False)
        total = job.total
        reached = _fmt(job.count) + (f"/{_fmt(total)}" if total is not None else "")
    end_job(job, "succeeded", message=f"stopped early at {reached}")


def _nested_here(job: JobState) -> bool:
    """True if an enclosing job of this same process is still running (it will wait for the flush)."""
    outer = job.outer
    pid = job.pid
    while outer is not None:
        if outer.pid == pid and not outer.ended:
            return True
        outer = outer.outer
    return False


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def left_by_exception(job: JobState) -> None:
    """The loop was left by an exception we cannot see (``__del__`` runs with none set).

    In IPython's main thread, hold the job until post_run_cell tells the cell's exception; elsewhere fail it.
    """
    shell = context.ipython_shell()
    if (
        shell is not None
        and job.exec_count is not None
        and threading.current_thread() is threading.main_thread()
        and job.thread == threading.get_ident()
    ):
        with END_LOCK:
            if job.state in FINAL_STATES:
                return
            job.freeze(exhausted=False)
            job.stopping = True
            _stopping.append(job)
        return
    end_job(
        job,
        "failed",
        error={"type": "Exception", "message": "the loop exited by an exception"},
        # a forked child may leave with os._exit right after: send it first (bounded), as any child's job ends
        wait=_fork.forked(),
    )


def _after_fork_in_child() -> None:
    # the parent's loops waiting for post_run_cell are not the child's to settle
    _stopping.clear()


def _post_run_cell(result: Any) -> None:
    """IPython's post_run_cell: settle the jobs of the cell that ended."""
    # the cell is over: a bar it left open is not the parent of later cells' work (cells share one context)
    context.clear_current()
    try:
        exc = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        count = getattr(result, "execution_count", None)
        with END_LOCK:
            jobs = list(_stopping)
            _stopping.clear()
        for job in jobs:
            error: dict[str, str] | None
            if exc is None:
                state, error = (
                    "failed",
                    {
                        "type": "unknown",
                        "message": "the loop was left by an exception that the cell caught",
                    },
                )
            else:
                state, error = outcome(exc)
            end_job(job, state, error=error)
        if exc is not None:
            # manual bars the failed cell started and left open: the exception ended them
            state, cell_error = outcome(exc)
            for job in get_publisher().jobs():
                if job.manual and job.state == "running" and job.exec_count is not None and job.exec_count == count:
                    end_job(job, state, error=cell_error)
    except Exception:
        _log.debug("jupyter-sse: post_run_cell failed", exc_info=True)


# child processes started before the first job (a cluster made in an early cell) inherit the kernel id too
with contextlib.suppress(Exception):
    context.export_kernel_id()
