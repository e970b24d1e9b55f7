"""Jobs whose kernel goes away turn lost; a cancel the loop cannot act on interrupts the kernel."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

from jupyter_sse.client import AsyncClient
from tests.conftest import SSEServer
from tests.integration.conftest import KernelSession, wait_for_job

pytestmark = pytest.mark.timeout(120)

LONG_LOOP = """import time
from jupyter_sse import progress
for i in progress(range(100000), desc='{name}'):
    time.sleep(0.01)
"""


async def _final(server: SSEServer, job_id: str, timeout: float = 10) -> dict[str, Any]:
    async with AsyncClient(server.url, server.token) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = await client.get(job_id)
            if job["state"] not in ("running", "pending"):
                return job
            await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


async def _running_job(server: SSEServer, name: str) -> dict[str, Any]:
    async with AsyncClient(server.url, server.token) as client:
        return await wait_for_job(client, name)


async def test_killed_kernel_turns_its_job_lost_within_5_seconds(sse_server: SSEServer, kernel: KernelSession) -> None:
    kernel.start(LONG_LOOP.format(name="killed"))
    job = await _running_job(sse_server, "killed")
    pid = sse_server.app.kernel_manager.get_kernel(kernel.kernel_id).provisioner.process.pid
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    final = await _final(sse_server, job["id"], timeout=5)
    assert final["state"] == "lost"
    assert "died" in final["message"] or "restarted" in final["message"]
    assert time.monotonic() - killed_at < 5


async def test_restarted_kernel_turns_its_job_lost(sse_server: SSEServer, kernel: KernelSession, jp_fetch: Any) -> None:
    kernel.start(LONG_LOOP.format(name="restarted"))
    job = await _running_job(sse_server, "restarted")
    await jp_fetch("api", "kernels", kernel.kernel_id, "restart", method="POST", body="{}")
    final = await _final(sse_server, job["id"], timeout=5)
    # A restart first asks the kernel to shut down, which interrupts the loop: when the kernel manages to report
    # that, the job ends cancelled; when it does not, the server marks it lost on hearing of the restart.
    assert (final["state"], final["message"]) in [("lost", "its kernel was restarted"), ("cancelled", "")], final


async def test_cancel_of_a_loop_stuck_in_a_call_interrupts_the_kernel(
    sse_server: SSEServer, kernel: KernelSession
) -> None:
    # The loop is inside a 60 s call when the cancel comes: it cannot reach its next step. After the grace
    # period (1 s in the tests) the server interrupts the kernel.
    kernel.start(
        "import time\nfrom jupyter_sse import progress\nfor i in progress(range(3), desc='stuck'):\n    time.sleep(60)"
    )
    job = await _running_job(sse_server, "stuck")
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        await client.cancel(job["id"])
    asked_at = time.monotonic()
    final = await _final(sse_server, job["id"], timeout=15)
    assert final["state"] == "cancelled"
    assert time.monotonic() - asked_at < 10
