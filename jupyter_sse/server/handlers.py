"""Tornado handlers for protocol v1 (docs/protocol.md): thin glue between HTTP and the core's broker."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from http.client import responses
from typing import Any, TypeVar, cast

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, StreamClosedError

from ..core import (
    MAX_BODY_BYTES,
    STATES,
    Broker,
    Event,
    ProtocolError,
    Subscription,
    UpdateBatch,
    parse_limit,
    parse_update_batch,
)
from ..core.adapter import (
    PING,
    StreamLimits,
    StreamSettings,
    last_event_id,
    open_subscription,
    token_from_authorization,
)
from ..protocol import API_PATH
from ._memory import TrimScheduler

__all__ = ["handlers"]

AUTH_RESOURCE = "jupyter_sse"
_API = "/" + API_PATH.rstrip("/")
_JOB_ID = r"(?P<job_id>[^/]+)"

_F = TypeVar("_F", bound=Callable[..., Awaitable[None]])

_ERROR_NAMES = {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}


def _protocol_errors(method: _F) -> _F:
    """Turn the core's ProtocolError into the protocol's JSON error, without a traceback in the log."""

    @functools.wraps(method)
    async def wrapper(self: _Handler, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except ProtocolError as exc:
            self.log.info("jupyter-sse refused %s %s: %s", self.request.method, self.request.path, exc)
            self.set_status(exc.status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(exc.body()))

    return cast(_F, wrapper)


class _Handler(ExtensionHandlerMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def broker(self) -> Broker:
        return cast(Broker, self.settings["jupyter_sse_broker"])

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        detail: Any = responses.get(status_code, "error")
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            detail = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": _ERROR_NAMES.get(status_code, "error"), "detail": detail}))

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value, allow_nan=False))


class JobsHandler(_Handler):
    @web.authenticated
    @authorized
    @_protocol_errors
    async def get(self) -> None:
        state = self.get_argument("state", None)
        if state is not None and state not in STATES:
            raise ProtocolError(400, "invalid_query", f"state must be one of {', '.join(STATES)}")
        limit = parse_limit(self.get_argument("limit", None))
        page = self.broker.page_jobs(state, limit, self.get_argument("cursor", None) or None)
        self.write_json(page.to_dict())


class JobHandler(_Handler):
    @web.authenticated
    @authorized
    @_protocol_errors
    async def get(self, job_id: str) -> None:
        self.write_json(self.broker.get(job_id).to_dict())

    @web.authenticated
    @authorized
    @_protocol_errors
    async def delete(self, job_id: str) -> None:
        self.broker.delete(job_id)
        self.set_status(204)
        self.finish()


class CancelHandler(_Handler):
    @web.authenticated
    @authorized
    @_protocol_errors
    async def post(self, job_id: str) -> None:
        job, asked = self.broker.request_cancel(job_id)
        self.write_json(job.to_dict(), status=202 if asked else 200)


def _publisher_or_authorized(method: _F) -> _F:
    """The kernel's publish token skips the authorizer: it is no user, and it can do this and nothing else."""
    checked = authorized(method)

    @functools.wraps(method)
    async def wrapper(self: UpdatesHandler, *args: Any, **kwargs: Any) -> None:
        if self.is_publisher:
            await method(self, *args, **kwargs)
        else:
            await checked(self, *args, **kwargs)

    return cast(_F, wrapper)


