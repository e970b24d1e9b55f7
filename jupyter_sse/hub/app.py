"""The hub's FastAPI app: protocol v1 (docs/protocol.md) over the core's broker, as thin as the tornado handlers.

Streams are sse-starlette's ``EventSourceResponse`` (its headers, its send with a timeout, its cleanup), sending
the core's frames; the broker writes to a waiting stream directly (``_EventStream.write_now``, the broadcast path).
The broker, the store, every rule about jobs and what both servers do around them (the token, the job filter, the
start of a stream, the settings, the caps on streams: ``core.adapter``) are the core's; this module only maps HTTP
onto them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from pydantic import StringConstraints
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._version import __version__
from ..core import (
    DEFAULT_PAGE_SIZE,
    MAX_BODY_BYTES,
    MAX_PAGE_SIZE,
    PAGE_CURSOR,
    STATES,
    Broker,
    JobPage,
    MemoryStore,
    ProtocolError,
    Subscription,
    parse_update_batch,
)
from ..core.adapter import (
    PING,
    StreamLimits,
    StreamSettings,
    job_filter,
    last_event_id,
    lease_check_period,
    open_subscription,
    os_user,
)
from ..core.notify import NotifyRules
from ..core.store import StoreUnavailable
from ..core.transitions import watch_state_changes
from ..protocol import API_PATH, EVENT_ID_PATTERN, JOB_ID_PATTERN, JOB_ID_RULE
from ._errors import error_response, install_error_handlers
from ._identity import Authenticate, Identify, Identity, TokenIdentity, UsersIdentity, caller
from ._jupyterhub import JupyterHubService, ServicePrefix
from ._metrics import add_metrics_route
from ._notify import HubNotifications, jupyterhub_user_links
from ._notify_routes import add_notify_routes
from ._schema import CancelReply, JobList, errors, install_openapi, update_body
from ._shared import open_shared, write_turn
from ._tenants import MergedSubscription, Tenants, merge_pages
from ._users import UsersFile

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/" + API_PATH.rstrip("/")

_log = logging.getLogger("jupyter_sse.hub")

StateFilter = Literal["pending", "running", "succeeded", "failed", "cancelled", "lost"]
assert set(StateFilter.__args__) == set(STATES)  # type: ignore[attr-defined]
# The patterns are the core's rules, stated for the schema; a request that breaks one gets the same 400 as from
# the core (see _errors.py), so stating them here changes no answer.
# `<epoch>.<seq>`, or a bare seq (an id from before epochs: a reset follows); empty: no id (as if not given)
_EVENT_ID = rf"{EVENT_ID_PATTERN}|^$"
JobIdPath = Annotated[str, Path(pattern=JOB_ID_PATTERN, description=JOB_ID_RULE)]
JobFilter = Annotated[
    list[Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)]] | None,
    Query(description="only these jobs (repeatable)"),
]
LastEventIdHeader = Annotated[
    str | None,
    Header(alias="Last-Event-ID", pattern=_EVENT_ID, description="resume after this event id (an id the hub sent)"),
]
LastEventIdQuery = Annotated[
    str | None,
    Query(
        alias="last_event_id",
        pattern=_EVENT_ID,
        description="the same as the Last-Event-ID header, for a first connect",
    ),
]
_SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "an SSE stream of `job`, `log`, `removed` and `reset` events",
        "content": {"text/event-stream": {}},
    }
}
# The extension's settings and defaults (the core's), so that the two servers cannot drift.
_DEFAULTS = StreamSettings()
# The largest frame the broadcast path writes; a larger one goes through the stream's loop (and its send timeout).
_BROADCAST_FRAME_BYTES = 64 * 1024


Caller = Annotated[Identity, Depends(caller)]
OwnerQuery = Annotated[
    str | None,
    Query(max_length=128, description="an admin's choice of whose job it is (when several users have that id)"),
]


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value, allow_nan=False), status_code=status, media_type="application/json")


class _EventStream(EventSourceResponse):
    """An ``EventSourceResponse`` that treats a subscriber too slow to take an event as gone, not as a crash, and
    that the broker can write to directly (``write_now``, the broadcast path)."""

    dropped: Callable[[], None] | None = None  # told when a subscriber is dropped (the metrics count it)
    gone: Callable[[], None] | None = None  # told when the client disconnects (closes the subscription)
    ended: Callable[[], None] | None = None  # told once the response is over, however it ended
    _send: Send | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._respond(scope, receive, send)
        finally:
            if self.ended is not None:
                self.ended()

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].upper() == "HEAD":
            await super().__call__(scope, receive, send)  # answered without iterating the body
            return
        # sse-starlette's own __call__ runs four tasks in an anyio task group per stream: the body, its ping, a
        # shutdown watcher and a disconnect listener. Measured, they were 12 of an idle subscriber's 42 KiB. Here
        # the body is sent by sse-starlette's _stream_response (its encoding, send timeout and cleanup) in this
        # task; the heartbeat is the body's (the core's PING); shutdown closes the brokers, which ends every body
        # (HubServer); only the disconnect listener needs a task of its own.
        self._send = send
        listener = asyncio.ensure_future(self._until_disconnect(receive))
        try:
            await self._stream_response(send)
        except SendTimeoutError:
            if self.dropped is not None:
                self.dropped()
            _log.info("jupyter-sse hub: dropping a subscriber that did not read for %s s", self.send_timeout)
        finally:
            self._send = None
            self.active = False
            listener.cancel()

    async def _until_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.active = False
        if self.gone is not None:
            self.gone()

    def write_now(self, frame: bytes) -> bool:
        """The broker's broadcast path: hand ``frame`` to the server at once, or refuse (False) if it cannot be.

        Measured at 1,000 subscribers, a task woken per subscriber per change, then sse-starlette's send chain
        (a cancel scope per send, the middlewares' wrappers) was most of the hub's time. Here the broker writes one
        frame, encoded once, to every waiting subscriber in one pass. The ASGI ``send`` is run to its end without
        the loop: uvicorn writes to the transport and returns without suspending unless the socket is paused for
        flow control, and then it suspends before writing anything, so closing it there writes nothing and the
        subscriber reads from its cursor the usual way (with sse-starlette's send timeout for a slow client).
        """
        send = self._send
        if send is None or not self.active or len(frame) > _BROADCAST_FRAME_BYTES:
            return False
        step = send({"type": "http.response.body", "body": frame, "more_body": True})
        try:
            step.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            return True
        except Exception:  # a closed or finished response: the stream's own loop meets it and ends
            return False
        step.close()  # type: ignore[attr-defined]
        return False


def create_app(
    token: str | None,
    *,
    heartbeat: float = _DEFAULTS.heartbeat,
    retry_ms: int = _DEFAULTS.retry_ms,
    send_timeout: float = _DEFAULTS.send_timeout,
    log_lines_kept: int = 1000,
    jobs_kept: int = 500,
    publisher_lease: float = _DEFAULTS.publisher_lease,
    owner: str | None = None,
    notify_urls: Sequence[str] | None = None,
    notify_min_duration: float = 60.0,
    notify_window: float = 30.0,
    notify_settings: str | os.PathLike[str] | None = None,
    sync_finished_jobs: int = 100,
    users: str | os.PathLike[str] | UsersFile | None = None,
    identify: Sequence[Identify] = (),
    jupyterhub: JupyterHubService | None = None,
    store: str | None = None,
    wake_delay: float = _DEFAULTS.wake_delay,
    max_event_streams: int = 0,
    max_event_streams_per_user: int = 0,
) -> FastAPI:
    """The hub as an ASGI app. With no ``token``, ``users`` file or ``identify`` way, it serves without auth
    (``run`` allows that on loopback only, and only when asked).

    Every job belongs to the user who published it (``owner``); each user has a broker of their own (see
    ``_tenants``). The single ``token``'s holder is ``owner`` (default: the OS user), an admin. ``jupyterhub``:
    serve as that JupyterHub service (under its prefix, JupyterHub's tokens and OAuth login, its scopes).

    ``app.state.broker`` is the broker; ``broker.close()`` ends every stream (``HubServer`` calls it as soon as
    shutdown starts, so open streams never hold the server up). ``notify_urls``: the Apprise URLs told when jobs
    end, by the extension's rules (``None``: ``APPRISE_URLS`` and Apprise's config files); bad rules raise
    ValueError here; ``notify_settings``: a file keeping the targets and rules users set through the ``notify``
    route (without it, and without Redis, they last as long as the process). ``store``: ``redis://HOST:PORT/DB``
    keeps the jobs in Redis, shared by every hub started on the same URL (needs the redis extra); None keeps them
    in this process's memory.

    ``max_event_streams`` (0: the open-file limit less a reserve) and ``max_event_streams_per_user`` (0: as many):
    the caps on open event streams, as the extension's; beyond them a stream is answered 503 with Retry-After.
    """
    settings = StreamSettings(
        heartbeat=heartbeat,
        retry_ms=retry_ms,
        send_timeout=send_timeout,
        publisher_lease=publisher_lease,
        wake_delay=wake_delay,
    )
    if max_event_streams < 0 or max_event_streams_per_user < 0:
        raise ValueError("max_event_streams and max_event_streams_per_user must be >= 0 (0: the default)")
    limits = StreamLimits.configured(
        max_event_streams,
        max_event_streams_per_user,
        report=lambda message: _log.warning("jupyter-sse hub %s", message),
    )
    rules = NotifyRules(min_duration=notify_min_duration, window=notify_window)  # bad rules: refused now
    owner = owner or os_user()
    users_file = UsersFile(users) if users is not None and not isinstance(users, UsersFile) else users
    ways: list[Identify] = []
    if users_file is not None:
        users_file.check()
        ways.append(UsersIdentity(users_file))
    if token:
        ways.append(TokenIdentity(token, owner))
    ways.extend(identify)
    if jupyterhub is not None:
        ways.append(jupyterhub)

    def make_broker(store: MemoryStore, name: str) -> Broker:
        return Broker(
            store,
            log_lines_kept=log_lines_kept,
            jobs_kept=jobs_kept,
            owner=name,
            sync_finished_jobs=sync_finished_jobs,
            **settings.broker_options(),
        )

    # The store first: it says what is wrong with a URL it cannot use (the notifications read the same URL).
    shared = open_shared(store, log_lines_kept)
    notifications = HubNotifications(
        notify_urls, rules, users_file=users_file, store_url=store, settings_file=notify_settings,
        user_links=jupyterhub_user_links() if jupyterhub is not None else None,
    )  # fmt: skip
    tenants = Tenants(make_broker, owner, shared.make if shared is not None else None)

    found = tenants.get(owner)
    assert found is not None
    broker: Broker = found
    metrics = broker.metrics

    def on_new(new: Broker) -> None:
        # Every user's broker counts into the one set of metrics, and is watched for notifications.
        new.metrics = metrics
        watch_state_changes(new, [metrics.observe_state_change])
        notifications.attach(new)  # the sender starts with the app; until then nothing ends that it would send

    tenants.on_new.append(on_new)
    notifications.attach(broker)
    if shared is not None:
        tenants.on_new.append(shared.attach)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.ensure_future(_expire_leases(tenants, settings.publisher_lease))
        following = asyncio.ensure_future(shared.run(tenants)) if shared is not None else None
        notifications.start(metrics)
        try:
            yield
        finally:
            tenants.close()
            notifications.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if following is not None and shared is not None:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
                await shared.close()

    app = FastAPI(
        title="jupyter-sse hub",
        version=__version__,
        description="Live progress of jobs, protocol v1 (docs/protocol.md). Every route needs a token as "
        "`Authorization: Bearer <token>` (or `token <token>`): a user's (from the users file), the hub's own, or "
        "a JupyterHub token when the hub runs as a JupyterHub service. A user sees and acts on their own jobs "
        "only; an admin on everyone's (`owner` says whose).",
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # a browser cannot send the bearer token to a docs page; the schema is what tools read
        redoc_url=None,
    )
    app.state.broker = broker  # the hub's own user's (the single token's holder's)
    app.state.tenants = tenants
    app.state.users_file = users_file
    app.state.stream_limits = limits
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(
        Authenticate,
        ways=ways,
        anonymous=Identity(owner, admin=True) if not ways else None,
        refuse=jupyterhub.refuse if jupyterhub is not None else None,
    )
    if jupyterhub is not None:
        app.add_middleware(ServicePrefix, service=jupyterhub)  # added last: it runs first
    add_metrics_route(app, broker, tenants)  # /metrics: admins only, over every user
    add_notify_routes(app, notifications)  # each user's own targets and rules

    def own(who: Identity) -> Broker:
        found = tenants.get(who.name)
        assert found is not None
        return found

    def holding(who: Identity, job_id: str, owner: str | None) -> Broker:
        """The broker with the job the caller names: their own; for an admin, any user's."""
        if who.admin:
            return tenants.find(job_id, owner)
        if owner is not None and owner != who.name:
            raise ProtocolError(404, "not_found", f"no job {job_id!r}")  # the same answer as for a made-up id
        mine = own(who)
        mine.get(job_id)
        return mine

    def refused(who: Identity) -> Response | None:
        """The 503 for a stream beyond the caps, or None: the stream is counted until its response ends."""
        refusal = limits.refuse(who.name)
        if refusal is None:
            return None
        # Closed after the answer: a refused client kept alive would hold the descriptor the cap is there to save.
        headers = {"Retry-After": str(settings.retry_after), "Connection": "close"}
        return error_response(refusal.status, refusal.error, refusal.detail, headers)

    def stream(who: Identity, sub: Subscription | MergedSubscription) -> EventSourceResponse:
        async def frames() -> AsyncIterator[bytes]:
            try:
                # Bytes at once, so proxies and clients see a live stream before the first event.
                yield settings.preamble
                sub.set_writer(response.write_now)
                while not sub.done:
                    events = await sub.next_events(settings.heartbeat)
                    if events:
                        yield b"".join(event.encode() for event in events)
                    elif not sub.done:
                        yield PING
            finally:
                sub.set_writer(None)
                sub.close()

        released = False

        def ended() -> None:
            nonlocal released
            sub.close()  # also when the body never ran (HEAD)
            if not released:
                released = True
                limits.closed(who.name)

        response = _EventStream(
            frames(),
            headers={"Cache-Control": "no-cache"},
            ping=0,  # the heartbeat is the loop's (see _PING)
            send_timeout=settings.send_timeout,
        )
        response.dropped = _count_drop
        response.gone = sub.close
        response.ended = ended
        return response

    def _count_drop() -> None:
        broker.metrics.slow_subscribers_dropped += 1

    @app.get(f"{API_PREFIX}/jobs", response_model=None, responses={200: {"model": JobList}, **errors(400)})
    async def list_jobs(
        who: Caller,
        state: Annotated[StateFilter | None, Query()] = None,
        limit: Annotated[
            int | None, Query(ge=1, le=MAX_PAGE_SIZE, description=f"jobs a page (default {DEFAULT_PAGE_SIZE})")
        ] = None,
        cursor: Annotated[
            str | None,
            Query(pattern=f"^{PAGE_CURSOR.pattern}$", description="the `next` of the previous page: the page after it"),
        ] = None,
        owner: OwnerQuery = None,
    ) -> Response:
        """A page of the caller's jobs (an admin's: everyone's, or `owner`'s), newest first; `state` keeps those
        in that state. `total` counts them all; `next` (null on the last page) is the `cursor` of the next page."""
        size = DEFAULT_PAGE_SIZE if limit is None else limit
        if not who.admin:
            if owner not in (None, who.name):
                return _json(JobPage([], 0, None).to_dict())
            return _json(own(who).page_jobs(state, size, cursor or None).to_dict())
        chosen = [b for b in tenants if owner is None or b.owner == owner]
        return _json(merge_pages([b.page_jobs(state, size, cursor or None) for b in chosen], size).to_dict())

    @app.get(f"{API_PREFIX}/jobs/{{job_id}}", response_model=None, responses=errors(400, 404))
    async def get_job(who: Caller, job_id: JobIdPath, owner: OwnerQuery = None) -> Response:
        """One job."""
        return _json(holding(who, job_id, owner).get(job_id).to_dict())

    @app.delete(
        f"{API_PREFIX}/jobs/{{job_id}}",
        status_code=204,
        response_model=None,
        responses={204: {"description": "forgotten"}, **errors(400, 404, 409)},
    )
    async def delete_job(who: Caller, job_id: JobIdPath, owner: OwnerQuery = None) -> Response:
        """Forget a finished job (409 `job_running` while it runs); subscribers get a `removed` event."""
        holder = holding(who, job_id, owner)
        async with write_turn(holder):
            holder.delete(job_id)
        return Response(status_code=204)

    @app.post(
        f"{API_PREFIX}/jobs/{{job_id}}/cancel",
        status_code=202,
        response_model=None,
        responses={200: {"description": "the job had already ended"}, **errors(400, 404)},
    )
    async def cancel_job(who: Caller, job_id: JobIdPath, owner: OwnerQuery = None) -> Response:
        """Ask for a job's cancellation: 202 with the job; a finished job is returned unchanged with 200."""
        holder = holding(who, job_id, owner)
        async with write_turn(holder):
            job, asked = holder.request_cancel(job_id)
        return _json(job.to_dict(), status=202 if asked else 200)

    @app.post(
        f"{API_PREFIX}/updates",
        response_model=None,
        responses={200: {"model": CancelReply}, **errors(400, 404, 409, 413)},
        openapi_extra=update_body(),
    )
    async def post_updates(who: Caller, request: Request) -> Response:
        """What publishers report: upserts every job of the batch, whole or not at all, as the caller's jobs."""
        try:
            batch = parse_update_batch(await _read_body(request))
            mine = own(who)
            async with write_turn(mine):
                cancel = mine.apply(batch)
        except ProtocolError as exc:
            broker.metrics.refused(exc.error)
            raise
        return _json({"cancel": cancel})

    @app.get(f"{API_PREFIX}/events", response_model=None, responses={**_SSE_RESPONSE, **errors(400)})
    async def events(
        who: Caller,
        job: JobFilter = None,
        owner: OwnerQuery = None,
        last_event_query: LastEventIdQuery = None,
        last_event_id_header: LastEventIdHeader = None,
    ) -> Response:
        """The SSE stream of every job, or of the jobs named."""
        jobs = job_filter(job or ())
        resume = last_event_id(last_event_id_header, last_event_query)
        if owner is not None and owner != who.name and not who.admin:
            raise ProtocolError(404, "not_found", f"no user {owner!r}")
        chosen = None
        if not (who.admin and owner is None):
            chosen = tenants.get(owner or who.name, create=not who.admin)
            if chosen is None:
                raise ProtocolError(404, "not_found", f"no jobs of {owner!r}")
        too_many = refused(who)
        if too_many is not None:
            return too_many
        try:
            if chosen is None:
                sub: Subscription | MergedSubscription = tenants.subscribe_all(jobs, resume)
            else:
                sub = open_subscription(chosen, None, jobs or (), resume)
        except BaseException:
            limits.closed(who.name)
            raise
        return stream(who, sub)

    @app.get(
        f"{API_PREFIX}/jobs/{{job_id}}/events", response_model=None, responses={**_SSE_RESPONSE, **errors(400, 404)}
    )
    async def job_events(
        who: Caller,
        job_id: JobIdPath,
        owner: OwnerQuery = None,
        last_event_query: LastEventIdQuery = None,
        last_event_id_header: LastEventIdHeader = None,
    ) -> Response:
        """The SSE stream of one job; it ends after the job's terminal state was sent."""
        holder = holding(who, job_id, owner)  # 404 before the stream starts
        too_many = refused(who)
        if too_many is not None:
            return too_many
        try:
            sub = open_subscription(holder, job_id, (), last_event_id(last_event_id_header, last_event_query))
        except BaseException:
            limits.closed(who.name)
            raise
        return stream(who, sub)

    return app


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it is known to be over 1 MiB (before it is all read)."""
    too_large = ProtocolError(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _expire_leases(tenants: Tenants, lease: float) -> None:
    # As the extension does: a job whose publisher went silent past the lease becomes `lost`.
    period = lease_check_period(lease)
    while True:
        await asyncio.sleep(period)
        for broker in list(tenants):
            if not broker.leases_expired(lease):
                continue  # no turn of a shared store's lock for nothing
            with contextlib.suppress(StoreUnavailable):  # the store is away: the next round marks them
                async with write_turn(broker):
                    broker.expire_leases(lease)
