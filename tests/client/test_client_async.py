"""The asyncio client against the scripted SSE server (run with asyncio.run: no async test plugin needed)."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing

import pytest

from jupyter_sse.client import AsyncClient, ClientError, Event


def test_requests_and_errors(scripted_server):
    s = scripted_server
    a = s.job("a")
    s.route("GET", "jobs", s.json(200, {"jobs": [a]}))
    s.route("GET", "jobs/a", s.json(200, a))
    s.route("POST", "jobs/a/cancel", s.json(202, {**a, "cancel_requested": True}))
    s.route("DELETE", "jobs/a", s.json(409, {"error": "job_running", "detail": "running"}))

    async def main():
        async with AsyncClient(s.url, s.token) as c:
            assert await c.list(state="running") == [a]
            assert await c.get("a") == a
            assert (await c.cancel("a"))["cancel_requested"] is True
            with pytest.raises(ClientError) as info:
                await c.delete("a")
            assert (info.value.status, info.value.error) == (409, "job_running")

    asyncio.run(main())
    assert s.requests[0].query == {"state": ["running"], "limit": ["1000"]}
    assert {r.headers["authorization"] for r in s.requests} == {f"token {s.token}"}


def test_follow_reconnects_with_last_event_id_and_ends_after_terminal_state(scripted_server):
    s = scripted_server
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(s.retry(20), s.event("job", s.job("a", n=1), id="1"), s.comment(), s.DROP),
        s.stream(s.event("log", {"job": "a", "lines": ["x"]}, id="2"), 10.0),  # then silence
        s.stream(s.event("job", s.job("a", "succeeded", n=10), id="3"), 10.0),  # left open
    )

    async def main():
        async with AsyncClient(s.url, s.token, read_timeout=0.3) as c:
            return [e async for e in c.follow("a")]

    start = time.monotonic()
    events = asyncio.run(main())
    assert time.monotonic() - start < 2
    assert [(e.event, e.id) for e in events] == [("job", "1"), ("log", "2"), ("job", "3")]
    assert events[1] == Event("log", {"job": "a", "lines": ["x"]}, "2")
    assert [r.headers.get("last-event-id") for r in s.requests] == [None, "1", "2"]


def test_a_4xx_on_connect_raises_at_once(scripted_server):
    s = scripted_server

    async def main():
        async with AsyncClient(s.url, "wrong") as c:
            async for _ in c.follow():
                pass

    with pytest.raises(ClientError) as info:
        asyncio.run(main())
    assert info.value.status == 403
    assert len(s.requests) == 1


def test_follow_all_until_the_caller_stops(scripted_server):
    s = scripted_server
    s.route(
        "GET",
        "events",
        s.stream(s.event("job", s.job("a", "succeeded"), id="1"), s.event("job", s.job("b"), id="2"), 10.0),
    )

    async def main():
        async with AsyncClient(s.url, s.token) as c, aclosing(c.follow(jobs=["a", "b"])) as stream:
            seen = []
            async for event in stream:
                seen.append(event.id)
                if len(seen) == 2:
                    break
            return seen

    assert asyncio.run(main()) == ["1", "2"]
    assert s.requests[0].query == {"job": ["a", "b"]}


def test_backoff_waits_without_blocking_the_loop(scripted_server):
    s = scripted_server
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(s.retry(100), s.DROP),
        s.stream(s.event("job", s.job("a", "lost"), id="1")),
    )
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main():
        task = asyncio.create_task(ticker())
        async with AsyncClient(s.url, s.token) as c:
            events = [e async for e in c.follow("a")]
        task.cancel()
        return events

    assert [e.data["state"] for e in asyncio.run(main())] == ["lost"]
    assert ticks >= 5


def test_follow_gives_up_on_a_server_never_reached_and_not_on_one_reached_once(scripted_server):
    import httpx

    from tests._servers import free_port

    s = scripted_server
    s.route(
        "GET",
        "jobs/a/events",
        s.stream(s.retry(20), s.event("job", s.job("a", n=1), id="1"), s.DROP),
        *[s.json(502, {"error": "bad_gateway"})] * 5,
        s.stream(s.event("job", s.job("a", "succeeded", n=2), id="2")),
    )

    async def main():
        async with AsyncClient(f"http://127.0.0.1:{free_port()}/", "t") as dead:
            start = time.monotonic()
            with pytest.raises(httpx.ConnectError):
                async for _ in dead.follow("a", give_up_after=0.5):
                    pass
            took = time.monotonic() - start
        async with AsyncClient(s.url, s.token) as c:
            events = [e async for e in c.follow("a", give_up_after=0.1)]
        return took, events

    took, events = asyncio.run(main())
    assert 0.5 <= took < 3, took
    assert [e.id for e in events] == ["1", "2"]
    assert len(s.requests_to("jobs/a/events")) == 7
