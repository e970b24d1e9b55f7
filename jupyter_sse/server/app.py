"""The Jupyter server extension: configuration, the broker's lifetime, and what kernels inherit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import IOLoop
from traitlets import Bool, Float, Int, List, Unicode, validate

from .._version import __version__
from ..capture import CAPTURE_ENV  # a name only: the capture's modules load in kernels, not here
from ..core import Broker, MemoryStore
from ..core.adapter import StreamSettings, default_owner, lease_check_period
from ..core.store import StoreUnavailable
from ..core.store_sqlite import SQLiteStore, open_store
from ..protocol import API_PATH, STATES, TERMINAL_STATES
from ._limits import StreamLimits, guard_accepts
from ._memory import GcFreezer, SystemAllocator
from ._monitor import Monitor
from ._status import StatusHandler
from .activity import ActivityTracker
from .handlers import handlers
from .kernels import KERNEL_ACTIONS, KernelWatcher

__all__ = ["SSEExtension"]

# Seconds between refreshes of the running-jobs activity mark: far below any culler's idle timeout (JupyterHub's
# single-user server reports activity every 300 s by default), and one pass over the jobs is cheap.
_ACTIVITY_PERIOD = 2.0


# The settings the hub shares, with the same defaults (core/adapter.py).
_DEFAULTS = StreamSettings()


class SSEExtension(ExtensionApp):
    """jupyter-sse: live progress of notebook jobs, streamed over Server-Sent Events."""

    name = "jupyter_sse"
    load_other_extensions = True

    heartbeat_interval = Float(
        _DEFAULTS.heartbeat,
        config=True,
        help="Seconds between heartbeat comments on an idle event stream. Keeps proxies with idle timeouts "
        "from closing the stream, and is how the server notices clients that went away.",
    )
    log_lines_kept = Int(
        1000, config=True, help="Log lines kept per job; older lines are dropped and marked as dropped."
    )
    jobs_kept = Int(500, config=True, help="Finished jobs kept; beyond this the oldest finished ones are forgotten.")
    sync_finished_jobs = Int(
        100,
        config=True,
        help="Finished jobs a new event stream is sent at once, the most recently changed (with every unfinished "
        "job). Older ones are in the pages of GET jobs: a first sync stays small however many jobs are kept.",
    )
    publisher_lease = Float(
        _DEFAULTS.publisher_lease,
        config=True,
        help="Seconds a running job may go without any report from its kernel before it is marked lost. "
        "Kernels report at least every 10 s while a job runs; a lost job becomes running again if its "
        "kernel reports again.",
    )
    send_timeout = Float(
        _DEFAULTS.send_timeout,
        config=True,
        help="Seconds a subscriber may take to accept an event before the server drops its connection.",
    )
    retry_ms = Int(_DEFAULTS.retry_ms, config=True, help="The reconnection delay (ms) sent to clients in the stream.")
    store_kind = Unicode(
        "sqlite",
        config=True,
        help='Where jobs are kept: "sqlite" (a file that survives restarts, the default) or "memory".',
    )
    db_path = Unicode(
        "",
        config=True,
        help="The SQLite file for the sqlite store (default: jupyter_sse/jobs.sqlite3 in the Jupyter data dir).",
    )
    cancel_grace = Float(
        10.0,
        config=True,
        help="Seconds a job may ignore a cancel (its loop stuck in C code, say) before its kernel is interrupted.",
    )
    wake_delay = Float(
        _DEFAULTS.wake_delay,
        config=True,
        help="The most a change waits so that it is sent together with others (seconds). A change after a quiet "
        "spell goes out at once; the changes that follow wait until twice as long as the last pass over the "
        "subscribers took, and never longer than this. Few subscribers: about a millisecond; thousands: up to this. "
        "0 sends every change at once.",
    )
    kernel_check_interval = Float(
        1.0, config=True, help="Seconds between checks for dead kernels and cancels to escalate."
    )
    owner = Unicode(
        config=True,
        help="The user recorded as the owner of jobs (default: the JupyterHub user or the OS user).",
    )
    # --- idle culling (see activity.py) ---
    running_jobs_are_activity = Bool(
        True,
        config=True,
        help="Count an unfinished job as activity of the server (its last_activity, which JupyterHub's idle "
        "culler reads), so a long job that prints nothing is not culled as idle. Open event streams and their "
        "heartbeats never count as activity.",
    )

    freeze_startup_objects = Bool(
        True,
        config=True,
        help="Once the server has started, move the objects it made while starting out of the passes of Python's "
        "cycle collector (gc.freeze): they live as long as the process, and each full pass over them stopped the "
        "server for 60 ms or more. Frozen objects are still freed when nothing refers to them.",
    )

    system_allocator = Bool(
        True,
        config=True,
        help="Once the server has started, take Python's new small objects from the C library's malloc instead of "
        "Python's own allocator (pymalloc), so that the memory a burst of connections used goes back to the "
        "system once they close: pymalloc gives back a 1 MiB arena only when every object in it is gone, and "
        "after 2,000 streams closed the server stayed 16-38% above its size before (2-4% with this). No CPU "
        "cost measured (bench/results). Left off by itself under tracemalloc, PYTHONMALLOC and -X dev.",
    )

    # --- connection limits ---
    max_event_streams = Int(
        0,
        config=True,
        help="Event streams the server holds at once, in all; beyond it a new one is answered 503 with "
        "Retry-After. 0: the process's open-file limit less a quarter of it (at least 256), which is kept for "
        "kernels, files and API requests.",
    )
    max_event_streams_per_user = Int(
        0,
        config=True,
        help="Event streams one user may hold at once (0: as many as max_event_streams). A browser tab holds one.",
    )

    @validate("max_event_streams", "max_event_streams_per_user")
    def _check_stream_caps(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise ValueError(f"{proposal['trait'].name} must be at least 0 (0: the default)")
        return int(proposal["value"])

    capture_progress = Bool(
        False,
        config=True,
        help="Turn the progress bars libraries draw (tqdm in every form, transformers' Trainer, Keras, Lightning, "
        "joblib, Dask) into jobs in every IPython kernel this server starts, as `%load_ext jupyter_sse` does in "
        "one. Off by default: it changes how third-party code displays in kernels whose users did not ask for it.",
    )

    # --- notifications, metrics and the event bus (see _monitor.py) ---
    notify_urls = List(
        Unicode(),
        config=True,
        help="Apprise URLs (mailto://, slack://, ntfy://, json://...) told when jobs end, by the rules below. "
        "The APPRISE_URLS environment variable (space-separated) and Apprise's config files add more. Needs "
        "jupyter-sse[notify].",
    )
    notify_config = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        config=True,
        help="Apprise config files to read targets from (default: APPRISE_CONFIG_PATH, else Apprise's own default "
        "files, such as ~/.config/apprise/apprise.yml, that exist).",
    )
    notify_states = List(
        Unicode(),
        default_value=[state for state in STATES if state in TERMINAL_STATES],
        config=True,
        help="The end states that notify (a job's own notify=True or URL notifies whatever its end).",
    )
    notify_min_duration = Float(
        60.0, config=True, help="Seconds a job must have run to notify (unless it asked with notify=True or a URL)."
    )
    notify_window = Float(
        30.0,
        config=True,
        help="Seconds to wait after a job ends for others to end too: the jobs ending in this window make one "
        "message. 0 sends each at once.",
    )
    notify_timeout = Float(10.0, config=True, help="Seconds a notification target may take before it counts as failed.")
    notify_job_targets = Bool(
        True,
        config=True,
        help="Let a job name its own Apprise URLs (progress(..., notify='mailto://...')). When False such a job "
        "notifies the configured targets instead.",
    )
    notify_link_url = Unicode(
        "",
        config=True,
        help="The base URL messages link to (the notebook opens at <this>lab/tree/<path>); default: the server's "
        "own URL. Set it to the address people reach the server at, behind a proxy or JupyterHub.",
    )
    emit_job_events = Bool(
        True, config=True, help="Emit every job state change on Jupyter's event bus (jupyter_events)."
    )

    @validate("notify_states")
    def _check_notify_states(self, proposal: Any) -> list[str]:
        from ..core.notify import NotifyRules

        NotifyRules(states=frozenset(proposal["value"]))  # raises with the reason
        return list(proposal["value"])

    @validate("notify_min_duration", "notify_window", "notify_timeout")
    def _check_notify_seconds(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not value >= 0 or value == float("inf") or (proposal["trait"].name == "notify_timeout" and value == 0):
            raise ValueError(f"{proposal['trait'].name} must be a finite number of seconds >= 0 (timeout: > 0)")
        return value

    @validate("store_kind")
    def _check_store_kind(self, proposal: Any) -> str:
        if proposal["value"] not in ("sqlite", "memory"):
            raise ValueError('store_kind must be "sqlite" or "memory"')
        return str(proposal["value"])

    @validate("log_lines_kept")
    def _check_log_lines(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise ValueError("log_lines_kept must be at least 1")
        return int(proposal["value"])

    @validate("sync_finished_jobs")
    def _check_sync_finished_jobs(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise ValueError("sync_finished_jobs must be at least 0")
        return int(proposal["value"])

    @validate("jobs_kept")
    def _check_jobs_kept(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise ValueError("jobs_kept must be at least 0")
        return int(proposal["value"])

    _ready = False  # initialize_settings went through: the API is served
    _gc_freezer: GcFreezer | None = None
    _allocator: SystemAllocator | None = None

    def _default_owner(self) -> str:
        return default_owner()  # never fails, also in a container whose user has no passwd entry

    def initialize_settings(self) -> None:
        try:
            self._initialize()
        except BaseException:
            # Kernels must not be sent to an API that is not there (they may also have inherited the variables
            # from a server this one was started from).
            os.environ.pop("JUPYTER_SSE_URL", None)
            os.environ.pop("JUPYTER_SSE_TOKEN", None)
            self.log.error("jupyter-sse did not start: its API is not served and kernels are not pointed at it")
            raise

    def _initialize(self) -> None:
        owner = self.owner or self._default_owner()
        self.store = self._make_store()
        self.broker = Broker(
            self.store,
            log_lines_kept=self.log_lines_kept,
            jobs_kept=self.jobs_kept,
            owner=owner,
            sync_finished_jobs=self.sync_finished_jobs,
            **self._stream_settings.broker_options(),
        )
        assert self.serverapp is not None
        # Jobs kept from a server that is gone: their kernels went with it (jupyter_server starts with none of its
        # own); a script's job comes back to running when the script reports again.
        kernels = getattr(self.serverapp, "kernel_manager", None)
        lost = self.broker.lose_orphans(
            kernels if kernels is not None else (), "the server stopped while it ran; no report since"
        )
        if lost:
            self.log.info("jupyter-sse: %d unfinished jobs of a previous run marked lost", len(lost))
        # Kept across restarts with the SQLite store, so kernels that were publishing keep being let in.
        self.publish_token = (
            self.store.publish_token() if isinstance(self.store, SQLiteStore) else secrets.token_urlsafe(32)
        )
        self.settings.update(
            {
                "jupyter_sse_broker": self.broker,
                "jupyter_sse_publish_token": self.publish_token,
                "jupyter_sse_status": self.status,
                "jupyter_sse_stream_settings": self._stream_settings,
                "jupyter_sse_stream_limits": self._stream_limits(),
            }
        )
        # The web app's own settings, which last_activity() reads: self.settings is only copied into them once.
        self.activity = ActivityTracker(
            self.broker, self.serverapp.web_app.settings, enabled=self.running_jobs_are_activity
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.monitor = Monitor(self, self.broker)  # notifications, /metrics, the event bus
        self._flush_failing = False
        self._export_environment()
        self._ready = True

    @property
    def _stream_settings(self) -> StreamSettings:
        return StreamSettings(
            heartbeat=self.heartbeat_interval,
            retry_ms=self.retry_ms,
            send_timeout=self.send_timeout,
            publisher_lease=self.publisher_lease,
            wake_delay=self.wake_delay,
        )

    def _stream_limits(self) -> StreamLimits:
        limits = StreamLimits.configured(
            self.max_event_streams,
            self.max_event_streams_per_user,
            report=lambda message: self.log.warning("jupyter-sse %s", message),
        )
        self.log.info("jupyter-sse: at most %d event streams (%d per user)", limits.total, limits.per_user)
        return limits

    def _make_store(self) -> MemoryStore:
        self._store_problem: str | None = None
        if self.store_kind == "memory":
            return MemoryStore()
        path = self.db_path or os.path.join(jupyter_data_dir(), "jupyter_sse", "jobs.sqlite3")
        try:
            store = open_store(path, log_lines_kept=self.log_lines_kept)
        except Exception as exc:
            self._store_problem = f"{path} cannot be opened: {type(exc).__name__}: {exc}"
            self.log.error(
                "jupyter-sse: the job store %s cannot be opened (%s: %s). Jobs are kept in memory only and are "
                "lost when the server stops. To fix: make the file and its directory writable by this user and "
                "free some space, or point c.SSEExtension.db_path at a writable file; then restart the server.",
                path,
                type(exc).__name__,
                exc,
            )
            return MemoryStore()
        if store.moved_aside is not None:
            self._store_problem = f"{path} was corrupt: moved to {store.moved_aside}; started a new, empty one"
            self.log.error(
                "jupyter-sse: the job store %s was corrupt. It was moved to %s (kept, not deleted) and a new, empty "
                "store started in its place: jobs of earlier runs are not shown. To look at the old one: sqlite3 %s",
                path,
                store.moved_aside,
                store.moved_aside,
            )
        if store.path != Path(path):
            self.log.info("jupyter-sse: another running server holds %s; this one keeps jobs in %s", path, store.path)
        else:
            self.log.info("jupyter-sse: keeping jobs in %s", store.path)
        return store

    def status(self) -> dict[str, Any]:
        """What ``GET jupyter-sse/api/status`` reports: above all, whether jobs are stored durably."""
        store = self.store
        info: dict[str, Any] = {"kind": "memory", "durable": False, "path": None, "problem": self._store_problem}
        if isinstance(store, SQLiteStore):
            info.update(kind="sqlite", path=str(store.path), durable=store.fault is None, write_error=store.fault)
        return {
            "version": __version__,
            "store": info,
            "jobs": len(store),
            "subscribers": self.broker.subscriber_count,
            "gc": self._gc_freezer.status() if self._gc_freezer is not None else None,
            "memory": self._allocator.status() if self._allocator is not None else None,
        }

    def _start_tasks(self) -> None:
        if self._tasks:
            return
        assert self.serverapp is not None
        watcher = KernelWatcher(
            self.broker, self.serverapp.kernel_manager, cancel_grace=self.cancel_grace, log=self.log
        )
        if self.serverapp.event_logger is not None:
            self.serverapp.event_logger.add_listener(schema_id=KERNEL_ACTIONS, listener=watcher.on_kernel_action)
        if self.freeze_startup_objects:
            self._gc_freezer = GcFreezer()
        if self.system_allocator:
            self._allocator = SystemAllocator()
        # Once the loop runs: the server and every extension have started by then.
        asyncio.get_running_loop().call_soon(self._after_start)
        self._tasks = [
            asyncio.ensure_future(self._every(1.0, self._flush)),
            asyncio.ensure_future(self._every(lease_check_period(self.publisher_lease), self._expire)),
            asyncio.ensure_future(watcher.run(self.kernel_check_interval)),
            # a running job keeps the server's last_activity fresh
            asyncio.ensure_future(self._every(_ACTIVITY_PERIOD, self.activity.refresh)),
        ]

    def _after_start(self) -> None:
        if self._gc_freezer is not None:
            self._gc_freezer.freeze()
        # After the freeze, whose collection frees what start-up left: the objects made while starting stay packed
        # in pymalloc's arenas, and only what comes after is the C library's.
        if self._allocator is not None and not self._allocator.install():
            self.log.info("jupyter-sse: keeping Python's own allocator: %s", self._allocator.reason)

    def _flush(self) -> None:
        # Once per fault, not once a second: a full disk can last hours. Requests meanwhile answer 503.
        failing = self._flush_failing
        try:
            self.store.flush()
        except StoreUnavailable as exc:
            if not failing:
                self._flush_failing = True
                self.log.error(
                    "jupyter-sse: %s. Changes that need storing are refused (503) and kept by their publishers "
                    "until it can be written again; free some space or fix the file.",
                    exc.detail,
                )
            return
        if failing:
            self._flush_failing = False
            self.log.warning("jupyter-sse: the job store can be written again")

    def _expire(self) -> None:
        self.broker.expire_leases(self.publisher_lease)

    async def _every(self, period: float, action: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                action()
            except Exception:  # a failed pass (a full disk, say) must not stop the next ones
                self.log.warning("jupyter-sse: %s failed", getattr(action, "__name__", action), exc_info=True)

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers())
        self.handlers.append((f"/{API_PATH}status", StatusHandler))

    def _export_environment(self) -> None:
        # Kernels are started with a copy of the server's environment: this is how they find us.
        os.environ["JUPYTER_SSE_URL"] = self.kernel_url()
        os.environ["JUPYTER_SSE_TOKEN"] = self.publish_token
        if self.capture_progress:
            os.environ[CAPTURE_ENV] = "1"
            self._load_extension_in_kernels()

    def _load_extension_in_kernels(self) -> None:
        # IPython reads no configuration from the environment, and the user's profile is theirs: the extension is
        # named on the command line of the IPython kernels this server starts (``--ext``, IPython's
        # ``extra_extensions``, which adds to the profile's extensions instead of replacing them). The kernel
        # manager keeps the arguments for restarts.
        manager = self.serverapp.kernel_manager if self.serverapp is not None else None
        if manager is None or getattr(manager, "_jupyter_sse_capture", False):
            return
        start = manager.start_kernel
        specs = self.serverapp.kernel_spec_manager if self.serverapp is not None else None

        def start_kernel(*args: Any, **kwargs: Any) -> Any:
            try:
                name = kwargs.get("kernel_name") or manager.default_kernel_name
                argv = specs.get_kernel_spec(name).argv if specs is not None else []
                if any("ipykernel" in str(arg) for arg in argv):
                    kwargs["extra_arguments"] = [*kwargs.get("extra_arguments", ()), "--ext=jupyter_sse"]
            except Exception:  # an unknown kernel spec: the kernel manager reports it as it always does
                pass
            return start(*args, **kwargs)

        manager.start_kernel = start_kernel  # type: ignore[method-assign]
        setattr(manager, "_jupyter_sse_capture", True)  # noqa: B010  # not an attribute the class declares

    def kernel_url(self) -> str:
        """The base URL a kernel on this machine uses to reach the server (loopback when listening widely)."""
        app = self.serverapp
        assert app is not None
        ip = app.ip
        if not ip or ip in ("0.0.0.0", "*", "localhost"):
            ip = "127.0.0.1"
        elif ip in ("::", "[::]"):
            ip = "::1"
        host = f"[{ip}]" if ":" in ip else ip
        scheme = "https" if app.certfile else "http"
        base_url = app.base_url if app.base_url.endswith("/") else app.base_url + "/"
        return f"{scheme}://{host}:{app.port}{base_url}"

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        # jupyter_server calls this once its event loop runs: where an extension starts its background tasks.
        if not self._ready:
            return  # it did not start (logged): no URL for kernels, no tasks over nothing
        self._export_environment()  # the port is final now (port retries)
        self._start_tasks()
        # Out of descriptors, pause accepting rather than spin and log per attempt (see _limits.py).
        guard_accepts(getattr(serverapp, "http_server", None), IOLoop.current(), self.log)

    async def stop_extension(self) -> None:
        # Also after a failed start, and whatever fails here: the server must stop within seconds of SIGTERM.
        monitor = getattr(self, "monitor", None)
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor.close()
        broker: Broker | None = getattr(self, "broker", None)
        if broker is not None:
            broker.close()
        freezer: GcFreezer | None = getattr(self, "_gc_freezer", None)
        if freezer is not None:
            freezer.thaw()
            self._gc_freezer = None
        allocator: SystemAllocator | None = getattr(self, "_allocator", None)
        if allocator is not None:
            allocator.restore()
            self._allocator = None
        tasks: list[asyncio.Task[None]] = getattr(self, "_tasks", [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        store: MemoryStore | None = getattr(self, "store", None)
        if store is not None:
            try:
                store.close()
            except Exception:
                self.log.error("jupyter-sse: the last changes could not be written to the job store", exc_info=True)
