"""Dask's local schedulers (threads, processes, synchronous): one job per ``compute``/``persist``, tasks done
out of the graph's tasks, through dask's own callback mechanism (``dask.callbacks.Callback``, registered for the
whole process). The callbacks run in the thread that called ``compute``, so a cancel raises there at the next
finished task and dask stops firing new ones.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ._jobs import advance, end, new_job

__all__ = ["install", "uninstall"]

_KEY = "_jupyter_sse_job"  # in dask's per-compute state dict
_callback: Any = None


def _make(module: ModuleType) -> Any:
    class _Progress(module.Callback):  # type: ignore[misc, name-defined]
        def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
            total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
            state[_KEY] = new_job("dask.compute", total, "tasks")

        def _posttask(self, key: Any, result: Any, dsk: Any, state: dict[str, Any], worker_id: Any) -> None:
            job = state.get(_KEY)
            if job is not None:
                advance(job, len(state["finished"]))

        def _finish(self, dsk: Any, state: dict[str, Any], errored: bool) -> None:
            job = state.get(_KEY)
            if job is not None:
                if not errored:
                    advance(job, len(state["finished"]), check=False)
                end(job, failed=errored)

    return _Progress()


def _patch(module: ModuleType) -> None:
    global _callback
    if _callback is None:
        _callback = _make(module)
        _callback.register()


def install() -> None:
    from ._hooks import on_import

    on_import("dask.callbacks", _patch)


def uninstall() -> None:
    global _callback
    if _callback is not None:
        _callback.unregister()
        _callback = None
