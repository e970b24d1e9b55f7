"""Sends notifications through Apprise from worker threads: no target, however slow or broken, holds up a job, an
update or the server.

Each message is queued (bounded: when the queue is full the message is dropped and counted as failed) and sent by
one of a few daemon threads, with Apprise's socket timeouts capped and its whole call bounded. Messages to the same
targets go out one at a time, so a dead target holds one worker, never all of them: the other targets (on a hub,
the other users') are still told at once. Failures are logged at a bounded rate, Apprise's own log lines too, so
a dead mail server cannot fill the server's log.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from .metrics import BrokerMetrics
from .notify import Message

__all__ = ["AppriseSender", "RateLimitedLog", "apprise_config_paths"]

_log = logging.getLogger("jupyter_sse")


class RateLimitedLog:
    """At most one record per ``period`` seconds; the next one says how many were held back."""

    def __init__(self, log: logging.Logger, period: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self.period = period
        self._clock = clock
        self._next = -float("inf")
        self.suppressed = 0
        self._lock = threading.Lock()

    def warning(self, text: str, *args: object) -> bool:
        with self._lock:
            now = self._clock()
            if now < self._next:
                self.suppressed += 1
                return False
            self._next = now + self.period
            held, self.suppressed = self.suppressed, 0
        suffix = f" ({held} more since the last report)" if held else ""
        self._log.warning(text + suffix, *args)
        return True


class _RateFilter(logging.Filter):
    """Apprise logs every failed delivery itself; a filter on its logger keeps that to a bounded rate too."""

    def __init__(self, period: float) -> None:
        super().__init__()
        self.period = period
        self._next = -float("inf")
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # debug output is off unless someone asked for it
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                return False
            self._next = now + self.period
            return True


def _import_apprise() -> Any:
    try:
        import apprise
    except ImportError:
        raise ImportError(
            "notifications need Apprise: install jupyter-sse[notify] (or the apprise package) in the server's "
            "environment"
        ) from None
    return apprise


class AppriseSender:
    """``sender(message)`` queues a :class:`~jupyter_sse.core.notify.Message` and returns at once."""

    def __init__(
        self,
        urls: Sequence[str] = (),
        config_paths: Sequence[str] = (),
        *,
        timeout: float = 10.0,
        workers: int = 2,
        queue_size: int = 100,
        metrics: BrokerMetrics | None = None,
        log_period: float = 60.0,
    ) -> None:
        self._apprise = _import_apprise()
        if not (timeout > 0) or workers < 1 or queue_size < 1:
            raise ValueError("timeout must be > 0, workers and queue_size at least 1")
        self.timeout = timeout
        self.metrics = metrics if metrics is not None else BrokerMetrics()
        self._failures = RateLimitedLog(_log, log_period)
        self.default = self._targets(urls)
        if config_paths:
            self.default.add(self._apprise.AppriseConfig(paths=list(config_paths)))
        self.has_default_targets = len(self.default) > 0  # reads the config files: a typo shows at startup
        # Apprise 2.3 bounds a whole call; older ones only have the socket timeouts capped below.
        self._call_timeout = "timeout" in inspect.signature(self._apprise.Apprise.notify).parameters
        self._filter = _RateFilter(log_period)
        logging.getLogger("apprise").addFilter(self._filter)
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._waiting: OrderedDict[tuple[str, ...], deque[Message]] = OrderedDict()  # by targets, oldest first
        self._count = 0  # messages in _waiting
        self._busy: set[tuple[str, ...]] = set()  # targets a worker is sending to
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"jupyter-sse-notify-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()
        self.closed = False

    def _targets(self, urls: Sequence[str]) -> Any:
        targets = self._apprise.Apprise()
        for url in urls:
            if not targets.add(url):
                # Never the URL itself in the error: it can hold a password.
                scheme = url.split("://", 1)[0] if "://" in url else "?"
                raise ValueError(f"not an Apprise URL Apprise can use (scheme {scheme!r})")
        return targets

    def __call__(self, message: Message) -> None:
        if self.closed:
            return
        with self._cond:
            full = self._count >= self._queue_size
            if not full:
                self._waiting.setdefault(message.targets, deque()).append(message)
                self._count += 1
                self._cond.notify()
        if full:
            self.metrics.notifications_failed += 1
            self._failures.warning("jupyter-sse: notification dropped: %d are waiting to be sent", self._count)

    def _next(self) -> Message | None:
        """The oldest message whose targets no worker is sending to; None once closing and none is left."""
        with self._cond:
            while True:
                for targets, waiting in self._waiting.items():
                    if targets not in self._busy:
                        message = waiting.popleft()
                        if waiting:
                            self._waiting.move_to_end(targets)  # the other targets' turn first
                        else:
                            del self._waiting[targets]
                        self._count -= 1
                        self._busy.add(targets)
                        return message
                if self._stopping and not self._waiting:
                    return None
                self._cond.wait()

    def _work(self) -> None:
        while True:
            message = self._next()
            if message is None:
                return
            try:
                ok = self.send_now(message)
            except Exception as exc:  # Apprise or a plugin raising: the thread must live on
                ok = False
                self._failures.warning("jupyter-sse: notification failed: %s: %s", type(exc).__name__, exc)
            finally:
                with self._cond:
                    self._busy.discard(message.targets)
                    self._cond.notify_all()
            if ok:
                self.metrics.notifications_sent += 1
            else:
                self.metrics.notifications_failed += 1

    def send_now(self, message: Message) -> bool:
        """Send in this thread (a worker's), within the timeouts; True when every target took it."""
        if message.targets:
            try:
                targets = self._targets(message.targets)
            except ValueError as exc:
                self._failures.warning("jupyter-sse: a job's notify target was refused: %s", exc)
                return False
        else:
            targets = self.default
        if len(targets) == 0:
            return False
        for plugin in targets:
            plugin.socket_connect_timeout = min(float(plugin.socket_connect_timeout or self.timeout), self.timeout)
            plugin.socket_read_timeout = min(float(plugin.socket_read_timeout or self.timeout), self.timeout)
        kwargs: dict[str, Any] = {"timeout": self.timeout} if self._call_timeout else {}
        result = targets.notify(
            body=message.body,
            title=message.title,
            notify_type=self._apprise.NotifyType(message.kind),
            # plain text as written: a mail target would otherwise turn it into HTML and join its lines
            body_format=self._apprise.NotifyFormat.TEXT,
            **kwargs,
        )
        if not result:
            self._failures.warning("jupyter-sse: a notification (%s) was not delivered", message.title)
        return bool(result)

    @property
    def waiting(self) -> int:
        return self._count

    def close(self, timeout: float = 2.0) -> None:
        """Let the workers send what is queued, within ``timeout``; a target that hangs is left to its thread."""
        if self.closed:
            return
        self.closed = True
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not any(thread.is_alive() for thread in self._threads):
            # a worker still waiting on a target keeps its failures' log bounded when it gives up
            logging.getLogger("apprise").removeFilter(self._filter)


def apprise_config_paths(configured: list[str] | None) -> list[str]:
    """Apprise's config files: the ones configured; else ``APPRISE_CONFIG_PATH``; else Apprise's default paths
    that exist (as the ``apprise`` command reads them)."""
    if configured is not None:
        return [os.path.expanduser(path) for path in configured]
    from_env = os.environ.get("APPRISE_CONFIG_PATH", "").strip()
    if from_env:
        return [os.path.expanduser(path) for path in re.split(r"[\r\n;]+", from_env) if path]
    try:
        from apprise.cli import DEFAULT_CONFIG_PATHS
    except ImportError:
        return []
    return [path for path in (os.path.expanduser(p) for p in DEFAULT_CONFIG_PATHS) if os.path.isfile(path)]
