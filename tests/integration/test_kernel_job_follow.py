"""End to end: a real kernel started through the server's REST API runs `progress`, and the Python client
follows the job over a real SSE socket."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from jupyter_sse.client import AsyncClient, Client
from tests.conftest import SSEServer
from tests.integration.conftest import KernelSession, errors, wait_for_job

pytestmark = pytest.mark.timeout(120)


async def test_kernel_progress_streams_live_to_the_client(sse_server: SSEServer, kernel: KernelSession) -> None:
    kernel.start(
        "import time\nfrom jupyter_sse import progress\n"
        "for i in progress(range(40), desc='live'):\n    time.sleep(0.05)\n"
    )
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        job = await wait_for_job(client, "live")
        seen: list[dict[str, Any]] = []
        async for event in client.follow(job["id"]):
            if event.event == "job":
                seen.append(event.data)
    counts = [j["n"] for j in seen]
    running = [j for j in seen if j["state"] == "running"]
    # Live: several distinct counts arrived before the end, not only the final state.
    assert len({j["n"] for j in running}) >= 3, counts
    assert counts == sorted(counts)
    final = seen[-1]
    assert final["state"] == "succeeded"
    assert (final["n"], final["total"]) == (40, 40)
    assert final["kernel_id"] == kernel.kernel_id
    assert final["elapsed"] >= 1.5
    assert final["rate"] > 0


async def test_follow_resumes_after_disconnect_and_ends_with_final_state(
    sse_server: SSEServer, kernel: KernelSession
) -> None:
    kernel.start(
        "import time\nfrom jupyter_sse import job\n"
        "with job('resumable', total=30) as j:\n"
        "    for i in range(30):\n"
        "        time.sleep(0.05)\n        j.log(f'line {i}')\n        j.update()\n"
    )
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        job = await wait_for_job(client, "resumable")
        last_id = None
        async for event in client.follow(job["id"]):
            last_id = event.id
            if event.event == "job" and event.data["n"] >= 5:
                break  # disconnect mid-job
        assert last_id is not None
        await asyncio.sleep(0.5)  # events are missed while away
        resumed = [event async for event in client.follow(job["id"], last_event_id=last_id)]
    snapshots = [e.data for e in resumed if e.event == "job"]
    assert snapshots[-1]["state"] == "succeeded"
    assert snapshots[-1]["n"] == 30
    # Ids are `<epoch>.<seq>`: the same history, further on (opaque to clients; tests may look).
    epoch, _, seq = last_id.partition(".")
    assert all(e.id.partition(".")[0] == epoch and int(e.id.partition(".")[2]) > int(seq) for e in resumed)
    lines = [line for e in resumed if e.event == "log" for line in e.data["lines"]]
    assert lines[-1] == "line 29"


async def test_cancel_through_the_api_stops_the_loop(sse_server: SSEServer, kernel: KernelSession) -> None:
    msg_id = kernel.start(
        "import time\nfrom jupyter_sse import progress, JobCancelled\n"
        "try:\n"
        "    for i in progress(range(100000), desc='doomed'):\n        time.sleep(0.01)\n"
        "except JobCancelled:\n    print('got JobCancelled at', i)\n"
    )
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        job = await wait_for_job(client, "doomed")
        await client.cancel(job["id"])
        final = None
        async for event in client.follow(job["id"]):
            if event.event == "job":
                final = event.data
    assert final is not None
    assert final["state"] == "cancelled"
    assert final["n"] < 100000
    # The cell saw JobCancelled and went on.
    stdout = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any("got JobCancelled" in s for s in stdout):
        msg = await kernel.client.get_iopub_msg(timeout=20)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            stdout.append(msg["content"]["text"])
    assert any("got JobCancelled" in s for s in stdout)


async def test_failing_loop_marks_job_failed_with_error(sse_server: SSEServer, kernel: KernelSession) -> None:
    messages = await kernel.execute(
        "from jupyter_sse import progress\n"
        "for i in progress(range(10), desc='boom'):\n"
        "    if i == 3:\n        raise ValueError('bad batch 3')\n"
    )
    assert errors(messages) == ["ValueError: bad batch 3"]
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        job = await wait_for_job(client, "boom")
        final = [e.data async for e in client.follow(job["id"]) if e.event == "job"][-1]
    assert final["state"] == "failed"
    assert final["error"] == {"type": "ValueError", "message": "bad batch 3"}
    assert final["n"] == 3


async def test_nested_bars_record_their_parent(sse_server: SSEServer, kernel: KernelSession) -> None:
    messages = await kernel.execute(
        "from jupyter_sse import progress\n"
        "for i in progress(range(2), desc='outer'):\n"
        "    for j in progress(range(3), desc=f'inner {i}'):\n        pass\n"
    )
    assert errors(messages) == []
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        outer = await wait_for_job(client, "outer")
        inner = await wait_for_job(client, "inner 1")
    assert inner["parent"] == outer["id"]
    assert outer["parent"] is None


async def test_sync_client_follows_in_a_thread(sse_server: SSEServer, kernel: KernelSession) -> None:
    kernel.start(
        "import time\nfrom jupyter_sse import progress\nfor i in progress(range(20), desc='sync'):\n"
        "    time.sleep(0.05)\n"
    )
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        job = await wait_for_job(client, "sync")

    def follow() -> list[str]:
        with Client(sse_server.url, sse_server.token) as sync_client:
            return [e.data["state"] for e in sync_client.follow(job["id"]) if e.event == "job"]

    states = await asyncio.to_thread(follow)
    assert states[-1] == "succeeded"


async def test_job_records_notebook_path_and_cell_id(sse_server: SSEServer, jp_fetch: Any, jp_root_dir: Any) -> None:
    # A notebook session, as JupyterLab opens one: the kernel learns its notebook's file from the server (as an
    # absolute path, which the server reports relative to its root), and each execute request carries the
    # cell's id in its metadata.
    (jp_root_dir / "experiments").mkdir()
    body = {"path": "experiments/train.ipynb", "type": "notebook", "name": "train.ipynb", "kernel": {"name": "python3"}}
    response = await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))
    session = json.loads(response.body)
    client = sse_server.app.kernel_manager.get_kernel(session["kernel"]["id"]).client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        code = "from jupyter_sse import progress\nfor i in progress(range(3), desc='located'):\n    pass\n"
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
        msg = client.session.msg("execute_request", content, metadata={"cellId": "cell-42"})
        client.shell_channel.send(msg)
        reply = await client.get_shell_msg(timeout=60)
        assert reply["content"]["status"] == "ok"
        async with AsyncClient(sse_server.url, sse_server.token) as sse_client:
            job = await wait_for_job(sse_client, "located")
    finally:
        client.stop_channels()
        await jp_fetch("api", "sessions", session["id"], method="DELETE")
    assert job["path"] == "experiments/train.ipynb"
    assert job["cell_id"] == "cell-42"
    assert job["kernel_id"] == session["kernel"]["id"]
