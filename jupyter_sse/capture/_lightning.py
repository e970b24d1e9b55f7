"""Lightning ``Trainer.fit/validate/test/predict``: its progress bar callback (``RichProgressBar`` when rich is
installed, else ``TQDMProgressBar``) has its hooks replaced in place, the same on both, so it reports to jobs:

- ``fit``: one job, epochs done out of ``max_epochs``, with the latest metrics (the ones the bar would show);
  each epoch a job nested under it, batches done out of the epoch's batches; validation nested under its epoch
  (the sanity check stays silent, as the bars keep it short);
- ``validate``, ``test``, ``predict``: one job each.

A cancel during ``fit`` sets ``trainer.should_stop``, Lightning's own way to stop early: it ends the batch it is
in and returns; the jobs end ``cancelled``. A cancel of ``validate``/``test``/``predict`` raises
:class:`JobCancelled` at the next batch. An exception out of the run ends its jobs (``on_exception``).
"""

from __future__ import annotations

import math
import numbers
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._jobs import advance, cancelled_error, end, ended, new_job, set_total
from ._patch import Patches

if TYPE_CHECKING:
    from ..kernel._state import JobState

__all__ = ["install", "uninstall"]

_patches = Patches()
_ORDER = ("_sse_eval", "_sse_epoch", "_sse_fit")  # innermost first


def _total(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _metrics(self: Any, trainer: Any, pl_module: Any) -> str:
    try:
        items = self.get_metrics(trainer, pl_module)
    except Exception:
        return ""
    parts = []
    for key, value in dict(items).items():
        if key == "v_num":
            continue
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            parts.append(f"{key}={float(value):.4g}")
    return ", ".join(parts)


def _open(self: Any, attr: str) -> JobState | None:
    job: JobState | None = self.__dict__.get(attr)
    return job if job is not None and not ended(job) else None


def _close(self: Any, attr: str, message: str = "", exc: BaseException | None = None) -> None:
    job = self.__dict__.pop(attr, None)
    if job is None:
        return
    cancelled = self.__dict__.get("_sse_cancelled", False)
    if not ended(job):
        if message:
            job.message = message
        if exc is None and not cancelled:
            set_total(job, job.count)
    if exc is None and cancelled:
        exc = cancelled_error(job)
    end(job, exc)


def _stop_if_cancelled(self: Any, trainer: Any) -> None:
    for attr in _ORDER:
        job = _open(self, attr)
        if job is not None and job.cancel_requested:
            self.__dict__["_sse_cancelled"] = True
            trainer.should_stop = True  # Lightning's own early stop: the loop ends after this batch
            return


def on_train_start(self: Any, trainer: Any, pl_module: Any) -> None:
    self.__dict__.pop("_sse_cancelled", None)
    self.__dict__["_sse_fit"] = new_job("Lightning fit", _total(trainer.max_epochs), "epochs")


def on_train_epoch_start(self: Any, trainer: Any, *args: Any) -> None:
    epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
    name = f"epoch {trainer.current_epoch + 1}/{epochs}"
    self.__dict__["_sse_epoch"] = new_job(name, _total(self.total_train_batches), "steps")


def on_train_batch_end(self: Any, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
    job = _open(self, "_sse_epoch")
    if job is not None:
        advance(job, max(job.count, batch_idx + 1), _metrics(self, trainer, pl_module), check=False)
    _stop_if_cancelled(self, trainer)


def on_train_epoch_end(self: Any, trainer: Any, pl_module: Any) -> None:
    message = _metrics(self, trainer, pl_module)
    _close(self, "_sse_epoch", message)
    fit = _open(self, "_sse_fit")
    if fit is not None:
        advance(fit, trainer.current_epoch + 1, message, check=False)


def on_train_end(self: Any, trainer: Any, *args: Any) -> None:
    _close(self, "_sse_epoch")
    _close(self, "_sse_fit", _metrics(self, trainer, args[0]) if args else "")
    self.__dict__.pop("_sse_cancelled", None)


def _eval_start(self: Any, trainer: Any, name: str, total: Any) -> None:
    if getattr(trainer, "sanity_checking", False):
        return
    self.__dict__["_sse_eval"] = new_job(name, _total(total), "batches")


def _eval_batch_end(self: Any, trainer: Any) -> None:
    job = _open(self, "_sse_eval")
    if job is None:
        return
    in_fit = _open(self, "_sse_fit") is not None
    advance(job, job.count + 1, check=not in_fit)  # alone (validate, test, predict): a cancel raises here
    if in_fit:
        _stop_if_cancelled(self, trainer)


def on_validation_start(self: Any, trainer: Any, pl_module: Any) -> None:
    _eval_start(self, trainer, "validation", self.total_val_batches)


def on_test_start(self: Any, trainer: Any, pl_module: Any) -> None:
    _eval_start(self, trainer, "test", sum(_total(n) or 0 for n in trainer.num_test_batches))


def on_predict_start(self: Any, trainer: Any, pl_module: Any) -> None:
    _eval_start(self, trainer, "predict", sum(_total(n) or 0 for n in trainer.num_predict_batches))


def on_validation_batch_end(self: Any, trainer: Any, *args: Any, **kwargs: Any) -> None:
    _eval_batch_end(self, trainer)


on_test_batch_end = on_validation_batch_end
on_predict_batch_end = on_validation_batch_end


def on_validation_end(self: Any, trainer: Any, pl_module: Any) -> None:
    if not getattr(trainer, "sanity_checking", False):
        _close(self, "_sse_eval", _metrics(self, trainer, pl_module))


on_test_end = on_validation_end
on_predict_end = on_validation_end


def _nothing(self: Any, *args: Any, **kwargs: Any) -> None:
    """A hook of the library's bar that only draws: nothing to draw."""


def on_exception(self: Any, trainer: Any, pl_module: Any, exception: BaseException) -> None:
    for attr in _ORDER:
        _close(self, attr, exc=exception)


_HOOKS = {name: value for name, value in dict(globals()).items() if name.startswith("on_")}
_SILENT = (
    "on_sanity_check_start",
    "on_sanity_check_end",
    "on_validation_batch_start",
    "on_test_batch_start",
    "on_predict_batch_start",
    "on_validation_epoch_end",
    "teardown",
)


def _patch(cls: Any) -> None:
    for name, hook in _HOOKS.items():
        _patches.set(cls, name, hook)
    for name in _SILENT:
        _patches.set(cls, name, _nothing)


def _patch_rich(module: ModuleType) -> None:
    _patch(module.RichProgressBar)


def _patch_tqdm(module: ModuleType) -> None:
    _patch(module.TQDMProgressBar)


def install() -> None:
    from ._hooks import on_import

    for package in ("lightning.pytorch", "pytorch_lightning"):
        on_import(f"{package}.callbacks.progress.rich_progress", _patch_rich)
        on_import(f"{package}.callbacks.progress.tqdm_progress", _patch_tqdm)


def uninstall() -> None:
    _patches.restore()
