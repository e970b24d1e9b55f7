"""Where a job runs: kernel id, notebook cell, notebook path, and the enclosing job (nesting).

IPython and ipykernel are only looked at when the process already imported them: a plain script never pays
for importing them, and a kernel always has them loaded.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from ..protocol import JOB_ID_CHARS, JOB_ID_MAX_LENGTH, is_valid_job_id

__all__ = [
    "KERNEL_ID_ENV",
    "NOT_A_TASK",
    "THREAD_PARENT",
    "RemoteParent",
    "cell_id",
    "clear_current",
    "current_job",
    "current_parent",
    "export_kernel_id",
    "ipython_shell",
    "is_kernel_shell",
    "kernel_id",
    "live",
    "notebook_path",
    "on_post_run_cell",
    "pop_job",
    "push_job",
    "reset_current",
    "set_current",
    "set_kernel_id",
    "task_parent",
]

# A kernel id travels in the environment and in job fields: held to the rule of job ids (UUIDs pass it).
_KERNEL_FILE = re.compile(rf"kernel-([{JOB_ID_CHARS}]{{1,{JOB_ID_MAX_LENGTH}}})\.json$")
KERNEL_ID_ENV = "JUPYTER_SSE_KERNEL_ID"
_UNSET: Any = object()
_kernel_id: Any = _UNSET


def ipython_shell() -> Any:
    """The running IPython shell (kernel or terminal), or None."""
    if "IPython" not in sys.modules:
        return None
    try:
        from IPython import get_ipython

        return get_ipython()
    except Exception:
        return None


def is_kernel_shell(shell: Any) -> bool:
    """True for ipykernel's ZMQ shell, whose outputs go to a notebook cell."""
    pub = getattr(shell, "display_pub", None)
    return (
        shell is not None
        and getattr(shell, "kernel", None) is not None
        and hasattr(pub, "set_thread_parent")
        and hasattr(pub, "reset_thread_parent")
    )


def kernel_id() -> str | None:
    """The id of the Jupyter kernel this process is, from its connection file name (cached)."""
    global _kernel_id
    if _kernel_id is _UNSET:
        _kernel_id = _find_kernel_id()
    return _kernel_id  # type: ignore[no-any-return]


def set_kernel_id(value: str | None) -> None:
    """The kernel this process works for, as carried from the process that started it (children)."""
    global _kernel_id
    if value and is_valid_job_id(value):
        _kernel_id = value
        os.environ[KERNEL_ID_ENV] = value  # this process's own children inherit it


def export_kernel_id() -> None:
    """Put this kernel's id in the environment: every child process (spawned, forked, a cluster's worker)
    inherits it and reports its jobs with it."""
    value = kernel_id()
    if value and os.environ.get(KERNEL_ID_ENV) != value:
        os.environ[KERNEL_ID_ENV] = value


def _find_kernel_id() -> str | None:
    if "ipykernel" in sys.modules:
        try:
            from ipykernel import get_connection_file

            match = _KERNEL_FILE.search(os.path.basename(get_connection_file()))
        except Exception:  # not in a running kernel (a child process that imported ipykernel)
            match = None
        if match:
            return match.group(1)
    value = os.environ.get(KERNEL_ID_ENV, "")
    return value if is_valid_job_id(value) else None


def cell_id() -> str | None:
    """The id of the notebook cell being executed, when the front end sent one (JupyterLab does)."""
    shell = ipython_shell()
    if shell is None:
        return None
    try:
        parent: Any = None
        kernel = getattr(shell, "kernel", None)
        if kernel is not None:
            try:
                parent = kernel.get_parent("shell")
            except TypeError:  # ipykernel < 6: no channel argument
                parent = kernel.get_parent()
        if not parent:
            parent = getattr(shell, "parent_header", None)
        value = parent["metadata"]["cellId"] if parent else None
    except Exception:
        return None
    return value if isinstance(value, str) and value else None


def notebook_path() -> str | None:
    """The notebook's path: jupyter_server sets ``JPY_SESSION_NAME`` for the kernels of a session."""
    return os.environ.get("JPY_SESSION_NAME") or None


