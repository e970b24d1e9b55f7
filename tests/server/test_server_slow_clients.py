"""Slow and broken subscribers, on raw sockets against the real server: they cost bounded memory, never delay
the others, and one that stops reading is dropped after the send timeout."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import struct
import time
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent

from jupyter_sse.server.handlers import EventsHandler
from tests._sse import EventReader
from tests.conftest import SSEServer, open_raw_stream

pytestmark = pytest.mark.timeout(90)

# ruff: noqa: ASYNC110 - polling the broker's state from the test is the point

SEND_TIMEOUT = 6.0


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    jp_server_config["SSEExtension"]["send_timeout"] = SEND_TIMEOUT
    return jp_server_config


def _bytes_waiting_per_stream() -> list[int]:
    """What the server holds, unsent, for each open event stream (tornado's write buffer of its connection)."""
    waiting = []
    for obj in gc.get_objects():
        if isinstance(obj, EventsHandler) and obj._subscription is not None and not obj._subscription.done:
            stream = getattr(obj.request.connection, "stream", None)
            if stream is not None and stream._write_buffer is not None:
                waiting.append(len(stream._write_buffer))
    return waiting


async def _raw_subscriber(server: SSEServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An SSE request on a bare socket with a tiny receive buffer, so that not reading backs up at once."""
    reader, writer, _ = await open_raw_stream(server, receive_buffer=4096)
    return reader, writer


async def _publish_big_updates(server: SSEServer, rounds: int, jobs: int = 40, first: int = 0) -> float:
    """Updates with 4 KB messages: a few rounds fill any socket buffer of a subscriber that does not read."""
    async with httpx.AsyncClient(headers=server.publish_auth) as client:
        for r in range(first, first + rounds):
            body = {"jobs": [{"id": f"big{j}", "n": r, "message": f"{r:04d}" + "x" * 4000} for j in range(jobs)]}
            response = await client.post(server.api + "updates", json=body)
            assert response.status_code == 200
            await asyncio.sleep(0.01)
    return time.monotonic()


async def test_stalled_and_slow_readers_are_dropped_without_delaying_a_live_one(sse_server: SSEServer) -> None:
    stalled = await _raw_subscriber(sse_server)  # reads nothing more
    slow = await _raw_subscriber(sse_server)  # one byte a second

    async def read_slowly() -> None:
        reader = slow[0]
        while await reader.read(1):
            await asyncio.sleep(1)

    slow_task = asyncio.ensure_future(read_slowly())
    latencies: list[float] = []
    async with (
        httpx.AsyncClient(headers=sse_server.auth, timeout=20) as client,
        client.stream("GET", sse_server.api + "events") as live,
    ):
        assert sse_server.broker.subscriber_count == 3
        events = EventReader(live)

        def last_round(event: ServerSentEvent) -> bool:
            return event.event == "job" and event.json()["n"] == 4

        # 60 rounds of 40 x 4 KB snapshots: queued per subscriber that would be about 10 MB each.
        for _ in range(12):
            sent = await _publish_big_updates(sse_server, rounds=5)
            await events.until(last_round, timeout=5)
            latencies.append(time.monotonic() - sent)
        waiting = _bytes_waiting_per_stream()
        # The live reader was never held up by the two that do not keep up...
        assert max(latencies) < 1.0, latencies
        # ...and the two stuck ones hold at most about one batch each (conflation): 40 snapshots of 4 KB, not
        # the 10 MB backlog that a queue per subscriber would hold.
        assert len(waiting) == 3
        assert max(waiting) < 400_000, waiting
        deadline = time.monotonic() + SEND_TIMEOUT + 10
        round_no = 100
        while sse_server.broker.subscriber_count > 1 and time.monotonic() < deadline:
            round_no += 1
            await _publish_big_updates(sse_server, rounds=1, first=round_no)
            # the live one goes on reading: one that stopped too would be dropped as stalled after the send timeout
            await events.until(lambda e, n=round_no: e.event == "job" and e.json()["n"] == n, timeout=5)
            await asyncio.sleep(0.2)
        assert sse_server.broker.subscriber_count == 1, "the stalled subscribers were not dropped"
    slow_task.cancel()
    for _, writer in (stalled, slow):
        writer.close()


async def test_a_subscriber_that_disconnects_mid_event_is_cleaned_up(sse_server: SSEServer) -> None:
    await _publish_big_updates(sse_server, rounds=1, jobs=5)
    reader, writer = await _raw_subscriber(sse_server)
    await reader.read(100)  # part of the first event
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    writer.close()
    async with httpx.AsyncClient(headers=sse_server.auth, timeout=10) as client:
        await _publish_big_updates(sse_server, rounds=2, jobs=5)
        deadline = time.monotonic() + 5
        while sse_server.broker.subscriber_count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert sse_server.broker.subscriber_count == 0
        # And the server keeps serving.
        jobs = (await client.get(sse_server.api + "jobs")).json()["jobs"]
    assert {job["id"] for job in jobs} == {f"big{j}" for j in range(5)}
    assert json.dumps(jobs)
