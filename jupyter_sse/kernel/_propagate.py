"""Carrying the current job (and the kernel id) to where the work goes: threads, pools, processes.

asyncio tasks copy the context themselves. Threads do not on Python 3.11, and processes cannot, so the kernel
side, when it is first used, wraps the few places where work is handed over:

- ``threading.Thread.start``: the thread remembers the job current where it was started (a local job only);
- ``ThreadPoolExecutor.submit`` and ``multiprocessing.pool.ThreadPool``: each task runs with the job current
  where it was submitted (pool threads are reused, so a job remembered at thread start would be wrong);
- ``multiprocessing`` processes (fork, spawn, forkserver): the process object carries the parent job's id and
  the kernel id to the child, which also sends its final states before it leaves (multiprocessing ends its
  children with ``os._exit``, which skips ``atexit``);
- ``ProcessPoolExecutor.submit``, ``multiprocessing.Pool`` and joblib's loky executor: each task carries them.

Modules are wrapped only once they are imported (checked again at each job start, a few dictionary lookups),
so using the kernel side never imports multiprocessing. A wrapper that fails falls back to the original call.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any

from . import context

__all__ = ["install"]

_ATTR = "_jupyter_sse"  # on a multiprocessing process object: what its child needs to know
_ANNOTATION = "jupyter_sse"  # a Dask task annotation: [parent job id, kernel id]
_done: set[str] = set()  # the wrapped places
_install_lock = threading.Lock()
_seen_modules = -1  # len(sys.modules) at the last look: modules are rarely unloaded, so a change means imports


# the module that, once imported, makes each hand-over point wrappable
_MODULES = {
    "futures.thread": "concurrent.futures.thread",
    "futures.process": "concurrent.futures.process",
    "mp.process": "multiprocessing.process",
    "mp.pool": "multiprocessing.pool",
    "loky": "joblib.externals.loky.process_executor",
    "distributed": "distributed.client",
    "distributed.worker": "distributed.worker",
}


def install() -> None:
    """Wrap every hand-over point whose module is loaded now; once each. Never raises.

    Called at every job start: when no module was imported since the last call it costs one ``len``.
    """
    global _seen_modules
    seen = len(sys.modules)
    if seen == _seen_modules:
        return
    _seen_modules = seen
    if "threading" in _done and not any(key not in _done and module in sys.modules for key, module in _MODULES.items()):
        return
    try:
        with _install_lock:
            if "threading" not in _done:
                context.export_kernel_id()
                _wrap_thread_start()
            modules = sys.modules
            if "futures.thread" not in _done and "concurrent.futures.thread" in modules:
                _wrap_submit("futures.thread", modules["concurrent.futures.thread"].ThreadPoolExecutor, local=True)
            if "futures.process" not in _done and "concurrent.futures.process" in modules:
                _wrap_submit("futures.process", modules["concurrent.futures.process"].ProcessPoolExecutor, local=False)
            if "mp.process" not in _done and "multiprocessing.process" in modules:
                _wrap_process(modules["multiprocessing.process"].BaseProcess)
            if "mp.pool" not in _done and "multiprocessing.pool" in modules:
                _wrap_pool(modules["multiprocessing.pool"])
            loky = modules.get("joblib.externals.loky.process_executor")
            if "loky" not in _done and loky is not None:
                _wrap_submit("loky", loky.ProcessPoolExecutor, local=False)
            distributed = modules.get("distributed.client")
            if "distributed" not in _done and distributed is not None:
                _wrap_distributed(distributed.Client)
            if "distributed.worker" not in _done and "distributed.worker" in modules:
                context.task_parent = _distributed_task_parent
                _done.add("distributed.worker")
    except Exception:  # never break the user's job over this
        pass


# -- what a task or a thread runs under ------------------------------------------------------------------------


class _InContext:
    """A task run in a thread of this process, under the job that was current where it was submitted."""

    __slots__ = ("fn", "job")

    def __init__(self, fn: Any, job: Any) -> None:
        self.fn = fn
        self.job = job

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        token = context.set_current(self.job)
        try:
            return self.fn(*args, **kwargs)
        finally:
            context.reset_current(token)


class _Carry:
    """A task for another process: the parent job's id and the kernel id travel with it (it is pickled)."""

    __slots__ = ("fn", "kernel_id", "parent")

    def __init__(self, fn: Any, parent: str | None, kernel_id: str | None) -> None:
        self.fn = fn
        self.parent = parent
        self.kernel_id = kernel_id

    def __getstate__(self) -> tuple[Any, str | None, str | None]:
        return (self.fn, self.parent, self.kernel_id)

    def __setstate__(self, state: tuple[Any, str | None, str | None]) -> None:
        self.fn, self.parent, self.kernel_id = state

    @property
    def __name__(self) -> str:
        # what Dask names the task after (its key): the user's function, not this wrapper
        return str(getattr(self.fn, "__name__", type(self.fn).__name__))

    def __dask_tokenize__(self) -> tuple[str, str | None]:
        from dask.base import tokenize

        return (tokenize(self.fn), self.parent)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.kernel_id is not None and context.kernel_id() != self.kernel_id:
            context.set_kernel_id(self.kernel_id)
        token = context.set_current(None if self.parent is None else context.RemoteParent(self.parent))
        try:
            return self.fn(*args, **kwargs)
        finally:
            context.reset_current(token)