# -- nesting: the current job follows the work (a context variable), not the thread -------------------------
#
# asyncio tasks copy the context, so tasks started under a job are its children and siblings of each other.
# Threads and processes do not carry it on Python 3.11: ``_propagate`` carries it there. The variable holds the
# innermost job (a local ``JobState``, or a ``RemoteParent`` for a job of the process that started this one);
# a job that ended stays in it until its context sets another, so lookups step outward past ended jobs.


class RemoteParent:
    """A job of another process (the one that started this one): only its id is known here."""

    __slots__ = ("id",)
    outer = None
    pid = -1
    ended = False

    def __init__(self, job_id: str) -> None:
        self.id = job_id

    def __repr__(self) -> str:
        return f"RemoteParent({self.id!r})"


_UNSET_JOB: Any = object()
_current: ContextVar[Any] = ContextVar("jupyter_sse_current_job", default=_UNSET_JOB)
THREAD_PARENT = "_jupyter_sse_parent"  # set on a Thread by _propagate when it starts under a job


def live(job: Any) -> Any:
    """``job``, or its nearest enclosing job that is still running (None if none is)."""
    while job is not None and job.ended:
        job = job.outer
    return job


# set by _propagate in a process that runs tasks a scheduler hands over with their parent attached (a Dask
# worker): returns the parent of the task running in this thread (None: it has none), or NOT_A_TASK
task_parent: Callable[[], Any] | None = None
NOT_A_TASK: Any = object()


def current_job() -> Any:
    """The innermost running job where this code runs (a ``JobState`` or ``RemoteParent``), or None."""
    job = _current.get()
    if job is _UNSET_JOB:
        # a thread the context did not follow into: the job that was current where it was started
        job = live(getattr(threading.current_thread(), THREAD_PARENT, None))
    elif job is not None and job.ended:
        job = live(job)
        _current.set(job)  # the same answer, without holding on to the ended job
    if task_parent is not None and (job is None or type(job) is RemoteParent):
        # a job of this process is more specific; a task's own parent (or its having none) more than the
        # parent of the work the process was started for (a worker outlives that work)
        found = task_parent()
        if found is not NOT_A_TASK:
            return found
    return job


def current_parent() -> str | None:
    """The id of the innermost running job where this code runs."""
    job = current_job()
    return None if job is None else job.id


def set_current(job: Any) -> Token[Any]:
    """Make ``job`` (or None: no job) the current one in this context; returns the token for ``reset_current``."""
    return _current.set(job)


def reset_current(token: Token[Any]) -> None:
    # ValueError: the token was made in another context, nothing of ours to undo here
    with contextlib.suppress(ValueError, RuntimeError):
        _current.reset(token)


def clear_current() -> None:
    """No job is current here any more (a cell ended: its open bars are not the parent of later cells' work)."""
    if _current.get() is not _UNSET_JOB:
        _current.set(None)


def push_job(job: Any) -> Any:
    """Make ``job`` the innermost job of this context (its ``outer`` was set by the caller); returns a handle."""
    _current.set(job)
    return job


def pop_job(handle: Any, job: Any) -> None:
    """``job`` ended: if it is still the current job of this context, its enclosing job is current again.

    Jobs may end out of order or in another context (a generator abandoned, a bar closed by another thread):
    then nothing changes here, and lookups step past the ended job.
    """
    if handle is None:
        return
    if _current.get() is job:
        _current.set(live(job.outer))


# -- IPython's post_run_cell: where a loop left by an exception learns which exception it was ----------------

_hooked: set[int] = set()
_hook_lock = threading.Lock()


def on_post_run_cell(shell: Any, callback: Callable[[Any], None]) -> bool:
    """Register ``callback(result)`` once per shell; False if the shell has no events."""
    with _hook_lock:
        if id(shell) in _hooked:
            return True
        try:
            shell.events.register("post_run_cell", callback)
        except Exception:
            return False
        _hooked.add(id(shell))
        return True


def _after_fork_in_child() -> None:
    # another thread may have held it at fork time; nobody in the child ever releases that copy
    _hook_lock._at_fork_reinit()  # type: ignore[attr-defined]
