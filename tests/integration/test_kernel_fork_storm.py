"""A fork storm in a real kernel started through the server: forks while jobs churn in the kernel, each child
runs a short ``progress`` loop and leaves with ``os._exit(0)`` under an alarm. No child hangs, none is lost:
every child's job is ``succeeded`` on the server. (``bench/forkstorm.py`` runs the 1,000-fork version.)"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest

from jupyter_sse.client import AsyncClient
from tests.conftest import SSEServer
from tests.integration.conftest import KernelSession, errors

pytestmark = pytest.mark.timeout(180)

FORKS = int(os.environ.get("JUPYTER_SSE_FORK_STORM", "200"))
CHURN = 200

STORM = """
import json, os, signal, threading, time
from jupyter_sse import job, progress
from jupyter_sse.kernel.display import Display, set_display_factory

set_display_factory(lambda _job: Display())  # thousands of churn jobs: no output in the cell
stop = threading.Event()


def churner(count):
    handles = [job("churn").__enter__() for _ in range(count)]
    i = 0
    while not stop.is_set():
        k = i % count
        handles[k].update()
        if i % 5 == 0:  # an end takes the end lock and waits for its flush; then a new job starts
            handles[k].__exit__(None, None, None)
            handles[k] = job("churn").__enter__()
        i += 1
    for h in handles:
        h.__exit__(None, None, None)


def child(name):
    code = 1
    try:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # hung: the alarm ends it (-SIGALRM)
        signal.alarm(20)
        for _ in progress(range(5), desc=name):
            pass
        code = 0
    finally:
        os._exit(code)


churners = [threading.Thread(target=churner, args=({half},)) for _ in range(2)]
for t in churners:
    t.start()
time.sleep(0.3)
alive, codes = [], []
for i in range({forks}):
    while len(alive) >= 8:
        pid, status = os.waitpid(-1, 0)
        alive.remove(pid)
        codes.append(os.waitstatus_to_exitcode(status))
    pid = os.fork()
    if pid == 0:
        child(f"storm-{{i}}")
    alive.append(pid)
for pid in alive:
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
stop.set()
for t in churners:
    t.join()
set_display_factory(None)
print(json.dumps(codes))
"""


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(jp_server_config)
    # the churn ends jobs by the tens of thousands (about 116,000 during 1,000 forks): none may push a child out
    config["SSEExtension"]["jobs_kept"] = 10_000_000
    return config


async def test_fork_storm_in_a_kernel_no_hang_no_loss(sse_server: SSEServer, kernel: KernelSession) -> None:
    messages = await kernel.execute(STORM.format(forks=FORKS, half=CHURN // 2), timeout=150)
    assert errors(messages) == []
    out = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    codes = json.loads(out.strip().splitlines()[-1])
    assert len(codes) == FORKS
    assert [c for c in codes if c != 0] == []  # -14 would be a child its alarm ended: hung
    async with AsyncClient(sse_server.url, sse_server.token) as client:
        jobs = [j for j in await client.list() if j["name"].startswith("storm-")]
    # the children waited for their final state before os._exit: nothing to wait for here
    assert len(jobs) == FORKS
    states: dict[str, int] = {}
    for j in jobs:
        states[j["state"]] = states.get(j["state"], 0) + 1
    assert states == {"succeeded": FORKS}
    assert {j["kernel_id"] for j in jobs} == {kernel.kernel_id}
    assert {j["parent"] for j in jobs} == {None}
