"""The blocking client."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator, Sequence
from types import TracebackType
from typing import Any

import httpx
from httpx_sse import connect_sse

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

__all__ = ["Client"]

_log = logging.getLogger("jupyter_sse.client")

# `Client.list` shadows the builtin in the class body.
_JobList = list[dict[str, Any]]


class Client:
    """A blocking client of a Jupyter server's jupyter-sse API.

    `url` is the server's base URL (`http://127.0.0.1:8888/`, `http://hub/user/alice/`), `token` the
    server's token. `timeout` bounds every request and the connection of a stream; `read_timeout` (default
    3 heartbeats) is how long a stream may stay silent before `follow` drops it and reconnects.

    HTTP errors raise `ClientError`; a server that cannot be reached raises `httpx.TransportError` (from
    `list`, `get`, `cancel`, `delete`; `follow` reconnects instead).
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
        self._http = httpx.Client(base_url=api_url(url), headers=auth_headers(token), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise error_from_response(response)
        return response

    def list(self, state: str | None = None, *, limit: int | None = None) -> _JobList:
        """The jobs, newest first, read page by page: all of them, or the `limit` newest; `state` keeps the jobs in
        that state."""
        jobs: _JobList = []
        cursor: str | None = None
        while limit is None or len(jobs) < limit:
            size = MAX_PAGE_SIZE if limit is None else min(MAX_PAGE_SIZE, limit - len(jobs))
            page = self.page(state, limit=size, cursor=cursor)
            jobs.extend(page["jobs"])
            cursor = page["next"]
            if cursor is None:
                break
        return jobs

    def page(self, state: str | None = None, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """One page of `GET jobs`: `{"jobs": [...], "total": N, "next": cursor or None}`; pass `next` as `cursor`
        for the following page. `limit`: jobs a page (the server's default: 100; at most 1000)."""
        return page_from_reply(self._request("GET", "jobs", params=page_params(state, limit, cursor)).json())

    def get(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("GET", job_path(job_id)).json()
        return job

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask for the job's cancellation; returns the job (`cancel_requested` is true until it ends)."""
        job: dict[str, Any] = self._request("POST", job_path(job_id) + "/cancel").json()
        return job

    def delete(self, job_id: str) -> None:
        """Forget a finished job (`ClientError` 409 `job_running` while it runs)."""
        self._request("DELETE", job_path(job_id))

    def follow(
        self,
        job_id: str | None = None,
        *,
        jobs: Sequence[str] | None = None,
        last_event_id: str | None = None,
        give_up_after: float | None = None,
    ) -> Generator[Event, None, None]:
        """Yield the events of one job until it ends, or of every job (or of `jobs`) until the caller stops.

        Reconnects after network errors, silences longer than the read timeout and 5xx answers, with
        exponential backoff, resuming with `Last-Event-ID`; after a 503 with `Retry-After` (a server at its cap on
        event streams) it waits at least that long (at most 60 s). A 4xx answer raises `ClientError` at once.
        `give_up_after` (seconds, default: never) bounds how long a server that has not answered yet is tried:
        then the last error is raised (`httpx.TransportError`, or `ClientError` for a 5xx). Once a stream was
        opened, `follow` reconnects for as long as it takes.
        To stop early and close the connection at once, `close()` the generator (or `contextlib.closing`).
        """
        state = FollowState(job_id, last_event_id, give_up_after, jobs=self.jobs)
        path, params = follow_request(job_id, jobs)
        while True:
            try:
                yield from self._read_stream(state, path, params)
            except RETRYABLE_ERRORS as exc:
                state.reason = f"{type(exc).__name__}: {exc}"
                state.error = exc
            if state.finished:
                # The job's end was seen: whatever happened to the connection after it does not matter.
                return
            delay = state.retry_delay()
            _log.info("%s: %s; reconnecting in %.2fs", path, state.reason, delay)
            time.sleep(delay)

    def _read_stream(self, state: FollowState, path: str, params: Sequence[tuple[str, str]]) -> Iterator[Event]:
        """One connection: yield its events; `state.reason` says why it ended, if it is worth a retry."""
        headers = state.headers()
        with connect_sse(
            self._http, "GET", path, params=params, headers=headers, timeout=self._stream_timeout
        ) as source:
            response = source.response
            if response.status_code != 200:
                response.read()
                error = error_from_response(response)
                if not should_retry(response):
                    raise error
                state.refused(response, error)
                return
            check_event_stream(response)
            state.connected()
            for sse in source.iter_sse():
                event = state.feed(sse)
                if event is not None:
                    yield event
