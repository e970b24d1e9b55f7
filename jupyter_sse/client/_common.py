"""What the sync and async clients share: the event type, errors, URLs and the follow state machine.

The I/O loops live in `_sync` and `_async`; everything that decides *what* to do (which URL, which headers,
whether an SSE message is an event, when a job stream is over, how long to wait before reconnecting) is here,
so the two clients cannot drift apart.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent

from ..protocol import API_PATH, TERMINAL_STATES

__all__ = [
    "RETRYABLE_ERRORS",
    "ClientError",
    "Event",
    "FollowState",
    "api_url",
    "auth_headers",
    "check_event_stream",
    "error_from_response",
    "follow_request",
    "job_path",
    "page_from_reply",
    "page_params",
    "retry_after",
    "should_retry",
    "stream_timeout",
]


# Reconnect delays: the server's `retry:` replaces the initial delay; each failed attempt doubles it.
INITIAL_DELAY = 0.25
MAX_DELAY = 10.0
# +-20 % so that many clients dropped at once (a server restart) do not come back in lockstep.
JITTER = 0.2

# A server at its cap on event streams answers 503 with `Retry-After`: waited for (never less; up to JITTER more,
# so that the clients it refused together do not come back together), but at most this long, so that a wrong or
# hostile header cannot park a client for hours.
MAX_RETRY_AFTER = 60.0

# What `follow` survives by reconnecting: the network, a silent peer, a connection cut mid-body. Not a bad URL
# scheme (`UnsupportedProtocol`) or our own protocol error, which would fail the same way forever.
RETRYABLE_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.NetworkError,
    httpx.TimeoutException,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)


@dataclass(frozen=True)
class Event:
    """One SSE event: `event` is `job`, `log`, `removed` or `reset`; `data` is the decoded JSON; `id` is opaque.

    `reset`: the server no longer has the history this client resumed from (it restarted with a memory store, or
    the id was too old): forget every job known so far; the current state follows.
    """

    event: str
    data: Any
    id: str


class ClientError(Exception):
    """The server answered with an error (`status` >= 400), or no server could be used (`status` 0).

    `error` is the machine-readable code of the protocol (`not_found`, `forbidden`, ...), `detail` what the
    server said about it.
    """

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        super().__init__(status, error, detail)

    def __str__(self) -> str:
        where = f"{self.status} " if self.status else ""
        if self.detail is None or self.detail == "":
            return f"{where}{self.error}"
        detail = self.detail if isinstance(self.detail, str) else json.dumps(self.detail)
        return f"{where}{self.error}: {detail}"


def api_url(url: str) -> str:
    """The API root for a Jupyter server's base URL (with or without its trailing slash)."""
    return url.rstrip("/") + "/" + API_PATH


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"token {token}"} if token else {}


def stream_timeout(timeout: float, read_timeout: float | None, heartbeat: float) -> httpx.Timeout:
    # The read timeout is what notices a dead connection: the server sends a comment every heartbeat, so a
    # read that waits several heartbeats means the peer (or a proxy in between) is gone.
    return httpx.Timeout(timeout, read=read_timeout if read_timeout is not None else 3 * heartbeat)


def job_path(job_id: str) -> str:
    # Quote everything: an id with `/` or `..` must reach the server as one (invalid) segment, not a new path.
    return "jobs/" + quote(job_id, safe="")


def follow_request(job_id: str | None, jobs: Sequence[str] | None) -> tuple[str, list[tuple[str, str]]]:
    """The path and query of the stream that `follow` reads."""
    if job_id is not None:
        return job_path(job_id) + "/events", []
    return "events", [("job", j) for j in jobs or ()]


