"""End to end: ``submit`` in a real kernel started through the server's REST API; the server sees the background
job, other cells run while it does, and a cancel through the API stops it."""

from __future__ import annotations

import time
from typing import Any

import pytest

from jupyter_sse.client import AsyncClient
from tests.conftest import SSEServer
from tests.integration.conftest import KernelSession, errors, wait_for_job

pytestmark = pytest.mark.timeout(120)

JOB_MIME = "application/vnd.jupyter-sse.job+json"


def _outputs(messages: list[dict[str, Any]], msg_type: str) -> list[dict[str, Any]]:
    return [m["content"] for m in messages if m["msg_type"] == msg_type]


async def test_background_job_runs_while_other_cells_run_and_cancels_through_the_api(
    sse_server: SSEServer, kernel: KernelSession
) -> None:
    started = time.monotonic()
    messages = await kernel.execute(
        "import time\nfrom jupyter_sse import submit, progress\n"
        "def slow(steps):\n"
        "    time.sleep(0.5)\n"
        "    for i in progress(range(steps), desc='steps'):\n        time.sleep(0.1)\n"
        "    return 'done'\n"
        "h = submit(slow, 30, name='background', total=30)\n"
        "h.job_id\n"
    )
    # the submitting cell returned at once (the job takes 3 s) and showed the job's live view
    assert time.monotonic() - started < 2.5
    assert errors(messages) == []
    shown = [c["data"] for c in _outputs(messages, "display_data")]
    assert any(JOB_MIME in d for d in shown), shown
    job_id = _outputs(messages, "execute_result")[0]["data"]["text/plain"].strip("'")

    # the kernel is free: another cell runs and returns quickly while the job runs (and fn's inner bar, which
    # starts meanwhile, is shown in the submitting cell, not in this one)
    quick_started = time.monotonic()
    quick = await kernel.execute("time.sleep(0.8)\n1 + 1")
    assert time.monotonic() - quick_started < 2.0
    assert _outputs(quick, "execute_result")[0]["data"]["text/plain"] == "2"
    assert not [c for c in _outputs(quick, "display_data") if JOB_MIME in c["data"]]

    async with AsyncClient(sse_server.url, sse_server.token) as client:
        job = await wait_for_job(client, "background")
        assert job["id"] == job_id and job["state"] == "running"
        child = await wait_for_job(client, "steps")
        assert child["parent"] == job_id
        await client.cancel(job_id)
        final = [e.data async for e in client.follow(job_id) if e.event == "job"][-1]
        assert final["state"] == "cancelled"
        assert (await client.get(child["id"]))["state"] == "cancelled"
    assert time.monotonic() - started < 3.4  # it stopped before its 3.5 s were up
    messages = await kernel.execute("print(h.state, type(h.exception()).__name__)")
    stdout = "".join(c["text"] for c in _outputs(messages, "stream"))
    assert stdout.strip() == "cancelled JobCancelled"


async def test_result_of_a_successful_job_and_failure(sse_server: SSEServer, kernel: KernelSession) -> None:
    messages = await kernel.execute(
        "from jupyter_sse import submit\n"
        "ok = submit(lambda a, b: a * b, 6, 7, name='multiply')\n"
        "def broken():\n    raise RuntimeError('disk full')\n"
        "bad = submit(broken, name='broken')\n"
        "print(ok.result(timeout=10), ok.state)\n"
        "try:\n    bad.result(timeout=10)\nexcept RuntimeError as e:\n    print('raised', e, bad.state)\n"
    )
    assert errors(messages) == []
    stdout = "".join(c["text"] for c in _outputs(messages, "stream"))
    assert stdout.splitlines() == ["42 succeeded", "raised disk full failed"]
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        ok = await wait_for_job(client, "multiply")
        bad = await wait_for_job(client, "broken")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (ok["state"], bad["state"]) != ("succeeded", "failed"):
            ok, bad = await client.get(ok["id"]), await client.get(bad["id"])
    assert ok["state"] == "succeeded"
    assert bad["state"] == "failed"
    assert bad["error"] == {"type": "RuntimeError", "message": "disk full"}
