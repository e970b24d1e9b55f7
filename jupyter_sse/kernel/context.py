"""Where a job runs: kernel id, notebook cell, notebook path, and the enclosing job (nesting).

IPython and ipykernel are only looked at when the process already imported them: a plain script never pays
for importing them, and a kernel always has them loaded.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "cell_id",
    "current_parent",
    "ipython_shell",
    "is_kernel_shell",
    "kernel_id",
    "notebook_path",
    "on_post_run_cell",
    "pop_job",
    "push_job",
]

_KERNEL_FILE = re.compile(r"kernel-([A-Za-z0-9_-]{1,64})\.json$")
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


def _find_kernel_id() -> str | None:
    if "ipykernel" not in sys.modules:
        return None
    try:
        from ipykernel import get_connection_file

        match = _KERNEL_FILE.search(os.path.basename(get_connection_file()))
    except Exception:  # not in a running kernel
        return None
    return match.group(1) if match else None


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


# -- nesting: a per-thread stack of the jobs that are running ------------------------------------------------

_local = threading.local()


def _stack() -> list[Any]:
    stack: list[Any] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def current_parent() -> str | None:
    """The id of the innermost running job of this thread."""
    stack = _stack()
    return stack[-1].id if stack else None


def push_job(job: Any) -> list[Any]:
    """Make ``job`` the innermost job of this thread; returns the stack, to pop it from any thread later."""
    stack = _stack()
    stack.append(job)
    return stack


def pop_job(stack: list[Any] | None, job: Any) -> None:
    """Remove ``job`` from ``stack`` (jobs may end out of order: a generator abandoned, a bar closed late)."""
    if not stack:
        return
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is job:
            del stack[i]
            return


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
