"""``joblib.Parallel``: one job per call, tasks completed out of dispatched (joblib draws no bar of its own).

``Parallel`` runs every call through one generator (``_get_outputs``, or ``_get_sequential_output`` for one
worker), for ``return_as="list"`` and the generator forms alike: wrapping it gives the job the call's lifetime.
``print_progress`` (called, under joblib's lock, after each completed batch, in callback threads too) carries
the counts. A cancel is thrown into joblib's generator at its next result, so joblib aborts its workers itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._jobs import advance, cancelled_error, end, ended, new_job, set_total
from ._patch import Patches

if TYPE_CHECKING:
    from ..kernel._state import JobState

__all__ = ["install", "uninstall"]

_patches = Patches()
_ATTR = "_jupyter_sse_job"


def _counts(parallel: Any, job: JobState) -> None:
    done = getattr(parallel, "n_completed_tasks", 0)
    dispatched = getattr(parallel, "n_dispatched_tasks", 0)
    total = getattr(parallel, "n_tasks", None)
    if total is None and getattr(parallel, "_original_iterator", None) is None:
        total = dispatched  # the input is consumed: every task is dispatched
    set_total(job, total)
    advance(job, done, f"{done}/{dispatched} dispatched", check=False)


def _run(parallel: Any, outputs: Generator[Any, None, None]) -> Generator[Any, None, None]:
    job = new_job("joblib.Parallel", getattr(parallel, "n_tasks", None), "tasks")
    parallel.__dict__[_ATTR] = job
    try:
        value = next(outputs)
        while True:
            yield value
            _counts(parallel, job)
            # a cancel goes through joblib's own abort path (it stops its workers), then out of the call
            cancel = job.cancel_requested and not ended(job)
            value = outputs.throw(cancelled_error(job)) if cancel else next(outputs)
    except StopIteration:
        _counts(parallel, job)
        end(job)
    except GeneratorExit:  # ``return_as="generator"`` left early by its consumer: its choice, not a failure
        end(job)
        raise
    except BaseException as exc:
        end(job, exc)
        raise
    finally:
        parallel.__dict__.pop(_ATTR, None)
        outputs.close()


def _patch(module: ModuleType) -> None:
    cls = module.Parallel
    for name in ("_get_outputs", "_get_sequential_output"):
        original = getattr(cls, name, None)
        if original is None:
            continue

        def wrapper(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            return _run(self, __original(self, *args, **kwargs))

        wrapper.__name__ = name
        _patches.set(cls, name, wrapper)
    print_progress = cls.print_progress

    def print_progress_(self: Any) -> None:
        job = self.__dict__.get(_ATTR)
        if job is not None:
            with contextlib.suppress(Exception):  # counting never breaks joblib's callback
                _counts(self, job)
        print_progress(self)

    _patches.set(cls, "print_progress", print_progress_)


def install() -> None:
    from ._hooks import on_import

    on_import("joblib.parallel", _patch)


def uninstall() -> None:
    _patches.restore()
