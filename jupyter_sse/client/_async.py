"""The asyncio client: the same API as `Client`, with coroutines and an async iterator for `follow`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from ..protocol import MAX_PAGE_SIZE
from ._common import (
    RETRYABLE_ERRORS,
    Event,
    FollowState,
    api_url,
    auth_headers,
    check_event_stream,
    error_from_response,
    follow_request,
    job_path,
    page_from_reply,
    page_params,
    should_retry,
    stream_timeout,
)

__all__ = ["AsyncClient"]

_log = logging.getLogger("jupyter_sse.client")

# `AsyncClient.list` shadows the builtin in the class body.
_JobList = list[dict[str, Any]]


class AsyncClient:
    """The asyncio twin of `Client` (same arguments, same errors).

    `follow` is an async generator: to stop early and close its connection at once, wrap it in
    `contextlib.aclosing(client.follow(...))`.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        read_timeout: float | None = None,
        heartbeat: float = 15.0,
    ) -> None:
        self.url = url
        self._stream_timeout = stream_timeout(timeout, read_timeout, heartbeat)
        #: The latest snapshot of every job `follow` was sent (all follows of this client), without the removed
        #: ones; cleared when the server sends `reset`, so jobs that vanished with a server's history go too.
        self.jobs: dict[str, dict[str, Any]] = {}
        self._http = httpx.AsyncClient(base_url=api_url(url), headers=auth_headers(token), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # `close` as in `Client`, awaited.
    close = aclose

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self._http.request(method, path, **kwargs)
        if response.is_error:
            raise error_from_response(response)
        return response

    async def list(self, state: str | None = None, *, limit: int | None = None) -> _JobList:
        """The jobs, newest first, read page by page: all of them, or the `limit` newest; `state` keeps the jobs in
        that state."""
        jobs: _JobList = []
        cursor: str | None = None
        while limit is None or len(jobs) < limit:
            size = MAX_PAGE_SIZE if limit is None else min(MAX_PAGE_SIZE, limit - len(jobs))
            page = await self.page(state, limit=size, cursor=cursor)
            jobs.extend(page["jobs"])
            cursor = page["next"]
            if cursor is None:
                break
        return jobs

    async def page(
        self, state: str | None = None, *, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of `GET jobs`: `{"jobs": [...], "total": N, "next": cursor or None}`; pass `next` as `cursor`
        for the following page. `limit`: jobs a page (the server's default: 100; at most 1000)."""
        reply = await self._request("GET", "jobs", params=page_params(state, limit, cursor))
        return page_from_reply(reply.json())

    async def get(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = (await self._request("GET", job_path(job_id))).json()
        return job

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask for the job's cancellation; returns the job (`cancel_requested` is true until it ends)."""
        job: dict[str, Any] = (await self._request("POST", job_path(job_id) + "/cancel")).json()
        return job

    async def delete(self, job_id: str) -> None:
        """Forget a finished job (`ClientError` 409 `job_running` while it runs)."""
        await self._request("DELETE", job_path(job_id))

    async def follow(
        self,
        job_id: str | None = None,
        *,
        jobs: Sequence[str] | None = None,
        last_event_id: str | None = None,
        give_up_after: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Yield the events of one job until it ends, or of every job (or of `jobs`) until the caller stops.

        Reconnects like `Client.follow` (and gives up on a server never reached after `give_up_after` seconds,
        as it does); a 4xx answer raises `ClientError` at once.
        """
        state = FollowState(job_id, last_event_id, give_up_after, jobs=self.jobs)
        path, params = follow_request(job_id, jobs)
        while True:
            try:
                # aclosing: when our caller stops, the connection must close now, not when the loop
                # gets round to finalizing an abandoned generator.
                async with aclosing(self._read_stream(state, path, params)) as stream:
                    async for event in stream:
                        yield event
            except RETRYABLE_ERRORS as exc:
                state.reason = f"{type(exc).__name__}: {exc}"
                state.error = exc
            if state.finished:
                # The job's end was seen: whatever happened to the connection after it does not matter.
                return
            delay = state.retry_delay()
            _log.info("%s: %s; reconnecting in %.2fs", path, state.reason, delay)
            await asyncio.sleep(delay)

    async def _read_stream(
        self, state: FollowState, path: str, params: Sequence[tuple[str, str]]
    ) -> AsyncGenerator[Event, None]:
        """One connection: yield its events; `state.reason` says why it ended, if it is worth a retry."""
        headers = state.headers()
        timeout = self._stream_timeout
        async with aconnect_sse(self._http, "GET", path, params=params, headers=headers, timeout=timeout) as source:
            response = source.response
            if response.status_code != 200:
                await response.aread()
                error = error_from_response(response)
                if not should_retry(response):
                    raise error
                state.refused(response, error)
                return
            check_event_stream(response)
            state.connected()
            async for sse in source.aiter_sse():
                event = state.feed(sse)
                if event is not None:
                    yield event