def _carry(fn: Any) -> _Carry:
    return _Carry(fn, context.current_parent(), context.kernel_id())


class _Arrival:
    """Carried by a multiprocessing process object to its child. Unpickling it (spawn, forkserver) is the
    child's first chance to act: it sets up the child before the process object's ``_bootstrap`` runs."""

    __slots__ = ("kernel_id", "parent")

    def __init__(self, parent: str | None, kernel_id: str | None) -> None:
        self.parent = parent
        self.kernel_id = kernel_id

    def __reduce__(self) -> tuple[Any, tuple[str | None, str | None]]:
        return (_arrive, (self.parent, self.kernel_id))

    def apply(self) -> None:
        if self.kernel_id is not None:
            context.set_kernel_id(self.kernel_id)
        context.set_current(None if self.parent is None else context.RemoteParent(self.parent))


def _arrive(parent: str | None, kernel_id: str | None) -> _Arrival:
    arrival = _Arrival(parent, kernel_id)
    with contextlib.suppress(Exception):
        import multiprocessing.process

        _wrap_process(multiprocessing.process.BaseProcess)
        arrival.apply()
    return arrival


# -- the wrappers ----------------------------------------------------------------------------------------------


def _wrap_thread_start() -> None:
    original = threading.Thread.start

    def start(self: threading.Thread) -> None:
        try:
            job = context.current_job()
            # a job of another process stays with the thread that received it: a process that outlives the
            # work it was started for (a cluster's worker) must not give that job to all its later threads
            if job is not None and not isinstance(job, context.RemoteParent):
                setattr(self, context.THREAD_PARENT, job)
        except Exception:
            pass
        original(self)

    start.__wrapped__ = original  # type: ignore[attr-defined]
    threading.Thread.start = start  # type: ignore[method-assign]
    _done.add("threading")


def _wrap_submit(key: str, cls: Any, *, local: bool) -> None:
    original = cls.submit

    def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        try:
            task: Any = _InContext(fn, context.current_job()) if local else _carry(fn)
        except Exception:
            task = fn
        return original(self, task, *args, **kwargs)

    submit.__wrapped__ = original  # type: ignore[attr-defined]
    cls.submit = submit
    _done.add(key)


