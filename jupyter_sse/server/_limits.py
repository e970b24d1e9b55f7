"""Limits on connections: how many event streams the server holds (the core's ``StreamLimits``, shared with the
hub), and what it does when it runs out of file descriptors.

Every open stream holds a file descriptor for as long as its client stays. Past the process's open-file limit the
server can accept nothing, not even ``/api/status`` or a kernel's connection; so streams are capped below it, and
a server that hits the limit anyway (other sockets, files, kernels) stops accepting for a moment instead of
spinning on the error and logging it per attempt.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop

from ..core.adapter import StreamLimits, default_stream_limit

# StreamLimits and default_stream_limit live in the core, shared with the hub; named here as before.
__all__ = ["AcceptGuard", "StreamLimits", "default_stream_limit", "guard_accepts"]

# Errors of accept() that mean "no resources for one more connection": retrying at once cannot succeed.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class AcceptGuard:
    """Wraps a listening socket's accept handler: out of descriptors, it pauses accepting instead of spinning.

    Without it, tornado's handler raises on every loop iteration while connections wait in the backlog: the loop
    spins at full speed and the log gets a traceback per attempt. Paused, the waiting connections stay in the
    kernel's backlog and are accepted once descriptors are free again; the error is logged at most once per
    ``log_every`` seconds, with a count.
    """

    def __init__(
        self,
        io_loop: IOLoop,
        fd: int,
        handler: Callable[[Any, int], None],
        log: logging.Logger,
        *,
        pause: float = 0.1,
        log_every: float = 10.0,
    ) -> None:
        self.io_loop = io_loop
        self.fd = fd
        self.handler = handler
        self.log = log
        self.pause = pause
        self.log_every = log_every
        self.errors = 0  # since the last log line
        self._logged_at = -float("inf")
        self._paused = False

    def __call__(self, fileobj: Any, events: int) -> None:
        try:
            self.handler(fileobj, events)
        except OSError as exc:
            if exc.errno not in _OUT_OF_RESOURCES:
                raise
            self._out_of_resources(exc)

    def _out_of_resources(self, exc: OSError) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._logged_at >= self.log_every:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            self.log.warning(
                "jupyter-sse: cannot accept connections: %s (open-file limit %d; %d times since the last report). "
                "Pausing accepts for %g s each time. Raise the limit (ulimit -n) or lower "
                "c.SSEExtension.max_event_streams.",
                exc.strerror,
                soft,
                self.errors,
                self.pause,
            )
            self._logged_at = now
            self.errors = 0
        if not self._paused:
            self._paused = True
            self.io_loop.update_handler(self.fd, 0)
            self.io_loop.call_later(self.pause, self._resume)

    def _resume(self) -> None:
        self._paused = False
        with contextlib.suppress(KeyError, ValueError):  # the socket was closed meanwhile (server shutdown)
            self.io_loop.update_handler(self.fd, IOLoop.READ)


def guard_accepts(http_server: Any, io_loop: IOLoop, log: logging.Logger) -> int:
    """Put an ``AcceptGuard`` around the accept handler of each of ``http_server``'s listening sockets.

    It relies on tornado internals (the server's ``_sockets``, the loop's ``handlers`` table); where they are not
    as expected it changes nothing and returns 0. Returns the number of sockets guarded.
    """
    sockets: dict[int, Any] = getattr(http_server, "_sockets", None) or {}
    table: dict[int, tuple[Any, Callable[[Any, int], None]]] | None = getattr(io_loop, "handlers", None)
    if table is None:
        return 0
    guarded = 0
    for fd in sockets:
        entry = table.get(fd)
        if entry is None or isinstance(entry[1], AcceptGuard):
            continue
        fileobj, handler = entry
        table[fd] = (fileobj, AcceptGuard(io_loop, fd, handler, log))
        guarded += 1
    return guarded
