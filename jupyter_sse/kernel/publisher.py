"""The publisher: one daemon thread per process that samples jobs, redraws displays and POSTs updates.

User threads never wait on it, except an ending top-level job, which waits at most ``flush_timeout`` (2 s by
default, ``JUPYTER_SSE_FLUSH_TIMEOUT``) for its final state to be sent, and not at all while the server is
unreachable (the state stays pending, and is sent when the server is back or at exit).

Each tick (``interval``, 0.1 s) builds one ``POST updates`` with only the jobs that changed since the server
last acknowledged them (the latest state of each job, never a queue) plus pending log lines. Errors:
connection errors, 5xx, 408 and 429 keep the pending state and retry with exponential backoff (0.1 s to 5 s,
with jitter); other 4xx drop that batch (logged once as a warning), so a bad batch is never retried forever.
The reply's ``{"cancel": [ids]}`` marks those jobs cancel-requested. A running job that did not change is
re-sent every ``lease`` seconds (10 s) so the server knows its publisher is alive.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..protocol import FINAL_STATES, MAX_BODY_BYTES, MAX_JOBS_PER_REQUEST, MAX_LOG_LINES_PER_REQUEST
from . import _fork  # also registers the at-fork reset of this module
from ._state import CORE_FIELDS, END_LOCK, JobState
from ._transport import HTTPTransport, Transport
from .discovery import ServerInfo, discover, flush_timeout

__all__ = ["Publisher", "PublisherStats", "configure", "get_publisher"]

_log = logging.getLogger("jupyter_sse")

# Bytes: a batch stops taking jobs and lines past it, so the job that crosses it (a name, a message, metadata:
# well under 100 kB at the protocol's bounds) still leaves the body under MAX_BODY_BYTES.
BODY_BUDGET = 900_000
assert BODY_BUDGET < MAX_BODY_BYTES - 100_000
_RETRY_STATUSES = frozenset({408, 429})
_RETRY_PAUSE = 0.05  # seconds between a short-lived process's tries of its final send


# What _import_for_the_thread has imported in this process: 1 without ssl, 2 with it. A forked child inherits both
# the modules and this mark, so it rightly does not import them again.
_imported_for_the_thread = 0


def _import_for_the_thread(*, https: bool) -> None:
    """Import here, on a user's thread, what the publisher thread would otherwise import on first use.

    A fork while our thread is inside an import leaves that module's import lock held in the child for good
    (CPython re-makes only the global import lock), and the child hangs on its first use of the module; a fork
    from the user's thread cannot happen in the middle of the user's own import. Once a process: a process whose
    jobs need no thread (no server, no live display) starts every job here.
    """
    global _imported_for_the_thread
    wanted = 2 if https else 1
    if _imported_for_the_thread >= wanted:
        return
    import encodings.idna  # noqa: F401  # the socket module encodes host names with it
    import http.client  # noqa: F401

    import tqdm.std  # noqa: F401  # the text meter (display.format_text) and the rate's EMA

    if https:
        import ssl  # noqa: F401
    _imported_for_the_thread = wanted


def _short_lived() -> bool:
    """A forked or multiprocessing child: it may end (``os._exit``) as soon as its job does."""
    if _fork.forked():
        return True
    process = sys.modules.get("multiprocessing.process")  # not imported here: never loaded just for this
    return process is not None and process.parent_process() is not None


class PublisherStats:
    """Counters, for tests and debugging."""

    def __init__(self) -> None:
        self.requests = 0
        self.succeeded = 0
        self.failed = 0  # connection errors, 5xx, 408, 429: retried
        self.rejected = 0  # other 4xx: dropped
        self.last_status: int | None = None
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"PublisherStats({self.__dict__})"


class _NoTransport:
    """The transport of a publisher with no server: it never sends."""

    def post(self, path: str, body: bytes, headers: Any) -> tuple[int, bytes]:
        raise ConnectionError("no server to publish to")

    def close(self) -> None:
        pass


class Publisher:
    """Owns the jobs of this process. ``server=None``: no publishing, the thread only redraws displays."""

    def __init__(
        self,
        server: ServerInfo | None,
        *,
        interval: float = 0.1,
        lease: float = 10.0,
        flush_timeout: float = 2.0,
        timeout: float = 5.0,
        max_backoff: float = 5.0,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        threaded: bool = True,
    ) -> None:
        """``transport``: how requests are sent (default: HTTP to ``server``); ``clock`` and ``threaded=False``
        (no thread: the caller drives ``tick``) let tests examine the publisher's decisions step by step."""
        self.server = server
        self.interval = interval
        self.lease = lease
        self.flush_timeout = flush_timeout
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.stats = PublisherStats()
        self._jobs: dict[str, JobState] = {}
        self._cond = threading.Condition(threading.Lock())
        self._wake = False
        self._force = False
        self._req_gen = 0
        self._done_gen = 0
        self._last_ok = True
        self._failures = 0
        self._retry_budget = flush_timeout
        self._next_send = 0.0
        self._warned = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._threaded = threaded
        self._clock = clock
        if transport is None and server is not None:
            transport = HTTPTransport(server.scheme, server.host, server.port, timeout=timeout)
        self.transport: Transport = transport if transport is not None else _NoTransport()

    # -- called from user threads ---------------------------------------------------------------------------

    def add(self, job: JobState) -> None:
        """Track a job that just started; starts the thread when there is something for it to do."""
        job.publisher = self
        if self._thread is None and self._threaded:
            _import_for_the_thread(https=self.server is not None and self.server.scheme == "https")
        with self._cond:
            self._jobs[job.id] = job
            if self._thread is None and not self._closed and self._threaded:
                needed = self.server is not None or (job.display is not None and job.display.live_interval)
                if needed:
                    self._start_thread()
            self._wake = True
            self._cond.notify_all()

    def job_ended(self, job: JobState, *, wait: bool) -> None:
        """A job reached its terminal state: wake the thread; wait for the send if ``wait``."""
        if self.server is None or self._thread is None:
            with self._cond:
                self._jobs.pop(job.id, None)  # nothing to send: forget it now
            return
        if wait:
            self.flush()
        else:
            self.wake()

    def wake(self) -> None:
        with self._cond:
            self._wake = True
            self._cond.notify_all()

    def flush(self, timeout: float | None = None, *, force: bool = False) -> bool:
        """Send pending state now and wait up to ``timeout``; True if it was sent.

        While the server is unreachable it does not wait (``force``: try once anyway, as at exit).
        """
        thread = self._thread
        if self.server is None or thread is None or not thread.is_alive():
            return True
        if thread is threading.current_thread():
            return False
        timeout = self.flush_timeout if timeout is None else timeout
        start = time.monotonic()
        deadline = start + timeout
        # a child process may end with os._exit right after: a failed send is tried again until the deadline, from
        # a budget of one deadline per process, so a server that is down costs a pool worker one wait, not one a task
        persist = self._retry_budget > 0 and _short_lived()
        with self._cond:
            if self._failures and not force and not persist:
                self._wake = True
                self._cond.notify_all()
                return False
            try:
                while True:
                    self._req_gen += 1
                    target = self._req_gen
                    self._wake = True
                    self._force = self._force or force or persist
                    self._cond.notify_all()
                    while self._done_gen < target:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return False
                        self._cond.wait(remaining)
                    if self._last_ok or not persist:
                        return self._last_ok
                    pause = min(_RETRY_PAUSE, deadline - time.monotonic())
                    if pause <= 0:
                        return False
                    self._cond.wait(pause)  # the lock is released meanwhile
            finally:
                if persist and not self._last_ok:
                    self._retry_budget -= time.monotonic() - start

    def jobs(self) -> list[JobState]:
        """The jobs tracked now (running, or ended but not yet acknowledged)."""
        with self._cond:
            return list(self._jobs.values())

    def get(self, job_id: str) -> JobState | None:
        with self._cond:
            return self._jobs.get(job_id)

    def close(self, timeout: float = 1.0) -> None:
        """Flush, stop the thread and close the connection (tests; ``configure`` replacing the publisher)."""
        if self._thread is not None:
            self.flush(timeout, force=True)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._close_conn()

    # -- the thread -------------------------------------------------------------------------------------------

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="jupyter-sse-publisher", daemon=True)
        self._thread.start()
        if self.server is not None:
            atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.flush(self.flush_timeout, force=True)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._wake and not self._jobs:
                    self._cond.wait()  # idle kernel: no ticks at all
                if self._closed:
                    return
                if not self._wake:
                    self._cond.wait(self.interval)
                if self._closed:
                    return
                self._wake = False
                gen, force = self._req_gen, self._force
                self._force = False
            try:
                self.tick(force=force)
            except Exception:  # never let the thread die
                _log.debug("jupyter-sse: publisher tick failed", exc_info=True)
            with self._cond:
                self._done_gen = max(self._done_gen, gen)
                self._cond.notify_all()

    def tick(self, *, force: bool = False) -> None:
        """One round: sample every job, redraw live displays, send what changed (if it is time)."""
        now = self._clock()
        jobs = self.jobs()
        for job in jobs:
            if job.state in FINAL_STATES:
                continue
            job.sample(now)  # also feeds the rate's moving average, at every tick
            display = job.display
            interval = None if display is None else display.live_interval
            if interval and now - job.display_at >= interval:
                job.display_at = now
                try:
                    display.update(job)
                except Exception:
                    _log.debug("jupyter-sse: display update failed", exc_info=True)
        if self.server is not None and (force or now >= self._next_send):
            self._send(jobs, now)
        self._forget_finished(jobs)

    def _forget_finished(self, jobs: list[JobState]) -> None:
        with self._cond:
            for job in jobs:
                if job.state not in FINAL_STATES or job.logs or job.logs_dropped:
                    continue
                if self.server is None or (job.sent is not None and job.sent.get("state") == job.state):
                    self._jobs.pop(job.id, None)

    # -- building and sending a batch -------------------------------------------------------------------------

    def build(self, jobs: list[JobState], now: float) -> tuple[dict[str, Any], list[Any], list[Any]]:
        """The body of one ``POST updates``, the jobs in it (with their fields) and the log lines taken."""
        updates: list[dict[str, Any]] = []
        included: list[tuple[JobState, dict[str, Any]]] = []
        size = 30
        known: set[str] = set()
        for job in jobs:
            if len(updates) >= MAX_JOBS_PER_REQUEST or size >= BODY_BUDGET:
                break
            with END_LOCK:  # a consistent state/n/error while a job may be ending
                fields = job.wire_fields(now)
            sent = job.sent
            if sent is None:
                update: dict[str, Any] = {"id": job.id}
                for key, value in fields.items():
                    if (key == "error" and value is None) or (key == "metadata" and not value):
                        continue
                    update[key] = value
            else:
                update = {"id": job.id}
                for key in CORE_FIELDS:
                    if fields[key] != sent.get(key):
                        update[key] = fields[key]
                lease_due = fields["state"] == "running" and now - job.sent_at >= self.lease
                if len(update) == 1 and not lease_due:
                    known.add(job.id)
                    continue
                update["elapsed"] = fields["elapsed"]
                update["rate"] = fields["rate"]
            size += len(json.dumps(update, default=str)) + 1
            updates.append(update)
            included.append((job, fields))
            known.add(job.id)
        logs: list[dict[str, Any]] = []
        taken: list[tuple[JobState, list[str]]] = []
        lines_left = MAX_LOG_LINES_PER_REQUEST
        for job in jobs:
            if lines_left <= 0 or size >= BODY_BUDGET:
                break
            if job.id not in known or not (job.logs or job.logs_dropped):
                continue
            lines = job.take_logs(lines_left)
            # keep within the byte budget: return what does not fit
            keep = 0
            for line in lines:
                cost = len(line.encode("utf-8", "replace")) + 4
                if size + cost > BODY_BUDGET and keep:
                    break
                size += cost
                keep += 1
            if keep < len(lines):
                job.return_logs(lines[keep:])
                lines = lines[:keep]
            if lines:
                logs.append({"job": job.id, "lines": lines})
                taken.append((job, lines))
                lines_left -= len(lines)
        body: dict[str, Any] = {"jobs": updates, "logs": logs}
        return body, included, taken

    def _send(self, jobs: list[JobState], now: float) -> None:
        body, included, taken = self.build(jobs, now)
        if not body["jobs"] and not body["logs"]:
            self._last_ok = True
            return
        data = json.dumps(body, allow_nan=False, separators=(",", ":"), default=str).encode()
        self.stats.requests += 1
        try:
            status, reply = self._post(data)
        except Exception as exc:
            self._failed(taken, f"{type(exc).__name__}: {exc}", None)
            return
        self.stats.last_status = status
        if 200 <= status < 300:
            self.stats.succeeded += 1
            self._acknowledged(included, now)
            self._apply_reply(reply)
        elif 400 <= status < 500 and status not in _RETRY_STATUSES:
            self.stats.rejected += 1
            self._acknowledged(included, now)  # dropped: never retry a batch the server refuses
            if not self._warned:
                self._warned = True
                _log.warning(
                    "jupyter-sse: the server rejected a batch of updates (HTTP %s): %s",
                    status,
                    reply[:500].decode("utf-8", "replace"),
                )
        else:
            self._failed(taken, f"HTTP {status}", status)
            return
        self._failures = 0
        self._next_send = 0.0
        self._last_ok = True
        # more pending than one request could carry: go again at once
        if len(body["jobs"]) >= MAX_JOBS_PER_REQUEST or any(j.logs for j, _ in taken):
            self.wake()

    def _acknowledged(self, included: list[tuple[JobState, dict[str, Any]]], now: float) -> None:
        for job, fields in included:
            job.sent = {key: fields[key] for key in CORE_FIELDS}
            job.sent_at = now

    def _failed(self, taken: list[tuple[JobState, list[str]]], error: str, status: int | None) -> None:
        for job, lines in taken:
            job.return_logs(lines)
        self.stats.failed += 1
        self.stats.last_error = error
        self._failures += 1
        self._last_ok = False
        delay = min(self.max_backoff, 0.1 * 2 ** (self._failures - 1))
        delay *= random.uniform(0.75, 1.25)  # jitter: kernels of one server do not retry in step
        self._next_send = self._clock() + min(delay, self.max_backoff)
        _log.debug("jupyter-sse: sending updates failed (%s); retry in %.2fs", error, delay)

    def _apply_reply(self, reply: bytes) -> None:
        try:
            ids = json.loads(reply or b"{}").get("cancel") or []
        except Exception:
            return
        for job_id in ids:
            job = self.get(job_id) if isinstance(job_id, str) else None
            if job is not None:
                job.request_cancel()

    # -- HTTP -------------------------------------------------------------------------------------------------

    def _close_conn(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.close()

    def _post(self, data: bytes) -> tuple[int, bytes]:
        server = self.server
        assert server is not None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if server.token:
            headers["Authorization"] = f"Bearer {server.token}"
        return self.transport.post(server.updates_path, data, headers)


# -- the process's publisher ----------------------------------------------------------------------------------

_publisher: Publisher | None = None
_publisher_lock = threading.Lock()
# what configure() last set (server and options): a forked child makes its own publisher from it
_settings: tuple[ServerInfo | None, dict[str, Any]] | None = None


def get_publisher() -> Publisher:
    """The publisher of this process, made on first use from the environment (``JUPYTER_SSE_URL``...)."""
    global _publisher
    pub = _publisher
    if pub is None:
        with _publisher_lock:
            if _publisher is None:
                if _settings is None:
                    _publisher = Publisher(discover(), flush_timeout=flush_timeout())
                else:
                    _publisher = Publisher(_settings[0], **_settings[1])
            pub = _publisher
    return pub


def configure(url: str | None = None, token: str | None = None, *, environ: bool = False, **options: Any) -> Publisher:
    """Replace the process's publisher: publish to ``url`` (None: nowhere), or read the environment again.

    Jobs that are running keep reporting to the publisher they started with.
    """
    global _publisher, _settings
    server = discover() if environ else (ServerInfo.from_url(url, token) if url else None)
    options.setdefault("flush_timeout", flush_timeout())
    with _publisher_lock:
        old = _publisher
        pub = _publisher = Publisher(server, **options)
        _settings = (server, options)
    if old is not None and not old.jobs():
        with contextlib.suppress(Exception):
            old.close(timeout=0.5)
    return pub


def _after_fork_in_child() -> None:
    # called by _fork: the thread did not survive the fork, the connection is the parent's, and the parent's
    # jobs are not the child's to report; the child publishes where the parent did, with a publisher of its own
    global _publisher
    _publisher_lock._at_fork_reinit()  # type: ignore[attr-defined]
    _publisher = None
