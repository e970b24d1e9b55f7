"""Reading event streams in tests with httpx-sse, the parser the Python client uses: one parser for every test.

Tests that look at the bytes themselves (framing, comments, what a client that does not read leaves queued) read
the raw stream instead; everything that wants events reads them here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent, connect_sse

__all__ = ["EventReader", "SyncEventReader", "is_event", "read_until"]


def is_event(sse: ServerSentEvent) -> bool:
    """Whether the spec dispatches it. httpx-sse also hands out a blank line's "event" with no data (after the
    stream's opening `retry:` and comment, and after a comment once an id was seen); the client skips those too."""
    return sse.data != "" or sse.event != "message"


class EventReader:
    """The events of one open stream, read in turns: a body streams once, so one iterator serves every read.
    Keep the reader as long as the stream is to stay open: when it is dropped, its iterator closes the response."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.status_code
        self._events = self._only_events(EventSource(response).aiter_sse())

    @staticmethod
    async def _only_events(source: AsyncIterator[ServerSentEvent]) -> AsyncIterator[ServerSentEvent]:
        async for sse in source:
            if is_event(sse):
                yield sse

    async def take(self, count: int, timeout: float = 10.0) -> list[ServerSentEvent]:
        """The next ``count`` events; fails if they do not all come within ``timeout`` or the stream ends first."""

        async def read() -> list[ServerSentEvent]:
            return [await anext(self._events) for _ in range(count)]

        return await asyncio.wait_for(read(), timeout)

    async def until(self, condition: Callable[[ServerSentEvent], bool], timeout: float = 10.0) -> list[ServerSentEvent]:
        """The events up to and with the first that meets ``condition``."""

        async def read() -> list[ServerSentEvent]:
            seen = []
            async for sse in self._events:
                seen.append(sse)
                if condition(sse):
                    return seen
            raise AssertionError(f"the stream ended before the condition: {seen}")

        return await asyncio.wait_for(read(), timeout)

    async def rest(self, timeout: float = 10.0) -> list[ServerSentEvent]:
        """Every event until the stream ends."""

        async def read() -> list[ServerSentEvent]:
            return [sse async for sse in self._events]

        return await asyncio.wait_for(read(), timeout)


class SyncEventReader:
    """`EventReader` for a blocking `httpx` stream (the client's read timeout bounds each wait)."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.status_code
        self._events: Iterator[ServerSentEvent] = (sse for sse in EventSource(response).iter_sse() if is_event(sse))

    def until(self, condition: Callable[[ServerSentEvent], bool]) -> list[ServerSentEvent]:
        seen = []
        for sse in self._events:
            seen.append(sse)
            if condition(sse):
                return seen
        raise AssertionError(f"the stream ended before the condition: {seen}")


def read_until(
    client: httpx.Client, path: str, until: Callable[[list[ServerSentEvent]], bool], **kwargs: Any
) -> list[ServerSentEvent]:
    """Open a stream, read events until ``until(seen)``, close it; a read timeout of ``client`` fails the test."""
    seen: list[ServerSentEvent] = []
    with connect_sse(client, "GET", path, **kwargs) as source:
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            if is_event(sse):
                seen.append(sse)
                if until(seen):
                    return seen
    raise AssertionError(f"the stream ended before the condition: {seen}")
