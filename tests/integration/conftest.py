"""A kernel started through the server's REST API, and helpers to wait on its jobs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_sse.client import AsyncClient
from tests.conftest import SSEServer


class KernelSession:
    """A kernel started with ``POST api/kernels``, and a client on its channels to run code."""

    def __init__(self, server: SSEServer, kernel_id: str, client: Any) -> None:
        self.server = server
        self.kernel_id = kernel_id
        self.client = client

    async def execute(self, code: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Run ``code``; return its iopub messages once the kernel is idle again."""
        msg_id = self.client.execute(code)
        messages = []
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return messages

    def start(self, code: str) -> str:
        """Send ``code`` without waiting for it."""
        return str(self.client.execute(code))


@pytest.fixture
def kernel(sse_server: SSEServer, jp_fetch: Any, jp_asyncio_loop: Any) -> Iterator[KernelSession]:
    # pytest-jupyter runs async tests but not async fixtures: drive the setup on its loop by hand.
    async def start() -> KernelSession:
        response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
        kernel_id = json.loads(response.body)["id"]
        client = sse_server.app.kernel_manager.get_kernel(kernel_id).client()
        client.start_channels()
        await client.wait_for_ready(timeout=60)
        return KernelSession(sse_server, kernel_id, client)

    session = jp_asyncio_loop.run_until_complete(start())
    yield session
    session.client.stop_channels()
    jp_asyncio_loop.run_until_complete(jp_fetch("api", "kernels", session.kernel_id, method="DELETE"))


def errors(messages: list[dict[str, Any]]) -> list[str]:
    return [f"{m['content']['ename']}: {m['content']['evalue']}" for m in messages if m["msg_type"] == "error"]


async def wait_for_job(client: AsyncClient, name: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in await client.list():
            if job["name"] == name:
                return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"no job named {name!r} appeared")
