"""The extension as a jupyter_server ExtensionApp: its settings reach the handlers the framework's way, and its
background tasks start where jupyter_server starts extensions, not while the server is being set up."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from traitlets.config import Config

from tests.conftest import SSEServer


def test_the_framework_keeps_its_config_setting_and_the_handlers_read_it(sse_server: SSEServer) -> None:
    settings = sse_server.app.web_app.settings
    extension = settings["jupyter_sse"]
    config = settings["jupyter_sse_config"]
    # jupyter_server's own `<name>_config`: every setting of the extension, as configured (tests/conftest.py)
    assert isinstance(config, Config)
    assert config["heartbeat_interval"] == extension.heartbeat_interval == 1.0
    assert config["log_lines_kept"] == extension.log_lines_kept == 50
    assert config["retry_ms"] == extension.retry_ms


async def test_the_stream_says_the_configured_retry(sse_server: SSEServer) -> None:
    retry_ms = sse_server.app.web_app.settings["jupyter_sse"].retry_ms
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", sse_server.api + "events", headers=sse_server.auth) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            assert line == f"retry: {retry_ms}"
            break


def test_background_tasks_start_when_jupyter_server_starts_its_extensions(
    jp_configurable_serverapp: Any,
    jp_server_config: dict[str, Any],
    jp_argv: list[str],
    jp_asyncio_loop: asyncio.AbstractEventLoop,
) -> None:
    # The harness sets the server up inside a running loop, where starting tasks would have been possible.
    app = jp_configurable_serverapp(config=jp_server_config, argv=jp_argv)
    extension = app.web_app.settings["jupyter_sse"]
    assert extension._tasks == []
    jp_asyncio_loop.run_until_complete(app.extension_manager.start_all_extensions())
    tasks = list(extension._tasks)
    assert len(tasks) == 4
    assert not any(task.done() for task in tasks)
    # and they end with the server
    jp_asyncio_loop.run_until_complete(app.extension_manager.stop_all_extensions())
    assert all(task.done() for task in tasks)
    assert extension._tasks == []
