"""Protocol v1 over a real socket, against both servers: the Jupyter server extension and the standalone hub
(``api_server`` is parametrised over them, in tests/server/conftest.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests._sse import EventReader
from tests.conftest import SSEServer

pytestmark = pytest.mark.timeout(60)


def _update(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"jobs": [{"id": job_id, **fields}]}


async def _publish(server: SSEServer, body: Any, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(headers=server.publish_auth) as client:
        return await client.post(server.api + "updates", json=body, **kwargs)


def _seq(event_id: str) -> int:
    """The sequence number in an event id (``<epoch>.<seq>``); ids are opaque to clients, not to these tests."""
    epoch, dot, seq = event_id.partition(".")
    assert epoch.isalnum() and dot, event_id
    return int(seq)


async def test_extension_is_enabled_and_lists_no_jobs(api_server: SSEServer) -> None:
    async with httpx.AsyncClient(headers=api_server.auth) as client:
        response = await client.get(api_server.api + "jobs")
    assert response.status_code == 200
    assert response.json() == {"jobs": [], "total": 0, "next": None}


async def test_kernel_environment_points_at_this_server(sse_server: SSEServer) -> None:
    import os

    assert os.environ["JUPYTER_SSE_URL"] == sse_server.url
    assert os.environ["JUPYTER_SSE_TOKEN"] == sse_server.publish_token


async def test_publish_then_get_and_list(api_server: SSEServer) -> None:
    response = await _publish(api_server, _update("job-1", name="train", n=3, total=10, rate=2.0))
    assert response.status_code == 200
    assert response.json() == {"cancel": []}
    async with httpx.AsyncClient(headers=api_server.auth) as client:
        job = (await client.get(api_server.api + "jobs/job-1")).json()
        listed = (await client.get(api_server.api + "jobs", params={"state": "running"})).json()
        none_done = (await client.get(api_server.api + "jobs", params={"state": "succeeded"})).json()
    assert job["name"] == "train"
    assert job["state"] == "running"
    assert (job["n"], job["total"]) == (3, 10)
    assert job["eta"] == pytest.approx(3.5)
    assert job["owner"]
    assert [j["id"] for j in listed["jobs"]] == ["job-1"]
    assert none_done == {"jobs": [], "total": 0, "next": None}


async def test_list_is_newest_first(api_server: SSEServer) -> None:
    for i in range(3):
        await _publish(api_server, _update(f"j{i}"))
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(headers=api_server.auth) as client:
        jobs = (await client.get(api_server.api + "jobs")).json()["jobs"]
    assert [j["id"] for j in jobs] == ["j2", "j1", "j0"]


async def test_cancel_is_answered_to_the_publisher(api_server: SSEServer) -> None:
    await _publish(api_server, _update("c1", n=1))
    async with httpx.AsyncClient(headers=api_server.auth) as client:
        response = await client.post(api_server.api + "jobs/c1/cancel")
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    reply = await _publish(api_server, _update("c1", n=2))
    assert reply.json() == {"cancel": ["c1"]}
    await _publish(api_server, _update("c1", state="cancelled"))
    async with httpx.AsyncClient(headers=api_server.auth) as client:
        again = await client.post(api_server.api + "jobs/c1/cancel")
    assert again.status_code == 200
    assert again.json()["state"] == "cancelled"
    assert again.json()["cancel_requested"] is False


async def test_delete_refuses_running_and_forgets_finished(api_server: SSEServer) -> None:
    await _publish(api_server, _update("d1"))
    async with httpx.AsyncClient(headers=api_server.auth) as client:
        running = await client.delete(api_server.api + "jobs/d1")
        await _publish(api_server, _update("d1", state="succeeded"))
        done = await client.delete(api_server.api + "jobs/d1")
        gone = await client.get(api_server.api + "jobs/d1")
    assert running.status_code == 409
    assert running.json()["error"] == "job_running"
    assert done.status_code == 204
    assert gone.status_code == 404
    assert gone.json()["error"] == "not_found"


async def test_finished_job_cannot_be_revived(api_server: SSEServer) -> None:
    await _publish(api_server, _update("f1", state="failed", error={"type": "ValueError", "message": "x"}))
    response = await _publish(api_server, _update("f1", state="running"))
    assert response.status_code == 409
    assert response.json()["error"] == "job_finished"
    async with httpx.AsyncClient(headers=api_server.auth) as client:
        job = (await client.get(api_server.api + "jobs/f1")).json()
    assert job["state"] == "failed"
    assert job["error"] == {"type": "ValueError", "message": "x"}
    assert job["finished"] is not None


async def test_event_stream_headers_and_live_events(api_server: SSEServer) -> None:
    await _publish(api_server, _update("e1", n=0, total=3))
    async with (
        httpx.AsyncClient(headers=api_server.auth, timeout=10) as client,
        client.stream("GET", api_server.api + "events", headers={"Accept-Encoding": "gzip"}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        events = EventReader(response)
        (first,) = await events.take(1)
        assert first.event == "job"
        assert first.json()["n"] == 0
        for n in (1, 2, 3):
            await _publish(api_server, _update("e1", n=n))
            (event,) = await events.take(1)
            assert event.json()["n"] == n
            assert _seq(event.id) > _seq(first.id)


async def test_stream_sends_heartbeat_comments(api_server: SSEServer) -> None:
    async with (
        httpx.AsyncClient(headers=api_server.auth, timeout=10) as client,
        client.stream("GET", api_server.api + "events") as response,
    ):
        lines: list[str] = []

        async def until_ping() -> None:
            async for line in response.aiter_lines():
                lines.append(line)
                if line == ": ping":
                    return

        await asyncio.wait_for(until_ping(), 5)  # heartbeat_interval is 1 s in the tests
    assert lines[0].startswith("retry: ")


async def test_job_stream_ends_after_terminal_state(api_server: SSEServer) -> None:
    await _publish(api_server, _update("t1", n=1))
    async with (
        httpx.AsyncClient(headers=api_server.auth, timeout=10) as client,
        client.stream("GET", api_server.api + "jobs/t1/events") as response,
    ):
        events = EventReader(response)
        (first,) = await events.take(1)
        await _publish(api_server, {**_update("t1", state="succeeded", n=5), "logs": [{"job": "t1", "lines": ["bye"]}]})
        # The stream closes by itself: reading to the end returns, with nothing after the log line.
        rest = await events.rest()
    assert first.json()["state"] == "running"
    assert [e.event for e in rest] == ["job", "log"]
    assert rest[0].json()["state"] == "succeeded"
    assert rest[1].json()["lines"] == ["bye"]


async def test_unknown_job_stream_is_404(api_server: SSEServer) -> None:
    async with httpx.AsyncClient(headers=api_server.auth) as client:
        response = await client.get(api_server.api + "jobs/nope/events")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_resume_with_last_event_id_gets_latest_snapshot_and_missed_lines(api_server: SSEServer) -> None:
    await _publish(api_server, _update("r1", n=0))
    async with (
        httpx.AsyncClient(headers=api_server.auth, timeout=10) as client,
        client.stream("GET", api_server.api + "events", params={"job": "r1"}) as response,
    ):
        (seen,) = await EventReader(response).take(1)
    # Missed while disconnected: three updates and two log lines.
    for n in (1, 2, 3):
        await _publish(api_server, {**_update("r1", n=n), "logs": [{"job": "r1", "lines": [f"line {n}"]}]})
    async with (
        httpx.AsyncClient(headers=api_server.auth, timeout=10) as client,
        client.stream(
            "GET", api_server.api + "events", params={"job": "r1"}, headers={"Last-Event-ID": seen.id}
        ) as response,
    ):
        events = await EventReader(response).take(3)  # log [1, 2], job n=3, log [3]
    # Every missed line arrives, in order, and the job event is the latest state (no stale 1 and 2).
    lines = [line for e in events if e.event == "log" for line in e.json()["lines"]]
    snapshots = [e.json() for e in events if e.event == "job"]
    assert lines == ["line 1", "line 2", "line 3"]
    assert [s["n"] for s in snapshots] == [3]
    ids = [_seq(e.id) for e in events]
    assert ids == sorted(ids)


async def test_resume_reports_dropped_log_lines(api_server: SSEServer) -> None:
    await _publish(api_server, _update("r2"))
    async with (
        httpx.AsyncClient(headers=api_server.auth, timeout=10) as client,
        client.stream("GET", api_server.api + "events", params={"job": "r2"}) as response,
    ):
        (seen,) = await EventReader(response).take(1)
    # log_lines_kept is 50 in the tests: 80 lines while away drop 30 the client never saw.
    await _publish(api_server, {"logs": [{"job": "r2", "lines": [f"l{i}" for i in range(80)]}]})
    async with (
        httpx.AsyncClient(headers=api_server.auth, timeout=10) as client,
        client.stream("GET", api_server.api + "events", params={"job": "r2", "last_event_id": seen.id}) as response,
    ):
        (event,) = await EventReader(response).take(1)
    body = event.json()
    assert body["dropped"] is True
    assert body["lines"] == [f"l{i}" for i in range(30, 80)]


async def test_removed_event_reaches_subscribers(api_server: SSEServer) -> None:
    await _publish(api_server, _update("x1", state="succeeded"))
    async with (
        httpx.AsyncClient(headers=api_server.auth, timeout=10) as client,
        client.stream("GET", api_server.api + "events") as response,
    ):
        events = EventReader(response)
        await events.take(1)
        await client.delete(api_server.api + "jobs/x1")
        (event,) = await events.take(1)
    assert event.event == "removed"
    assert event.json() == {"job": "x1"}


async def test_disconnected_subscriber_is_unsubscribed(api_server: SSEServer) -> None:
    async with (
        httpx.AsyncClient(headers=api_server.auth, timeout=10) as client,
        client.stream("GET", api_server.api + "events") as response,
    ):
        await asyncio.wait_for(response.aiter_bytes().__anext__(), 5)
        assert api_server.broker.subscriber_count == 1
    # Found at the next heartbeat (1 s here) at the latest.
    for _ in range(50):
        if api_server.broker.subscriber_count == 0:
            break
        await asyncio.sleep(0.1)
    assert api_server.broker.subscriber_count == 0
