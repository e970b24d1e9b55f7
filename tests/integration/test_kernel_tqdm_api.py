"""End to end, in a real kernel started through the server: jupyter_sse.tqdm under the tqdm APIs libraries use
(pandas' progress_apply, contrib.concurrent), its ends and closes as the server records them, async loops, and
calls with bad input that publish nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from jupyter_sse.client import AsyncClient
from tests.conftest import SSEServer
from tests.integration.conftest import KernelSession, errors, wait_for_job

pytestmark = pytest.mark.timeout(120)
JOB_MIME = "application/vnd.jupyter-sse.job+json"


async def _jobs(server: SSEServer) -> dict[str, dict[str, Any]]:
    async with AsyncClient(server.url, server.token) as client:
        return {job["name"]: job for job in await client.list()}


async def _settled(server: SSEServer, names: list[str], timeout: float = 10) -> dict[str, dict[str, Any]]:
    """The server's jobs once every one of ``names`` is in a final state."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = await _jobs(server)
        if all(jobs.get(n, {}).get("state") in ("succeeded", "failed", "cancelled") for n in names):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"not all of {names} ended: {jobs}")
        await asyncio.sleep(0.05)


def _stdout(messages: list[dict[str, Any]]) -> str:
    return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")


async def test_pandas_progress_apply_that_raises_ends_failed_at_its_row(
    sse_server: SSEServer, kernel: KernelSession
) -> None:
    messages = await kernel.execute(
        "import pandas as pd, jupyter_sse\n"
        "jupyter_sse.tqdm.pandas(desc='rows')\n"
        "def on_row(x):\n"
        "    if x == 119:\n"
        "        raise ValueError('bad row 120')\n"
        "    return x\n"
        "pd.DataFrame({'x': range(200)})['x'].progress_apply(on_row)\n"
    )
    assert errors(messages) == ["ValueError: bad row 120"]
    job = (await _settled(sse_server, ["rows"]))["rows"]
    assert (job["state"], job["n"], job["total"]) == ("failed", 120, 200)
    assert job["error"] == {"type": "ValueError", "message": "bad row 120"}
    assert job["kernel_id"] == kernel.kernel_id
    # shown in the cell as progress() shows a job: its MIME bundle, naming the job
    shown = [m["content"]["data"] for m in messages if m["msg_type"] == "display_data"]
    assert [d[JOB_MIME]["job_id"] for d in shown if JOB_MIME in d] == [job["id"]]


async def test_thread_map_twice_and_logging_redirect(sse_server: SSEServer, kernel: KernelSession) -> None:
    messages = await kernel.execute(
        "import logging, jupyter_sse\n"
        "from tqdm.contrib.concurrent import thread_map\n"
        "from tqdm.contrib.logging import logging_redirect_tqdm\n"
        "first = thread_map(abs, range(-10, 0), tqdm_class=jupyter_sse.tqdm, desc='map 1')\n"
        "second = thread_map(abs, range(-10, 0), tqdm_class=jupyter_sse.tqdm, desc='map 2')\n"
        "print(sum(first), sum(second))\n"
        "log = logging.getLogger('redirected')\n"
        "with logging_redirect_tqdm(loggers=[log], tqdm_class=jupyter_sse.tqdm):\n"
        "    for i in jupyter_sse.trange(2, desc='logged'):\n"
        "        log.warning('step %d', i)\n"
    )
    assert errors(messages) == []
    assert _stdout(messages).splitlines()[0] == "55 55"
    jobs = await _settled(sse_server, ["map 1", "map 2", "logged"])
    for name in ("map 1", "map 2"):
        assert (jobs[name]["state"], jobs[name]["n"], jobs[name]["total"]) == ("succeeded", 10, 10)
    assert jobs["logged"]["state"] == "succeeded"


async def test_updates_after_close_do_not_change_the_record(sse_server: SSEServer, kernel: KernelSession) -> None:
    # inside an outer job, an inner bar's end does not wait for its flush: an update right after close() would
    # be in the state the publisher sends next
    messages = await kernel.execute(
        "import jupyter_sse\n"
        "with jupyter_sse.job('outer'):\n"
        "    bar = jupyter_sse.tqdm(total=5, desc='closed at 2')\n"
        "    bar.update(2)\n"
        "    bar.close()\n"
        "    bar.update(3)\n"
        "    bar.set_description('renamed')\n"
        "    p = jupyter_sse.progress(total=5, desc='progress closed at 2')\n"
        "    p.update(2)\n"
        "    p.close()\n"
        "    p.update(3)\n"
        "    p.set_description('renamed too')\n"
    )
    assert errors(messages) == []
    jobs = await _settled(sse_server, ["closed at 2", "progress closed at 2", "outer"])
    for name in ("closed at 2", "progress closed at 2"):
        assert (jobs[name]["state"], jobs[name]["n"], jobs[name]["total"]) == ("succeeded", 2, 5)
    assert "renamed" not in jobs and "renamed too" not in jobs


