"""``%load_ext jupyter_sse`` with joblib and Dask in a real kernel through a real server: a ``joblib.Parallel``
call on loky workers, a ``dask.compute`` on the local schedulers and on a ``distributed`` LocalCluster each
become a job, nested under the job current where they are called, shown in the cell, stopped by a cancel."""

from __future__ import annotations

import pytest

from jupyter_sse.client import AsyncClient
from tests.conftest import SSEServer
from tests.integration._capture import (
    cancel_when_running,
    error_names,
    foreign_displays,
    job_displays,
    settled,
    until_idle,
)
from tests.integration.conftest import KernelSession, errors

pytestmark = pytest.mark.timeout(120)


async def test_joblib_parallel_is_a_job_nested_under_the_current_one(
    sse_server: SSEServer, kernel: KernelSession
) -> None:
    # joblib imported before the extension is loaded, dask after: both are captured
    messages = await kernel.execute(
        "import time, sys, joblib, jupyter_sse\n"
        "%load_ext jupyter_sse\n"
        "def square(x):\n"
        "    time.sleep(0.01)\n"
        "    return x * x\n"
        "with jupyter_sse.job('outer'):\n"
        "    out = joblib.Parallel(n_jobs=2, backend='loky')(joblib.delayed(square)(i) for i in range(20))\n"
        "assert out == [i * i for i in range(20)], out\n"
        "for i, value in enumerate(joblib.Parallel(n_jobs=2, return_as='generator')(\n"
        "        joblib.delayed(square)(i) for i in range(50))):\n"
        "    if i == 4:\n"
        "        break\n"
    )
    assert errors(messages) == []
    jobs = await settled(sse_server, ["outer", "joblib.Parallel"])
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        calls = [j for j in await client.list() if j["name"] == "joblib.Parallel"]  # newest first
    # a generator left early by its consumer ends as a loop left by break does: succeeded, where it got to
    assert calls[0]["state"] == "succeeded" and 1 <= calls[0]["n"] < 50, calls[0]
    parallel = calls[1]
    assert (parallel["state"], parallel["n"], parallel["total"], parallel["unit"]) == ("succeeded", 20, 20, "tasks")
    assert parallel["parent"] == jobs["outer"]["id"]
    assert parallel["message"] == "20/20 dispatched"
    assert job_displays(messages) == {jobs["outer"]["id"], parallel["id"], calls[0]["id"]}
    assert foreign_displays(messages) == []


async def test_cancel_stops_joblib_parallel(sse_server: SSEServer, kernel: KernelSession) -> None:
    assert errors(await kernel.execute("%load_ext jupyter_sse\nimport time, joblib")) == []
    msg_id = kernel.start(
        "joblib.Parallel(n_jobs=2, backend='loky')(joblib.delayed(time.sleep)(0.02) for _ in range(5000))"
    )
    await cancel_when_running(sse_server, "joblib.Parallel")
    messages = await until_idle(kernel, msg_id)
    assert error_names(messages) == ["JobCancelled"]
    job = (await settled(sse_server, ["joblib.Parallel"]))["joblib.Parallel"]
    assert job["state"] == "cancelled" and 1 <= job["n"] < 5000


async def test_dask_local_schedulers(sse_server: SSEServer, kernel: KernelSession) -> None:
    messages = await kernel.execute(
        "%load_ext jupyter_sse\n"
        "import sys\n"
        "assert 'dask' not in sys.modules\n"
        "import dask, jupyter_sse\n"
        "parts = [dask.delayed(lambda i: i + 1)(i) for i in range(10)]\n"
        "total = dask.delayed(sum)(parts)\n"
        "with jupyter_sse.job('outer'):\n"
        "    assert dask.compute(total, scheduler='threads') == (55,)\n"
    )
    assert errors(messages) == []
    jobs = await settled(sse_server, ["outer", "dask.compute"])
    compute = jobs["dask.compute"]
    assert (compute["state"], compute["n"], compute["total"]) == ("succeeded", 11, 11)
    assert compute["parent"] == jobs["outer"]["id"]
    assert foreign_displays(messages) == []


async def test_cancel_stops_a_dask_compute(sse_server: SSEServer, kernel: KernelSession) -> None:
    assert errors(await kernel.execute("%load_ext jupyter_sse\nimport time, dask")) == []
    msg_id = kernel.start(
        "slow = [dask.delayed(time.sleep)(0.02, dask_key_name=f'slow-{i}') for i in range(3000)]\n"
        "dask.compute(*slow, scheduler='threads', num_workers=2)\n"
    )
    await cancel_when_running(sse_server, "dask.compute")
    messages = await until_idle(kernel, msg_id)
    assert error_names(messages) == ["JobCancelled"]
    job = (await settled(sse_server, ["dask.compute"]))["dask.compute"]
    assert job["state"] == "cancelled" and 1 <= job["n"] < 3000


CLUSTER = (
    "%load_ext jupyter_sse\n"
    "import time, dask, jupyter_sse\n"
    "from dask.distributed import Client, LocalCluster\n"
    "cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)\n"
    "client = Client(cluster)\n"
)
CLOSE = "client.close()\ncluster.close()\n"


async def test_dask_compute_on_a_local_cluster(sse_server: SSEServer, kernel: KernelSession) -> None:
    messages = await kernel.execute(
        CLUSTER + "parts = [dask.delayed(lambda i: i + 1)(i) for i in range(10)]\n"
        "with jupyter_sse.job('outer'):\n"
        "    assert dask.delayed(sum)(parts).compute() == 55\n" + CLOSE
    )
    assert errors(messages) == []
    jobs = await settled(sse_server, ["outer", "dask.compute"])
    compute = jobs["dask.compute"]
    assert (compute["state"], compute["n"], compute["total"]) == ("succeeded", 11, 11), compute
    assert compute["parent"] == jobs["outer"]["id"]
    assert foreign_displays(messages) == []


async def test_cancel_stops_a_compute_on_a_local_cluster(sse_server: SSEServer, kernel: KernelSession) -> None:
    assert errors(await kernel.execute(CLUSTER)) == []
    msg_id = kernel.start(
        "slow = [dask.delayed(time.sleep)(0.02, dask_key_name=f'slow-{i}') for i in range(3000)]\n"
        "try:\n"
        "    dask.compute(*slow)\n"
        "finally:\n"
        "    " + CLOSE.replace("\n", "\n    ").rstrip() + "\n"
    )
    await cancel_when_running(sse_server, "dask.compute")
    messages = await until_idle(kernel, msg_id)
    assert error_names(messages) == ["JobCancelled"]
    job = (await settled(sse_server, ["dask.compute"]))["dask.compute"]
    assert job["state"] == "cancelled" and 1 <= job["n"] < 3000
