"""A finished job refuses further updates from any publisher (409), through both real servers; the very same
final state sent again (a publisher whose earlier answer was lost) is accepted and changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import SSEServer

pytestmark = pytest.mark.timeout(60)


async def _post(client: httpx.AsyncClient, server: SSEServer, body: dict[str, Any]) -> httpx.Response:
    return await client.post(server.api + "updates", json=body, headers=server.publish_auth)


async def _job(client: httpx.AsyncClient, server: SSEServer, job_id: str) -> Any:
    response = await client.get(server.api + f"jobs/{job_id}", headers=server.auth)
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("final", ["succeeded", "failed", "cancelled"])
async def test_a_finished_job_refuses_updates_with_409(api_server: SSEServer, final: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await _post(client, api_server, {"jobs": [{"id": "f", "n": 3, "state": final}]})).status_code == 200
        before = await _job(client, api_server, "f")
        for update in ({"id": "f", "n": 4}, {"id": "f", "state": "running"}, {"id": "f", "message": "later"}):
            refused = await _post(client, api_server, {"jobs": [{"id": "other"}, update]})
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"] == "job_finished"
        assert await _job(client, api_server, "f") == before
        gone = await client.get(api_server.api + "jobs/other", headers=api_server.auth)
        assert gone.status_code == 404  # refused whole


async def test_the_same_final_state_sent_again_is_not_a_conflict(api_server: SSEServer) -> None:
    batch = {
        "jobs": [{"id": "f", "n": 3, "state": "failed", "error": {"type": "E", "message": "m"}}, {"id": "r", "n": 1}],
        "logs": [{"job": "f", "lines": ["traceback"]}],
    }
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await _post(client, api_server, batch)).status_code == 200
        before = await _job(client, api_server, "f")
        batch["jobs"][1]["n"] = 2
        again = await _post(client, api_server, batch)
        assert again.status_code == 200, again.text
        assert await _job(client, api_server, "f") == before
        assert (await _job(client, api_server, "r"))["n"] == 2
        async with client.stream("GET", api_server.api + "jobs/f/events", headers=api_server.auth) as stream:
            body = b"".join([chunk async for chunk in stream.aiter_bytes()])
        assert body.count(b"traceback") == 1  # the lines of the batch sent again were not stored twice