def page_params(state: str | None, limit: int | None, cursor: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if state is not None:
        params["state"] = state
    if limit is not None:
        params["limit"] = str(limit)
    if cursor is not None:
        params["cursor"] = cursor
    return params


def page_from_reply(body: Any) -> dict[str, Any]:
    """`{"jobs", "total", "next"}` from a `GET jobs` reply; a server from before pages sent all jobs, no more."""
    jobs = body["jobs"]
    if not isinstance(jobs, list):
        raise TypeError(f"jobs is a {type(jobs).__name__}, not a list")
    total = body.get("total", len(jobs))
    following = body.get("next")
    return {"jobs": jobs, "total": total, "next": following if isinstance(following, str) and following else None}


def should_retry(response: httpx.Response) -> bool:
    """Whether a stream's error response is worth another attempt: the server (or its proxy) is down or
    restarting. Anything the client got wrong (403, 404, 400) will not get better by asking again."""
    return response.status_code >= 500


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a response's `Retry-After` asks to wait (delay-seconds or an HTTP date), at most
    `MAX_RETRY_AFTER`; None when it has none, or one that is not valid."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        seconds = float(value) if len(value) < 10 else MAX_RETRY_AFTER
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # not an HTTP date, which is always GMT
            return None
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def check_event_stream(response: httpx.Response) -> None:
    """Refuse a 200 that is not an event stream (a login page, a server without the extension)."""
    content_type = response.headers.get("content-type", "").partition(";")[0].strip()
    if content_type != "text/event-stream":
        raise ClientError(response.status_code, "not_event_stream", f"Content-Type is {content_type!r}")


def error_from_response(response: httpx.Response) -> ClientError:
    """A `ClientError` from an error response whose body has been read."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        return ClientError(response.status_code, body["error"], body.get("detail"))
    # Not one of ours: a proxy's error page, or a server without the extension.
    text = response.text.strip()
    return ClientError(response.status_code, response.reason_phrase or "http_error", text[:200] or None)


class FollowState:
    """The state of one `follow` across reconnects: last event id, reconnect delay, end of a job stream."""

    def __init__(
        self,
        job_id: str | None,
        last_event_id: str | None,
        give_up_after: float | None = None,
        *,
        jobs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.job_id = job_id
        self.last_event_id = last_event_id
        #: The latest snapshot of every job this follow was sent; cleared by `reset`, so no vanished job stays.
        self.jobs: dict[str, dict[str, Any]] = {} if jobs is None else jobs
        #: A job stream saw its job's terminal state: read what is left, but never reconnect.
        self.finished = False
        #: Why the last connection ended, for the log line of the reconnect.
        self.reason = ""
        #: The error that ended the last attempt, if it was one: what `follow` raises when it gives up.
        self.error: Exception | None = None
        #: Whether a stream was ever opened: only a server that never answered is given up on.
        self.reached = False
        self._give_up_after = give_up_after
        self._started = time.monotonic()
        self._initial_delay = INITIAL_DELAY
        self._failures = 0
        self._connected_at = 0.0
        self._got_event = False
        self._asked_to_wait: float | None = None

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}

    def refused(self, response: httpx.Response, error: ClientError) -> None:
        """A retryable error answer (5xx): remember why, and how long the server asked us to wait."""
        self.reason, self.error = str(error), error
        self._asked_to_wait = retry_after(response)

    def connected(self) -> None:
        self.reason = "the stream ended"
        self.error = None
        self.reached = True
        self._connected_at = time.monotonic()
        self._got_event = False

    def feed(self, sse: ServerSentEvent) -> Event | None:
        """Update the state from one parsed SSE message; return the event to yield, if it is one."""
        if sse.retry is not None and sse.retry >= 0:
            self._initial_delay = sse.retry / 1000
        if sse.id:
            self.last_event_id = sse.id
        # Per the SSE spec a message without data is not dispatched: the opening `retry:` block is one.
        if not sse.data:
            return None
        try:
            data: Any = json.loads(sse.data)
        except ValueError:
            data = sse.data
        self._got_event = True
        if sse.event == "reset":
            self.jobs.clear()
        elif sse.event == "job" and isinstance(data, Mapping) and isinstance(data.get("id"), str):
            self.jobs[data["id"]] = dict(data)
        elif sse.event == "removed" and isinstance(data, Mapping):
            self.jobs.pop(str(data.get("job")), None)
        if (
            self.job_id is not None
            and sse.event == "job"
            and isinstance(data, Mapping)
            and data.get("id") == self.job_id
            and data.get("state") in TERMINAL_STATES
        ):
            self.finished = True
        return Event(event=sse.event, data=data, id=sse.id)

    def retry_delay(self) -> float:
        """How long to wait before the next attempt; raises the last error instead when it is time to give up.

        A server that was reached once is waited for as long as it takes (a restart, a network change). One that
        never answered gets attempts until `give_up_after` seconds from the first (the last one at that time).
        """
        delay = self.next_delay()
        if self.reached or self._give_up_after is None:
            return delay
        left = self._started + self._give_up_after - time.monotonic()
        if left <= 0:
            raise self.error or ClientError(0, "unreachable", self.reason or None)
        return min(delay, left)

    def next_delay(self) -> float:
        """How long to wait before the next connection attempt, after the current one failed or ended."""
        # A connection that delivered events, or stayed up longer than the longest delay, was healthy: a
        # proxy's idle timeout or a server restart should not push the next attempt out to the maximum.
        max_delay = max(MAX_DELAY, self._initial_delay)
        if self._got_event or (self._connected_at and time.monotonic() - self._connected_at >= max_delay):
            self._failures = 0
        self._connected_at = 0.0
        self._got_event = False
        delay = min(self._initial_delay * 2.0**self._failures, max_delay)
        self._failures = min(self._failures + 1, 32)
        delay *= random.uniform(1 - JITTER, 1 + JITTER)
        asked, self._asked_to_wait = self._asked_to_wait, None
        if asked is not None:
            # What the server asked for, at the least: coming back sooner only gets refused again.
            delay = max(delay, asked * random.uniform(1, 1 + JITTER))
        return delay