class UpdatesHandler(_Handler):
    """``POST updates``: what kernels report. Accepts the publish token as well as the server's own auth."""

    is_publisher = False
    # A report is not user activity by itself; running jobs count through activity.py, as configured.
    _track_activity = False

    async def prepare(self) -> None:  # type: ignore[override]
        token = self.settings.get("jupyter_sse_publish_token")
        given = token_from_authorization(self.request.headers.get("Authorization"))
        if token and given is not None and hmac.compare_digest(given.encode(), str(token).encode()):
            if not self.check_host():
                raise web.HTTPError(403)
            from jupyter_server.auth.identity import User

            self.is_publisher = True
            self.current_user = self._jupyter_current_user = User(username="jupyter-sse-publisher")
            return
        await super().prepare()

    def check_xsrf_cookie(self) -> None:
        if not self.is_publisher:
            super().check_xsrf_cookie()

    @web.authenticated
    @_publisher_or_authorized
    @_protocol_errors
    async def post(self) -> None:
        try:
            if len(self.request.body) > MAX_BODY_BYTES:
                raise ProtocolError(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
            batch = _relative_paths(parse_update_batch(self.request.body), self.settings.get("server_root_dir", ""))
            cancel = self.broker.apply(batch)
        except ProtocolError as exc:
            self.broker.metrics.refused(exc.error)
            raise
        self.write_json({"cancel": cancel})


def _relative_paths(batch: UpdateBatch, root_dir: str) -> UpdateBatch:
    """Report notebook paths as JupyterLab names them: relative to the server's root, with "/".

    A kernel knows its notebook only as the absolute file path jupyter_server gives it (``JPY_SESSION_NAME``).
    """
    if not root_dir or not any(update.path for update in batch.jobs):
        return batch
    root = os.path.abspath(root_dir)
    jobs = []
    for update in batch.jobs:
        path = update.path
        if path and os.path.isabs(path) and os.path.commonpath([root, os.path.abspath(path)]) == root:
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            update = update.model_copy(update={"path": relative})
        jobs.append(update)
    return batch.model_copy(update={"jobs": jobs})


# The most bytes of events a stream hands to the socket at once (or one event, if larger): what a client that
# stops reading can make this process hold for it (beyond the kernel's socket buffer) until the send timeout.
SEND_PIECE_BYTES = 8 * 1024
# The largest frame the broadcast path writes; a larger one goes the loop's way, in pieces. What the socket does
# not take of it stays queued as a view of the one frame every subscriber of that pass shares.
BROADCAST_FRAME_BYTES = 64 * 1024

_last_chunk: tuple[bytes, bytes] = (b"", b"")
_trimmer = TrimScheduler()


def _chunk(frame: bytes) -> bytes:
    """``frame`` as one HTTP/1.1 chunk; the broker hands one frame to every subscriber, so it is framed once."""
    global _last_chunk
    if _last_chunk[0] is not frame:
        _last_chunk = (frame, b"%x\r\n%b\r\n" % (len(frame), frame))
    return _last_chunk[1]


def _pieces(events: list[Event], size: int) -> Iterator[bytes]:
    """The events' frames in pieces of whole events, each at most ``size`` bytes unless one event alone is larger.

    Whole events, so that every chunk on the wire ends at an event's end (what proxies and simple clients expect).
    """
    frames: list[bytes] = []
    length = 0
    for event in events:
        frame = event.encode()
        if frames and length + len(frame) > size:
            yield b"".join(frames)
            frames.clear()
            length = 0
        frames.append(frame)
        length += len(frame)
    if frames:
        yield b"".join(frames)


class EventsHandler(_Handler):
    """``GET events`` and ``GET jobs/{id}/events``: the SSE streams."""

    _subscription: Subscription | None = None
    _refused = False
    # An open stream (and its end, hours later) is not activity, or a forgotten tab would keep the
    # server from being culled; running jobs count through activity.py.
    _track_activity = False

    @web.authenticated
    @authorized
    @_protocol_errors
    async def get(self, job_id: str | None = None) -> None:
        limits = cast(StreamLimits, self.settings["jupyter_sse_stream_limits"])
        user = self._stream_holder()
        refused = limits.refuse(user)  # logged by the limits at a bounded rate (clients at the cap come back)
        if refused is not None:
            self._refuse(refused)
            return
        try:
            await self._stream(job_id)
        finally:
            limits.closed(user)

    def _refuse(self, refused: ProtocolError) -> None:
        """503 with Retry-After."""
        self._refused = True
        self.set_status(refused.status)
        self.set_header("Retry-After", str(self._stream_settings.retry_after))
        self.set_header("Content-Type", "application/json")
        # Closed after the answer (tornado's own flag for it): a refused client kept alive would hold the
        # descriptor the cap is there to save.
        cast(Any, self.request.connection)._disconnect_on_finish = True
        self.finish(json.dumps(refused.body()))

    @property
    def _stream_settings(self) -> StreamSettings:
        return cast(StreamSettings, self.settings["jupyter_sse_stream_settings"])

    def _log(self) -> None:
        # jupyter_server logs every 5xx at ERROR with the request's headers: for a refusal, logged above instead.
        if not self._refused:
            super()._log()

    def _stream_holder(self) -> str:
        """Whom a stream counts against: the user, except that requests with the server's token count as one
        (jupyter_server names each of them a new anonymous user)."""
        if self.identity_provider.is_token_authenticated(self):
            return "\0token"
        return str(getattr(self.current_user, "username", ""))

    async def _stream(self, job_id: str | None) -> None:
        resume = last_event_id(self.request.headers.get("Last-Event-ID"), self.get_argument("last_event_id", None))
        sub = open_subscription(self.broker, job_id, self.get_arguments("job"), resume)
        self._subscription = sub
        config = self._stream_settings
        self._transforms = []  # never gzip a stream: compression buffers it
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        try:
            # Bytes at once, so proxies and clients see a live stream before the first event.
            self.write(config.preamble)
            await self._send(config.send_timeout)
            sub.set_writer(self._write_now)
            while not sub.done:
                events = await sub.next_events(config.heartbeat)
                if events:
                    # In pieces, each sent before the next is made: a large first sync to a client that does not
                    # read never sits whole in this process, only the piece the kernel has not taken yet.
                    for piece in _pieces(events, SEND_PIECE_BYTES):
                        self.write(piece)
                        del piece  # tornado keeps its own chunked copy until sent; ours would double it meanwhile
                        await self._send(config.send_timeout)
                        # Let the loop run between pieces even when the socket took each at once: every write
                        # leaves a resolved future and its callbacks queued on the loop, and thousands of them
                        # (a first sync of thousands of jobs) were the peak of the process's memory. It also
                        # lets other streams and requests in during a long first sync.
                        await asyncio.sleep(0)
                    continue
                if not sub.done:
                    self.write(PING)
                await self._send(config.send_timeout)
        except (StreamClosedError, TimeoutError):
            pass
        finally:
            sub.set_writer(None)
            sub.close()
            _trimmer.closed_one()
        if not self._finished:
            with contextlib.suppress(StreamClosedError):
                self.finish()

    def _write_now(self, frame: bytes) -> bool:
        """The broker's broadcast path: write into an idle socket straight away.

        A socket still sending earlier bytes refuses, so a slow client is left to the loop above, where the send
        timeout drops it; the bytes in flight stay bounded by one frame.
        """
        connection = cast(HTTP1Connection, self.request.connection)
        stream = connection.stream
        if self._finished or stream.closed() or stream.writing() or len(frame) > BROADCAST_FRAME_BYTES:
            return False  # a frame over the bound goes the loop's way, in pieces
        # Below tornado's HTTP layer: measured at 1,000 subscribers, its write path (RequestHandler.flush,
        # HTTP1Connection.write, two futures and IOStream's buffer per call) took about a third of the server's
        # time, more than the send itself. This is sound only because nothing is queued before it (checked above),
        # so the bytes stay in order. The framing is the one tornado chose for this response: an HTTP/1.1 GET
        # answered 200 with no Content-Length is chunked, an HTTP/1.0 one is not.
        data = _chunk(frame) if self.request.version == "HTTP/1.1" else frame
        if type(stream) is IOStream:
            try:
                sent = stream.socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                return False  # a reset connection: the waiting loop finds the stream closed and ends
        else:
            sent = 0  # TLS: a write the SSL layer could not finish must be repeated as it was; SSLIOStream does that
        if sent < len(data):
            # A view, not a copy: the frame is shared by every subscriber of this pass. Tries the socket again at
            # once; what it does not take stays queued (at most one frame: the next is refused while it is).
            stream.write(memoryview(data)[sent:])
        if stream.writing() and self._subscription is not None:
            # The client is not keeping up: wake the loop above, which waits for these bytes within send_timeout.
            self._subscription.wake()
        return True

    async def _send(self, timeout: float) -> None:
        flushed = self.flush()
        if flushed.done():
            # The common case: the socket took it all at once. wait_for would cost a Task and a timer per write.
            flushed.result()
            return
        try:
            await asyncio.wait_for(flushed, timeout)
        except TimeoutError:
            # A client that stopped reading: drop it rather than hold its buffer forever.
            self.log.info("jupyter-sse: dropping a subscriber that did not read for %s s", timeout)
            self.broker.metrics.slow_subscribers_dropped += 1
            cast(Any, self.request.connection).close()
            raise

    def on_connection_close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()


def _request_metrics_made_early() -> None:
    """Makes the Jupyter server's request-duration histogram for the ends of streams now, at start.

    The server makes one per method, handler and status the first time a request of that kind ends: some 50 small
    objects that live as long as the process. For streams that is often when a burst of them closes, and those
    objects then land in the allocator's arenas of the burst, each keeping one from being given back.
    """
    try:
        from jupyter_server.prometheus.metrics import HTTP_REQUEST_DURATION_SECONDS
    except ImportError:  # a Jupyter server without its Prometheus metrics
        return
    name = f"{EventsHandler.__module__}.{EventsHandler.__name__}"
    for status in (200, 503):  # a stream that ended, one refused at the cap
        HTTP_REQUEST_DURATION_SECONDS.labels(method="GET", handler=name, status_code=status)


def handlers() -> list[tuple[str, type[_Handler]]]:
    """The routes, relative to the server's base URL (the extension app prepends it)."""
    _request_metrics_made_early()
    return [
        (rf"{_API}/jobs", JobsHandler),
        (rf"{_API}/jobs/{_JOB_ID}", JobHandler),
        (rf"{_API}/jobs/{_JOB_ID}/cancel", CancelHandler),
        (rf"{_API}/jobs/{_JOB_ID}/events", EventsHandler),
        (rf"{_API}/events", EventsHandler),
        (rf"{_API}/updates", UpdatesHandler),
    ]