def _wrap_distributed(client_cls: Any) -> None:
    # only ``Client.submit`` and ``Client.map``: a graph (``dask.compute`` on a cluster) runs tasks whose
    # functions are not handed over one by one, so its tasks arrive without a parent
    def wrap(name: str) -> None:
        original = getattr(client_cls, name)

        def method(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                if context.current_job() is not None and callable(func):
                    func = _carry(func)
            except Exception:
                pass
            return original(self, func, *args, **kwargs)

        method.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(client_cls, name, method)

    wrap("submit")
    wrap("map")

    # a graph (``dask.compute``, ``persist``, ``Client.get``): the parent rides as a task annotation, which
    # the scheduler hands to the worker with each task (annotations are a context variable: this call only)
    original = client_cls._graph_to_futures

    def _graph_to_futures(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            job = context.current_job()
            annotate = None
            if job is not None:
                from dask.base import annotate as dask_annotate

                annotate = dask_annotate(**{_ANNOTATION: [job.id, context.kernel_id()]})
        except Exception:
            annotate = None
        if annotate is None:
            return original(self, *args, **kwargs)
        with annotate:
            return original(self, *args, **kwargs)

    _graph_to_futures.__wrapped__ = original  # type: ignore[attr-defined]
    client_cls._graph_to_futures = _graph_to_futures
    _done.add("distributed")


def _distributed_task_parent() -> Any:
    """In a Dask worker: the parent the running task carries as an annotation (None if it carries none), or
    ``NOT_A_TASK`` outside a task's thread."""
    try:
        worker_module = sys.modules["distributed.worker"]
        key = getattr(worker_module.thread_state, "key", None)
        if key is None:  # not a task's thread
            return context.NOT_A_TASK
        task = worker_module.get_worker().state.tasks.get(key)
        carried = (task.annotations or {}).get(_ANNOTATION) if task is not None else None
        if not carried:
            return None
        parent, kernel_id = carried
        if kernel_id and context.kernel_id() != kernel_id:
            context.set_kernel_id(kernel_id)
        return context.RemoteParent(parent) if parent else None
    except Exception:
        return context.NOT_A_TASK


def _wrap_pool(pool_module: Any) -> None:
    pool_cls = pool_module.Pool
    thread_pool = pool_module.ThreadPool

    def task(self: Any, func: Any) -> Any:
        try:
            return _InContext(func, context.current_job()) if isinstance(self, thread_pool) else _carry(func)
        except Exception:
            return func

    def wrap(name: str) -> None:
        original = getattr(pool_cls, name)

        def method(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
            return original(self, task(self, func), *args, **kwargs)

        method.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(pool_cls, name, method)

    # map, starmap, map_async and starmap_async go through _map_async; apply through apply_async
    for name in ("apply_async", "_map_async", "imap", "imap_unordered"):
        wrap(name)
    _done.add("mp.pool")


def _wrap_process(cls: Any) -> None:
    if "mp.process" in _done:
        return
    original_start = cls.start
    original_bootstrap = cls._bootstrap

    def start(self: Any) -> None:
        with contextlib.suppress(Exception):
            setattr(self, _ATTR, _Arrival(context.current_parent(), context.kernel_id()))
        original_start(self)

    def _bootstrap(self: Any, *args: Any, **kwargs: Any) -> Any:
        arrival = self.__dict__.get(_ATTR)
        if isinstance(arrival, _Arrival):
            with contextlib.suppress(Exception):
                arrival.apply()
        try:
            return original_bootstrap(self, *args, **kwargs)
        finally:
            # multiprocessing ends the child with os._exit right after this: atexit will not run
            _flush_before_exit()

    start.__wrapped__ = original_start  # type: ignore[attr-defined]
    _bootstrap.__wrapped__ = original_bootstrap  # type: ignore[attr-defined]
    cls.start = start
    cls._bootstrap = _bootstrap
    _done.add("mp.process")


def _flush_before_exit() -> None:
    """Send this process's pending states (bounded by the flush timeout) before it ends."""
    with contextlib.suppress(Exception):
        publisher = sys.modules.get(f"{__package__}.publisher")
        pub = getattr(publisher, "_publisher", None)
        if pub is not None and pub.jobs():
            pub.flush(pub.flush_timeout, force=True)


def _after_fork_in_child() -> None:
    # called by _fork: another thread may have held it at fork time
    _install_lock._at_fork_reinit()  # type: ignore[attr-defined]