async def test_async_loops_and_gather(sse_server: SSEServer, kernel: KernelSession) -> None:
    messages = await kernel.execute(
        "import asyncio, jupyter_sse\n"
        "from jupyter_sse import progress\n"
        "from jupyter_sse.asyncio import gather\n"
        "async def agen(n):\n"
        "    for i in range(n):\n"
        "        await asyncio.sleep(0.001)\n"
        "        yield i\n"
        "async def work(i):\n"
        "    await asyncio.sleep(0.01 * i)\n"
        "    if i == 99:\n"
        "        raise KeyError(i)\n"
        "    return i\n"
        "seen = [x async for x in progress(agen(5), desc='async loop')]\n"
        "tq = [x async for x in jupyter_sse.tqdm(agen(4), desc='async tqdm')]\n"
        "results = await gather(*(work(i) for i in range(3)), desc='gathered')\n"
        "try:\n"
        "    await gather(work(1), work(99), desc='gather fails')\n"
        "except KeyError:\n"
        "    pass\n"
        "print(seen, tq, results)\n"
    )
    assert errors(messages) == []
    assert _stdout(messages).strip() == "[0, 1, 2, 3, 4] [0, 1, 2, 3] [0, 1, 2]"
    jobs = await _settled(sse_server, ["async loop", "async tqdm", "gathered", "gather fails"])
    assert (jobs["async loop"]["state"], jobs["async loop"]["n"]) == ("succeeded", 5)
    assert (jobs["async tqdm"]["state"], jobs["async tqdm"]["n"]) == ("succeeded", 4)
    assert (jobs["gathered"]["state"], jobs["gathered"]["n"], jobs["gathered"]["total"]) == ("succeeded", 3, 3)
    assert jobs["gather fails"]["state"] == "failed"
    assert jobs["gather fails"]["error"] == {"type": "KeyError", "message": "99"}


async def test_calls_with_bad_input_raise_and_publish_nothing(sse_server: SSEServer, kernel: KernelSession) -> None:
    messages = await kernel.execute(
        "import jupyter_sse\n"
        "from jupyter_sse import job, progress, submit\n"
        "raised = []\n"
        "for call in (lambda: progress(None), lambda: progress(range(3), total=-1),\n"
        "             lambda: progress(range(3), total=float('nan')), lambda: progress(total='ten'),\n"
        "             lambda: jupyter_sse.tqdm(range(3), total=-1), lambda: job('bad', total='ten'),\n"
        "             lambda: submit(print, total=float('nan'))):\n"
        "    try:\n"
        "        call()\n"
        "    except (TypeError, ValueError) as e:\n"
        "        raised.append(type(e).__name__)\n"
        "print(raised)\n"
        "for _ in progress(range(2), desc='marker'):\n"
        "    pass\n"
    )
    assert errors(messages) == []
    assert _stdout(messages).strip() == str(
        ["TypeError", "ValueError", "ValueError", "TypeError", "ValueError", "TypeError", "ValueError"]
    )
    jobs = await _settled(sse_server, ["marker"])
    assert list(jobs) == ["marker"]  # the marker's final flush came after the bad calls: none of them sent a job


@pytest.mark.parametrize(
    ("name", "loop"),
    [
        ("tqdm loop", "for i in jupyter_sse.tqdm(range(100000), desc='tqdm loop'):\n        time.sleep(0.01)\n"),
        (
            "tqdm manual",
            "bar = jupyter_sse.tqdm(total=100000, desc='tqdm manual')\n"
            "    for i in range(100000):\n        time.sleep(0.01)\n        bar.update()\n",
        ),
        (
            "gathered slowly",
            "async def nap(i):\n        await asyncio.sleep(0.01 * i)\n"
            "    await gather(*(nap(i) for i in range(1000)), desc='gathered slowly')\n",
        ),
    ],
)
async def test_cancel_through_the_api(sse_server: SSEServer, kernel: KernelSession, name: str, loop: str) -> None:
    msg_id = kernel.start(
        "import asyncio, time, jupyter_sse\n"
        "from jupyter_sse import JobCancelled\n"
        "from jupyter_sse.asyncio import gather\n"
        f"try:\n    {loop}"
        "except JobCancelled:\n    print('got JobCancelled')\n"
    )
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        job = await wait_for_job(client, name)
        await client.cancel(job["id"])
        final = [e.data async for e in client.follow(job["id"]) if e.event == "job"][-1]
    assert final["state"] == "cancelled"
    assert 0 < final["n"] < final["total"]
    stdout = ""
    deadline = time.monotonic() + 20
    while "got JobCancelled" not in stdout and time.monotonic() < deadline:
        msg = await kernel.client.get_iopub_msg(timeout=20)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            stdout += msg["content"]["text"]
    assert "got JobCancelled" in stdout
