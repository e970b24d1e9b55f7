"""A server whose notifications cannot work (a URL Apprise cannot use) still starts and serves, and says so when
a job asks to be told."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from tests.conftest import SSEServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_sse": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
        },
        "SSEExtension": {"store_kind": "memory", "notify_urls": ["nosuch://secret@host"], "notify_window": 0.0},
    }


async def test_a_bad_target_leaves_the_server_up_and_a_job_asking_is_logged(
    sse_server: SSEServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        async with httpx.AsyncClient(headers=sse_server.publish_auth) as client:
            for body in (
                {"jobs": [{"id": "a", "metadata": {"notify": True}}, {"id": "b", "metadata": {"notify": True}}]},
                {"jobs": [{"id": "a", "state": "succeeded"}, {"id": "b", "state": "succeeded"}]},
            ):
                assert (await client.post(sse_server.api + "updates", json=body)).status_code == 200
    (extension,) = sse_server.app.extension_manager.extension_apps["jupyter_sse"]
    assert extension.monitor.notifier is None
    asked = [r.getMessage() for r in caplog.records if "asked for a notification" in r.getMessage()]
    assert asked == [
        "jupyter-sse: job a asked for a notification, but notifications are off on this server "
        "(install jupyter-sse[notify] and set notify_urls)"
    ]  # once, not per job
    assert sse_server.broker.get("b").state == "succeeded"
