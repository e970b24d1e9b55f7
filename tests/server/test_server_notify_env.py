"""A server with no ``notify_urls``, configured as Apprise's own tools are: ``APPRISE_URLS`` and an Apprise config
file (``APPRISE_CONFIG_PATH``), both read when the server starts; real targets on loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._notify_targets import HTTPSink, SMTPSink
from tests.conftest import SSEServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def jp_server_config(
    smtp_sink: SMTPSink, http_sink: HTTPSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    config = tmp_path / "apprise.yml"
    config.write_text(f"urls:\n  - {smtp_sink.url()}\n")
    monkeypatch.setenv("APPRISE_CONFIG_PATH", str(config))
    monkeypatch.setenv("APPRISE_URLS", http_sink.url("env"))
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_sse": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
        },
        "SSEExtension": {"store_kind": "memory", "notify_window": 0.0, "notify_min_duration": 1.0},
    }


async def test_apprise_urls_and_config_file(sse_server: SSEServer, smtp_sink: SMTPSink, http_sink: HTTPSink) -> None:
    async with httpx.AsyncClient(headers=sse_server.publish_auth) as client:
        body = {"jobs": [{"id": "e1", "name": "env job", "state": "succeeded", "elapsed": 1.5}]}
        assert (await client.post(sse_server.api + "updates", json=body)).status_code == 200
    deadline = time.monotonic() + 15
    while not (smtp_sink.messages and http_sink.bodies):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert smtp_sink.messages[0].subject == "env job succeeded after 1.5 s"
    assert http_sink.bodies[0]["title"] == "env job succeeded after 1.5 s"
    assert http_sink.paths == ["/env"]
