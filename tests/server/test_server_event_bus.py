"""Job state changes on Jupyter's event bus: a client of ``/api/events/subscribe`` (the websocket JupyterLab's
EventManager uses, with the server's auth) sees a job start and end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from jupyter_sse.server._events import JOB_EVENT_SCHEMA_ID
from tests.conftest import SSEServer

pytestmark = pytest.mark.timeout(60)


def _ws_url(server: SSEServer) -> str:
    return server.url.replace("http://", "ws://", 1) + "api/events/subscribe"


async def _next_job_event(ws: WebSocketClientConnection) -> dict[str, Any]:
    while True:
        raw = await asyncio.wait_for(ws.read_message(), 10)
        assert raw is not None, "the event socket closed"
        event: dict[str, Any] = json.loads(raw)
        if event.get("schema_id") == JOB_EVENT_SCHEMA_ID:
            return event


async def test_a_subscriber_sees_a_job_start_and_end(sse_server: SSEServer) -> None:
    ws = await websocket_connect(HTTPRequest(_ws_url(sse_server), headers=sse_server.auth))
    try:
        async with httpx.AsyncClient(headers=sse_server.publish_auth) as client:

            async def post(*jobs: dict[str, Any]) -> None:
                response = await client.post(sse_server.api + "updates", json={"jobs": list(jobs)})
                assert response.status_code == 200, response.text

            await post({"id": "bus1", "name": "fit", "total": 3, "path": "nb.ipynb", "cell_id": "c1"})
            started = await _next_job_event(ws)
            for n in (1, 2, 3):  # progress alone is no state change: nothing on the bus
                await post({"id": "bus1", "n": n})
            await post({"id": "bus1", "state": "failed", "error": {"type": "KeyError", "message": "'x'"}})
            ended = await _next_job_event(ws)
    finally:
        ws.close()
    assert {k: started[k] for k in ("job_id", "name", "state", "previous_state", "path", "cell_id", "total")} == {
        "job_id": "bus1",
        "name": "fit",
        "state": "running",
        "previous_state": None,
        "path": "nb.ipynb",
        "cell_id": "c1",
        "total": 3,
    }
    assert started["schema_id"] == JOB_EVENT_SCHEMA_ID
    assert {k: ended[k] for k in ("job_id", "state", "previous_state", "n", "error_type", "error_message")} == {
        "job_id": "bus1",
        "state": "failed",
        "previous_state": "running",
        "n": 3,
        "error_type": "KeyError",
        "error_message": "'x'",
    }


async def test_the_event_socket_needs_the_servers_auth(sse_server: SSEServer) -> None:
    with pytest.raises(HTTPClientError) as info:
        await websocket_connect(HTTPRequest(_ws_url(sse_server)))
    assert info.value.code in (302, 403)  # sent to the login page, or refused: never subscribed
