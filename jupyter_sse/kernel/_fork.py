"""After a fork, the child's kernel side starts fresh.

The child has one thread, a copy of the parent's memory, and every lock in whatever state some other parent
thread left it (the publisher thread may hold ``END_LOCK`` while it builds a batch). Nothing in the child
would ever release those copies, so each lock is re-made, the publisher (thread, connection, job registry) is
dropped, and per-process registries are emptied: the parent's jobs are the parent's to report.
"""

from __future__ import annotations

import os
import sys

from . import _state

__all__ = ["forked", "forked_kernel_child"]

_forked = False


def forked() -> bool:
    """True in a process made by ``fork`` from one that had imported the kernel side."""
    return _forked


def forked_kernel_child() -> bool:
    """True in a forked child of a Jupyter kernel: it shares the kernel's output sockets but must not use them."""
    if not _forked:
        return False
    from .context import ipython_shell, is_kernel_shell

    return is_kernel_shell(ipython_shell())


def _after_fork_in_child() -> None:
    global _forked
    _forked = True
    _state.END_LOCK._at_fork_reinit()  # type: ignore[attr-defined]
    # sys.modules, not import: the import system is not for use in an at-fork handler
    for name in ("context", "publisher", "_lifecycle", "_propagate"):
        module = sys.modules.get(f"{__package__}.{name}")
        reset = getattr(module, "_after_fork_in_child", None)
        if reset is not None:
            reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
