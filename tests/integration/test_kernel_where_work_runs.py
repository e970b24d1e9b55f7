"""Work started inside a job nests under it wherever it runs: a real kernel started through the server runs 8
children per mechanism (threads, asyncio tasks, processes, pools, joblib, Dask) under ``with job(...)``, and the
server records each child's parent, kernel id and final state."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from jupyter_sse.client import AsyncClient
from tests.conftest import SSEServer
from tests.integration.conftest import KernelSession, errors

pytestmark = pytest.mark.timeout(120)

CHILDREN = 8

# importable by every child process (spawned, forkserver, loky and Dask workers): a kernel's __main__ is not
HELPER = """
import asyncio
from jupyter_sse import progress


def work(i, prefix):
    for _ in progress(range(3), desc=f"{prefix}-{i}"):
        pass
    return i


async def coro(i, prefix):
    for _ in progress(range(3), desc=f"{prefix}-{i}"):
        await asyncio.sleep(0.01)
    return i
"""

N = CHILDREN
# each snippet runs inside `with job(f"outer-{P}") as outer:` with P the mechanism's name
MECHANISMS: dict[str, str] = {
    "thread": f"""
        ts = [threading.Thread(target=work, args=(i, P)) for i in range({N})]
        for t in ts: t.start()
        for t in ts: t.join()
    """,
    "thread-pool-executor": f"""
        with ThreadPoolExecutor(4) as ex:
            assert sorted(ex.map(work, range({N}), [P] * {N})) == list(range({N}))
    """,
    "asyncio-gather": f"""
        await asyncio.gather(*(coro(i, P) for i in range({N})))
    """,
    "asyncio-create-task": f"""
        tasks = [asyncio.create_task(coro(i, P)) for i in range({N})]
        for t in tasks: await t
    """,
    "asyncio-taskgroup": f"""
        async with asyncio.TaskGroup() as tg:
            for i in range({N}): tg.create_task(coro(i, P))
    """,
    "process-fork": f"""
        ps = [mp.get_context("fork").Process(target=work, args=(i, P)) for i in range({N})]
        for p in ps: p.start()
        for p in ps: p.join(60)
        assert [p.exitcode for p in ps] == [0] * {N}
    """,
    "process-spawn": f"""
        ps = [mp.get_context("spawn").Process(target=work, args=(i, P)) for i in range({N})]
        for p in ps: p.start()
        for p in ps: p.join(60)
        assert [p.exitcode for p in ps] == [0] * {N}
    """,
    "process-forkserver": f"""
        ps = [mp.get_context("forkserver").Process(target=work, args=(i, P)) for i in range({N})]
        for p in ps: p.start()
        for p in ps: p.join(60)
        assert [p.exitcode for p in ps] == [0] * {N}
    """,
    "pool": f"""
        with mp.get_context("fork").Pool(2, maxtasksperchild=3) as pool:
            assert pool.starmap(work, [(i, P) for i in range({N})]) == list(range({N}))
    """,
    "process-pool-executor": f"""
        with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
            assert sorted(ex.map(work, range({N}), [P] * {N})) == list(range({N}))
    """,
    "joblib-loky": f"""
        assert Parallel(n_jobs=2, backend="loky")(delayed(work)(i, P) for i in range({N})) == list(range({N}))
    """,
    "joblib-multiprocessing": f"""
        assert Parallel(n_jobs=2, backend="multiprocessing")(delayed(work)(i, P) for i in range({N})) == list(
            range({N})
        )
    """,
    "joblib-threading": f"""
        assert Parallel(n_jobs=2, backend="threading")(delayed(work)(i, P) for i in range({N})) == list(range({N}))
    """,
    "dask-threads": f"""
        assert list(dask.compute(*[dask.delayed(work)(i, P) for i in range({N})], scheduler="threads")) == list(
            range({N})
        )
    """,
    "dask-processes": f"""
        assert list(
            dask.compute(*[dask.delayed(work)(i, P) for i in range({N})], scheduler="processes", num_workers=2)
        ) == list(range({N}))
    """,
    "dask-distributed": f"""
        assert client.gather(client.map(work, range({N}), [P] * {N})) == list(range({N}))
    """,
    "os-fork": f"""
        pids = []
        for i in range({N}):
            pid = os.fork()
            if pid == 0:
                try:
                    work(i, P)
                finally:
                    os._exit(0)
            pids.append(pid)
        assert [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids] == [0] * {N}
    """,
    # another interpreter: it inherits the environment (the kernel id), not the parent job
    "subprocess": f"""
        procs = [
            subprocess.Popen([sys.executable, "-c", f"from sse_children import work; work({{i}}, {{P!r}})"])
            for i in range({N})
        ]
        assert [p.wait(60) for p in procs] == [0] * {N}
    """,
    # a graph on the cluster: the parent rides as a task annotation
    "dask-distributed-compute": f"""
        assert list(dask.compute(*[dask.delayed(work)(i, P) for i in range({N})])) == list(range({N}))
    """,
}
# run before the job, as a notebook starts its cluster in an early cell: workers outlive the jobs they serve
CLUSTER = """
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster)
"""
SETUP = {"dask-distributed": CLUSTER, "dask-distributed-compute": CLUSTER}
TEARDOWN = dict.fromkeys(SETUP, "client.close(); cluster.close()")
# where the parent job cannot be carried (the README's table says so): the children still arrive, with the
# kernel id, and no parent
PARENT_NOT_CARRIED = {"subprocess"}

PRELUDE = """
import asyncio, os, subprocess, sys, threading
import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor, ProcessPoolExecutor
sys.path.insert(0, {path!r})
os.environ["PYTHONPATH"] = {path!r} + os.pathsep + os.environ.get("PYTHONPATH", "")
from sse_children import work, coro
from jupyter_sse import job
from joblib import Parallel, delayed
import dask
from dask.distributed import LocalCluster, Client
"""


async def _children(server: SSEServer, prefix: str, timeout: float = 30) -> list[dict[str, Any]]:
    """The children of ``prefix`` once all have reached a final state (or what there is at the timeout)."""
    names = {f"{prefix}-{i}" for i in range(CHILDREN)}
    async with AsyncClient(server.url, server.token) as client:
        deadline = time.monotonic() + timeout
        while True:
            found = [j for j in await client.list() if j["name"] in names]
            done = [j for j in found if j["state"] not in ("pending", "running")]
            if len(done) == CHILDREN or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("mechanism", list(MECHANISMS))
async def test_children_nest_under_the_job_they_were_started_in(
    sse_server: SSEServer, kernel: KernelSession, tmp_path: Path, mechanism: str
) -> None:
    (tmp_path / "sse_children.py").write_text(HELPER)
    prelude = await kernel.execute(PRELUDE.format(path=str(tmp_path)))
    assert errors(prelude) == []
    if mechanism in SETUP:
        assert errors(await kernel.execute(textwrap.dedent(SETUP[mechanism]))) == []
    body = textwrap.indent(textwrap.dedent(MECHANISMS[mechanism]).strip(), "    ")
    code = f"P = {mechanism!r}\nwith job(f'outer-{{P}}') as outer:\n{body}\nprint(outer.id)\n"
    messages = await kernel.execute(code, timeout=90)
    assert errors(messages) == []
    outer_id = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream").split()[-1]
    if mechanism in TEARDOWN:
        assert errors(await kernel.execute(TEARDOWN[mechanism])) == []

    children = await _children(sse_server, mechanism)
    summary = json.dumps(
        sorted((j["name"], j["state"], j["parent"], j["kernel_id"]) for j in children),
        indent=0,
    )
    assert len(children) == CHILDREN, summary
    expected_parent = None if mechanism in PARENT_NOT_CARRIED else outer_id
    assert {j["parent"] for j in children} == {expected_parent}, summary
    assert {j["kernel_id"] for j in children} == {kernel.kernel_id}, summary
    assert {j["state"] for j in children} == {"succeeded"}, summary
    assert {(j["n"], j["total"]) for j in children} == {(3, 3)}, summary


async def test_workers_reused_across_jobs_take_each_jobs_parent(
    sse_server: SSEServer, kernel: KernelSession, tmp_path: Path
) -> None:
    """loky keeps its workers between calls: the parent travels with each task, not with the worker."""
    (tmp_path / "sse_children.py").write_text(HELPER)
    assert errors(await kernel.execute(PRELUDE.format(path=str(tmp_path)))) == []
    code = (
        "ids = []\n"
        "for k in range(2):\n"
        "    with job(f'outer-reuse-{k}') as outer:\n"
        "        Parallel(n_jobs=2, backend='loky')(delayed(work)(i, f'reuse{k}') for i in range(4))\n"
        "    ids.append(outer.id)\n"
        "print(*ids)\n"
    )
    messages = await kernel.execute(code, timeout=90)
    assert errors(messages) == []
    ids = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream").split()
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        jobs = await client.list()
    for k in range(2):
        children = [j for j in jobs if j["name"].startswith(f"reuse{k}-")]
        assert len(children) == 4
        assert {j["parent"] for j in children} == {ids[k]}
        assert {j["state"] for j in children} == {"succeeded"}


async def test_a_bar_left_open_by_a_cell_is_not_the_parent_of_later_cells(
    sse_server: SSEServer, kernel: KernelSession
) -> None:
    opened = await kernel.execute("from jupyter_sse import progress\nbar = progress(total=10, desc='left-open')\n")
    assert errors(opened) == []
    later = await kernel.execute("for _ in progress(range(3), desc='later-cell'):\n    pass\nbar.close()\n")
    assert errors(later) == []
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        jobs = {j["name"]: j for j in await client.list()}
    assert jobs["later-cell"]["parent"] is None
    assert jobs["later-cell"]["kernel_id"] == kernel.kernel_id


async def test_a_loop_that_raises_in_a_forked_child_of_the_kernel_ends_failed(
    sse_server: SSEServer, kernel: KernelSession
) -> None:
    # in the kernel's main thread a loop left by an exception waits for the cell's end to learn which; a forked
    # child runs no cells, so its loop must end on its own, and be sent before os._exit
    code = (
        "import os\nfrom jupyter_sse import progress\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    try:\n"
        "        for i in progress(range(10), desc='raises-in-child'):\n"
        "            if i == 4:\n"
        "                raise ValueError('bad row')\n"
        "    finally:\n"
        "        os._exit(0)\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    messages = await kernel.execute(code)
    assert errors(messages) == []
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        (child,) = [j for j in await client.list() if j["name"] == "raises-in-child"]
    assert child["state"] == "failed"
    assert child["n"] == 4
    assert child["kernel_id"] == kernel.kernel_id


async def test_a_cluster_started_inside_a_job_does_not_give_it_to_later_work(
    sse_server: SSEServer, kernel: KernelSession, tmp_path: Path
) -> None:
    """Workers outlive the job they were started under: later tasks get their own parent, or none."""
    (tmp_path / "sse_children.py").write_text(HELPER)
    assert errors(await kernel.execute(PRELUDE.format(path=str(tmp_path)))) == []
    code = (
        "with job('makes-cluster') as maker:\n"
        "    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)\n"
        "    client = Client(cluster)\n"
        "client.gather(client.map(work, range(2), ['free'] * 2))\n"
        "dask.compute(*[dask.delayed(work)(i, 'free-graph') for i in range(2)])\n"
        "with job('later') as later:\n"
        "    dask.compute(*[dask.delayed(work)(i, 'later-graph') for i in range(2)])\n"
        "client.close(); cluster.close()\n"
        "print(later.id)\n"
    )
    messages = await kernel.execute(code, timeout=90)
    assert errors(messages) == []
    later_id = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream").split()[-1]
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        jobs = await client.list()
    parents = {j["name"]: j["parent"] for j in jobs if j["name"].startswith(("free-", "later-"))}
    assert parents == {
        "free-0": None,
        "free-1": None,
        "free-graph-0": None,
        "free-graph-1": None,
        "later-graph-0": later_id,
        "later-graph-1": later_id,
    }
