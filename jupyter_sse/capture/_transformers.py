"""transformers' ``Trainer`` in a notebook: its ``NotebookProgressCallback`` draws an HTML ``<progress>`` and a
metrics table with ``display``/``update_display``, not tqdm. Its methods are replaced in place (the trainer
module holds its own reference to the class), so the Trainer reports to jobs instead:

- training: one job, steps done out of ``max_steps``, with the epoch and the latest logged values (loss,
  learning rate, evaluation metrics) as its message;
- evaluation and prediction: a job of their own, batches done out of the batches, nested under training when
  they run inside it.

A cancel of the training job sets ``control.should_training_stop``: the Trainer ends the step it is in, runs its
end-of-training callbacks and returns, the model in a clean state; the job ends ``cancelled``. A cancel of an
evaluation job raises :class:`JobCancelled` at its next batch. ``Trainer.train`` is wrapped so that an
exception out of it ends the jobs it left running.
"""

from __future__ import annotations

import numbers
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._jobs import advance, end, ended, new_job, set_total
from ._patch import Patches

if TYPE_CHECKING:
    from ..kernel._state import JobState

__all__ = ["install", "uninstall"]

_patches = Patches()
_TRAIN = "_jupyter_sse_train"
_EVAL = "_jupyter_sse_eval"
_SKIP = ("total_flos", "epoch", "step")


def _format(logs: dict[str, Any] | None) -> str:
    parts = []
    for key, value in (logs or {}).items():
        if key in _SKIP or key.endswith(("_runtime", "_per_second")):
            continue
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            parts.append(f"{key}={float(value):.4g}")
    return ", ".join(parts)


def _epoch(state: Any) -> str:
    epoch = state.epoch or 0
    shown = int(epoch) if int(epoch) == epoch else f"{epoch:.2f}"
    return f"epoch {shown}/{state.num_train_epochs}"


def _message(self: Any, state: Any) -> str:
    metrics = self.__dict__.get("_jupyter_sse_metrics", "")
    return f"{_epoch(state)}, {metrics}" if metrics else _epoch(state)


def _live(self: Any, attr: str) -> JobState | None:
    job: JobState | None = self.__dict__.get(attr)
    return job if job is not None and not ended(job) else None


def on_train_begin(self: Any, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
    self.__dict__["_jupyter_sse_metrics"] = ""
    job = new_job("Trainer.train", state.max_steps or None, "steps")
    job.message = _epoch(state)
    self.__dict__[_TRAIN] = job


def on_step_end(self: Any, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
    job = _live(self, _TRAIN)
    if job is None:
        return
    advance(job, state.global_step, _message(self, state), check=False)
    if job.cancel_requested:
        control.should_training_stop = True  # the Trainer's own way out: it ends the step and the training


def on_prediction_step(self: Any, args: Any, state: Any, control: Any, eval_dataloader: Any = None, **kw: Any) -> None:
    job = _live(self, _EVAL)
    if job is None:
        try:
            total = len(eval_dataloader)
        except TypeError:
            total = None
        training = _live(self, _TRAIN) is not None
        job = new_job("Trainer.evaluate", total, "batches", leave=not training)
        self.__dict__[_EVAL] = job
        advance(job, 1)
    else:
        advance(job, job.count + 1)


def _end_eval(self: Any) -> None:
    job = self.__dict__.pop(_EVAL, None)
    if job is not None:
        set_total(job, job.count)
        end(job)


def on_predict(self: Any, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
    _end_eval(self)


def on_log(self: Any, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
    line = _format(logs)
    if line:
        self.__dict__["_jupyter_sse_metrics"] = line
    job = _live(self, _TRAIN)
    if job is not None:
        advance(job, state.global_step, _message(self, state), check=False)


def on_evaluate(self: Any, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
    job = self.__dict__.get(_EVAL)
    line = _format(metrics)
    if job is not None and line and not ended(job):
        job.message = line
    _end_eval(self)
    on_log(self, args, state, control, logs=metrics)


def on_train_end(self: Any, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
    _end_eval(self)
    job = self.__dict__.pop(_TRAIN, None)
    if job is not None:
        advance(job, state.global_step, _message(self, state), check=False)
        end(job)  # ``cancelled`` when a cancel stopped it


def _close_all(trainer: Any, exc: BaseException) -> None:
    for callback in getattr(getattr(trainer, "callback_handler", None), "callbacks", ()):
        for attr in (_EVAL, _TRAIN):
            job = getattr(callback, "__dict__", {}).pop(attr, None)
            if job is not None:
                end(job, exc)


_METHODS = {
    "on_train_begin": on_train_begin,
    "on_step_end": on_step_end,
    "on_prediction_step": on_prediction_step,
    "on_predict": on_predict,
    "on_log": on_log,
    "on_evaluate": on_evaluate,
    "on_train_end": on_train_end,
}


def _patch_notebook(module: ModuleType) -> None:
    cls = module.NotebookProgressCallback
    for name, method in _METHODS.items():
        _patches.set(cls, name, method)


def _patch_trainer(module: ModuleType) -> None:
    cls = module.Trainer
    for name in ("train", "evaluate", "predict"):
        original = getattr(cls, name)

        def method(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            try:
                return __original(self, *args, **kwargs)
            except BaseException as exc:
                _close_all(self, exc)
                raise

        method.__name__ = name
        method.__wrapped__ = original  # type: ignore[attr-defined]
        _patches.set(cls, name, method)


def install() -> None:
    from ._hooks import on_import

    on_import("transformers.utils.notebook", _patch_notebook)
    on_import("transformers.trainer", _patch_trainer)


def uninstall() -> None:
    _patches.restore()
