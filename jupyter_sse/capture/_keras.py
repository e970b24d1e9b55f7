"""Keras 3 ``model.fit/evaluate/predict``: its ``ProgbarLogger`` (one ``Progbar`` per epoch, written to stdout
with ANSI codes, backspaces and carriage returns) has its methods replaced in place, so it reports to jobs:

- ``fit``: one job, epochs done out of ``epochs``, with the last epoch's logs as its message; each epoch a job
  nested under it, steps done out of the epoch's steps, with the running metrics;
- ``evaluate`` and ``predict``: one job each, steps done (validation inside ``fit`` stays silent, as Keras keeps
  it).

A cancel sets the model's own flag (``stop_training``, ``stop_evaluating``, ``stop_predicting``): Keras ends the
step it is in and returns, with its end-of-training callbacks run; the jobs end ``cancelled``.
"""

from __future__ import annotations

import numbers
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._jobs import advance, cancelled_error, end, ended, new_job, set_total
from ._patch import Patches

if TYPE_CHECKING:
    from ..kernel._state import JobState

__all__ = ["install", "uninstall"]

_patches = Patches()
_open = threading.local()  # the jobs this thread's Keras calls opened: ended if the call raises


def _track(job: JobState) -> JobState:
    jobs = getattr(_open, "jobs", None)
    if jobs is None:
        jobs = _open.jobs = []
    jobs.append(job)
    return job


def _format(logs: Any) -> str:
    parts = []
    for key, value in dict(logs or {}).items():
        try:
            parts.append(f"{key}={float(value):.4g}")
        except (TypeError, ValueError):
            if isinstance(value, numbers.Number):
                parts.append(f"{key}={value}")
    return ", ".join(parts)


def _stop_if_cancelled(self: Any, flag: str, *jobs: JobState | None) -> None:
    if any(job is not None and job.cancel_requested and not ended(job) for job in jobs):
        self.__dict__["_sse_cancelled"] = True  # the run ends cancelled, whichever of its jobs was cancelled
        model = getattr(self, "model", None)
        if model is not None:
            setattr(model, flag, True)


def _at(job: JobState, batch: int, message: str | None = None) -> None:
    # Keras may run batch-end callbacks in a thread pool, so they can arrive out of order: a count never goes back
    advance(job, max(job.count, batch + 1), message, check=False)


def _job(self: Any, attr: str) -> JobState | None:
    job: JobState | None = self.__dict__.get(attr)
    return job if job is not None and not ended(job) else None


def _close(self: Any, attr: str, logs: Any = None) -> None:
    job = self.__dict__.pop(attr, None)
    if job is not None:
        cancelled = self.__dict__.get("_sse_cancelled", False)
        if not ended(job):
            if not cancelled:
                set_total(job, job.count)
            line = _format(logs)
            if line:
                job.message = line
        end(job, cancelled_error(job) if cancelled else None)


def on_train_begin(self: Any, logs: Any = None) -> None:
    self._called_in_fit = True
    self.__dict__.pop("_sse_cancelled", None)
    self.__dict__["_sse_fit"] = _track(new_job("Keras fit", self.epochs, "epochs"))


def on_epoch_begin(self: Any, epoch: int, logs: Any = None) -> None:
    self.__dict__["_sse_epoch"] = _track(new_job(f"epoch {epoch + 1}/{self.epochs}", self.target, "steps"))


def on_train_batch_end(self: Any, batch: int, logs: Any = None) -> None:
    job = _job(self, "_sse_epoch")
    if job is not None:
        _at(job, batch, _format(logs))
    _stop_if_cancelled(self, "stop_training", job, _job(self, "_sse_fit"))


def on_epoch_end(self: Any, epoch: int, logs: Any = None) -> None:
    _close(self, "_sse_epoch", logs)
    fit = _job(self, "_sse_fit")
    if fit is not None:
        advance(fit, epoch + 1, f"epoch {epoch + 1}/{self.epochs}: {_format(logs)}", check=False)


def on_train_end(self: Any, logs: Any = None) -> None:
    _close(self, "_sse_epoch")
    _close(self, "_sse_fit")
    self.__dict__.pop("_sse_cancelled", None)


def on_test_begin(self: Any, logs: Any = None) -> None:
    if not self._called_in_fit:
        self.__dict__["_sse_test"] = _track(new_job("Keras evaluate", self.target, "steps"))


def on_test_batch_end(self: Any, batch: int, logs: Any = None) -> None:
    job = _job(self, "_sse_test")
    if job is not None:
        _at(job, batch, _format(logs))
        _stop_if_cancelled(self, "stop_evaluating", job)


def on_test_end(self: Any, logs: Any = None) -> None:
    _close(self, "_sse_test", logs)
    if not self._called_in_fit:
        self.__dict__.pop("_sse_cancelled", None)


def on_predict_begin(self: Any, logs: Any = None) -> None:
    self.__dict__["_sse_predict"] = _track(new_job("Keras predict", self.target, "steps"))


def on_predict_batch_end(self: Any, batch: int, logs: Any = None) -> None:
    job = _job(self, "_sse_predict")
    if job is not None:
        _at(job, batch)
        _stop_if_cancelled(self, "stop_predicting", job)


def on_predict_end(self: Any, logs: Any = None) -> None:
    _close(self, "_sse_predict")
    self.__dict__.pop("_sse_cancelled", None)


_METHODS = {name: value for name, value in dict(globals()).items() if name.startswith("on_")}


def _patch_logger(module: ModuleType) -> None:
    cls = module.ProgbarLogger
    for name, method in _METHODS.items():
        _patches.set(cls, name, method)


def _patch_model(module: ModuleType) -> None:
    cls = module.Model
    for name in ("fit", "evaluate", "predict"):
        original = getattr(cls, name)

        def method(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            mark = len(getattr(_open, "jobs", ()))
            try:
                return __original(self, *args, **kwargs)
            except BaseException as exc:
                for job in getattr(_open, "jobs", [])[mark:]:
                    end(job, exc)
                raise
            finally:
                jobs = getattr(_open, "jobs", None)
                if jobs is not None:
                    del jobs[mark:]

        method.__name__ = name
        method.__wrapped__ = original  # type: ignore[attr-defined]
        _patches.set(cls, name, method)


def install() -> None:
    from ._hooks import on_import

    on_import("keras.src.callbacks.progbar_logger", _patch_logger)
    on_import("keras.src.models.model", _patch_model)


def uninstall() -> None:
    _patches.restore()
