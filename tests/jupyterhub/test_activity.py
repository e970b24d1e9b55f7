"""The server's own activity tracking with jupyter-sse (no hub needed): jobs count as configured, streams never.

jupyter_server's ``last_activity()`` (what JupyterHub's single-user server reports to the hub) takes the newest
``settings[..._last_activity]``; ``APIHandler.finish`` sets ``api_last_activity``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from jupyter_sse.server.activity import ACTIVITY_KEY, ActivityTracker
from tests._wait import until
from tests.conftest import SSEServer


@pytest.fixture(params=[True, False], ids=["jobs-are-activity", "jobs-are-not-activity"])
def jp_server_config(jp_server_config: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    config = {**jp_server_config, "SSEExtension": dict(jp_server_config["SSEExtension"])}
    config["SSEExtension"]["running_jobs_are_activity"] = request.param
    return config


def tracker(server: SSEServer) -> ActivityTracker:
    extension = server.app.extension_manager.extension_points["jupyter_sse"].app
    assert isinstance(extension.activity, ActivityTracker)
    return extension.activity


async def test_a_running_job_is_activity_as_configured(sse_server: SSEServer) -> None:
    settings = sse_server.app.web_app.settings
    activity = tracker(sse_server)
    async with httpx.AsyncClient(base_url=sse_server.api, timeout=10) as client:
        response = await client.post("updates", json={"jobs": [{"id": "long"}]}, headers=sse_server.publish_auth)
        assert response.status_code == 200
        assert "api_last_activity" not in settings, "a report counted as API activity by itself"
        before = sse_server.app.web_app.last_activity()
        await asyncio.sleep(0.01)
        activity.refresh()
        if activity.enabled:
            assert settings[ACTIVITY_KEY] > before
            assert sse_server.app.web_app.last_activity() == settings[ACTIVITY_KEY]
        else:
            assert ACTIVITY_KEY not in settings
            assert sse_server.app.web_app.last_activity() == before
        # Finished: no more refreshes.
        done = {"jobs": [{"id": "long", "state": "succeeded"}]}
        assert (await client.post("updates", json=done, headers=sse_server.publish_auth)).status_code == 200
        marked = settings.get(ACTIVITY_KEY)
        activity.refresh()
        assert settings.get(ACTIVITY_KEY) == marked


async def test_an_open_stream_is_not_activity(sse_server: SSEServer) -> None:
    settings = sse_server.app.web_app.settings
    async with httpx.AsyncClient(base_url=sse_server.api, headers=sse_server.auth, timeout=10) as client:
        async with client.stream("GET", "events") as response:
            assert response.status_code == 200
            pings = 0
            async for line in response.aiter_lines():
                pings += line == ": ping"
                if pings == 2:  # two heartbeats (1 s apart in the tests' config)
                    break
        # the server notices the close and finishes the handler
        await until(lambda: sse_server.broker.subscriber_count == 0, what="the stream's handler to finish")
        tracker(sse_server).refresh()
        assert "api_last_activity" not in settings
        assert ACTIVITY_KEY not in settings
        # An ordinary request is activity, as for the rest of the Jupyter API.
        assert (await client.get("jobs")).status_code == 200
        assert "api_last_activity" in settings
