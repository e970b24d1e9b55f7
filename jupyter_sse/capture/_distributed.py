"""Dask on a ``distributed`` cluster: ``dask.compute``/``.compute()`` reach the cluster through
``Client.get``, which waits in ``Client.gather``. A synchronous ``gather`` of futures becomes one job, tasks done
out of every task they depend on, as distributed's own progress bar counts them (the scheduler's ``Progress``
plugin, fed to a ``ProgressBar`` on the client's event loop). A cancel cancels the futures on the cluster; the
``gather`` then raises :class:`JobCancelled`. ``persist`` and ``Client.compute`` return at once: their work is
followed once something waits for it.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._jobs import advance, cancelled_error, end, ended, new_job, set_total
from ._patch import Patches

if TYPE_CHECKING:
    from ..kernel._state import JobState

__all__ = ["install", "uninstall"]

_patches = Patches()


def _bar_class() -> Any:
    from distributed.diagnostics.progressbar import ProgressBar

    class _JobBar(ProgressBar):
        job: JobState
        futures: list[Any]
        client_: Any
        cancelling = False
        cancel_task: Any = None  # held so that the loop does not drop it half way
        total: int | None = None

        def _draw_bar(self, remaining: int = 0, all: int = 0, **kwargs: Any) -> None:
            job = self.job
            self.total = all
            set_total(job, all)
            advance(job, all - remaining, check=False)
            if job.cancel_requested and not ended(job) and not self.cancelling:
                self.cancelling = True
                import asyncio  # on the client's event loop, where this runs

                with contextlib.suppress(Exception):
                    self.cancel_task = asyncio.ensure_future(self.client_.cancel(self.futures, asynchronous=True))

        def stop(self) -> None:
            with contextlib.suppress(Exception):
                self.comm.abort()

    return _JobBar


def _patch(module: ModuleType) -> None:
    client_cls = module.Client
    gather = client_cls.gather
    futures_of = module.futures_of
    bar_class: list[Any] = []

    def gather_(self: Any, futures: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            sync = not kwargs.get("asynchronous") and not getattr(self, "asynchronous", False)
            found = list(futures_of(futures)) if sync else []
        except Exception:
            found = []
        if not found:
            return gather(self, futures, *args, **kwargs)
        job = new_job("dask.compute", None, "tasks")
        bar = None
        try:
            if not bar_class:
                bar_class.append(_bar_class())
            bar = bar_class[0](found, scheduler=self.scheduler.address)
            bar.job, bar.futures, bar.client_ = job, found, self
            self.loop.add_callback(bar.listen)
        except Exception:  # no live progress (the count still ends right)
            bar = None
        try:
            result = gather(self, futures, *args, **kwargs)
        except BaseException as exc:
            if job.cancel_requested:
                cancelled = cancelled_error(job)
                end(job, cancelled)
                raise cancelled from exc
            end(job, exc)
            raise
        finally:
            if bar is not None:
                self.loop.add_callback(bar.stop)
        total = bar.total if bar is not None and bar.total is not None else job.total
        if total is None:
            total = len(found)
        set_total(job, total)
        advance(job, total, check=False)
        end(job)
        return result

    gather_.__wrapped__ = gather  # type: ignore[attr-defined]
    _patches.set(client_cls, "gather", gather_)


def install() -> None:
    from ._hooks import on_import

    on_import("distributed.client", _patch)


def uninstall() -> None:
    _patches.restore()
