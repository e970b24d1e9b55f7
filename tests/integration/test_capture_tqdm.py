"""``%load_ext jupyter_sse`` in a real kernel started by a real server: every form of tqdm, including classes
imported (and subclassed) before the extension was loaded, becomes a job nested as the bars are, the cell shows
our bar and never tqdm's widget, a cancel stops the loop, and ``%unload_ext`` puts tqdm back."""

from __future__ import annotations

import re

import pytest

from tests.conftest import SSEServer
from tests.integration._capture import (
    JOB_MIME,
    WIDGET_MIME,
    cancel_when_running,
    displays,
    foreign_displays,
    job_displays,
    jobs_by_name,
    settled,
    until_idle,
)
from tests.integration.conftest import KernelSession, errors

pytestmark = pytest.mark.timeout(120)

BEFORE = """
import asyncio, time
import tqdm, tqdm.asyncio, tqdm.std
from tqdm.auto import tqdm as auto_tqdm
from tqdm.notebook import tqdm as nb_tqdm, trange as nb_trange
from tqdm import tqdm as std_tqdm
from tqdm.contrib.concurrent import thread_map
from tqdm.contrib import tenumerate
import importlib
from huggingface_hub.utils import tqdm as hf_tqdm
ds_tqdm = importlib.import_module('datasets.utils.tqdm').tqdm

class LibBar(auto_tqdm):
    # a library's own wrapper, defined before the extension is loaded (as huggingface_hub's and datasets' are)
    def __init__(self, *args, name=None, **kwargs):
        self.lib_name = name
        super().__init__(*args, **kwargs)

ORIGINAL_NEW = tqdm.std.tqdm.__dict__['__new__']
"""

BARS = """
for epoch in auto_tqdm(range(2), desc='epochs'):
    for step in nb_tqdm(range(5), desc=f'steps {epoch}'):
        pass
list(std_tqdm(range(3), desc='std'))
thread_map(lambda x: x, range(4), desc='thread_map')
for i, x in tenumerate('ab', desc='tenumerate'):
    pass
async def numbers():
    for i in range(3):
        yield i
async for x in tqdm.asyncio.tqdm(numbers(), total=3, desc='async'):
    pass
bar = LibBar(total=3, desc='library', name='lib')
bar.update(3)
bar.close()
assert bar.lib_name == 'lib' and isinstance(bar, auto_tqdm) and isinstance(bar, LibBar)
for i in nb_trange(4, desc='trange'):
    pass
for i in hf_tqdm(range(3), desc='huggingface_hub'):
    pass
for i in ds_tqdm(range(3), desc='datasets'):
    pass
"""

NAMES = ["epochs", "steps 0", "steps 1", "std", "thread_map", "tenumerate", "async", "library", "trange"]
NAMES += ["huggingface_hub", "datasets"]


async def _load(kernel: KernelSession) -> float:
    messages = await kernel.execute(
        "_t = time.perf_counter()\n%load_ext jupyter_sse\nprint('load_ext ms', (time.perf_counter() - _t) * 1000)"
    )
    assert errors(messages) == []
    out = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    match = re.search(r"load_ext ms ([\d.]+)", out)
    assert match, out
    return float(match.group(1))


async def test_every_form_of_tqdm_becomes_a_nested_job(sse_server: SSEServer, kernel: KernelSession) -> None:
    assert errors(await kernel.execute(BEFORE)) == []
    load_ms = await _load(kernel)
    assert load_ms < 50, f"%load_ext took {load_ms} ms"
    messages = await kernel.execute(BARS)
    assert errors(messages) == []
    jobs = await settled(sse_server, NAMES)
    totals = {"epochs": 2, "steps 0": 5, "steps 1": 5, "std": 3, "thread_map": 4, "tenumerate": 2, "async": 3}
    totals.update({"library": 3, "trange": 4, "huggingface_hub": 3, "datasets": 3})
    for name, total in totals.items():
        job = jobs[name]
        assert (job["state"], job["n"], job["total"]) == ("succeeded", total, total), job
        assert job["kernel_id"] == kernel.kernel_id
    epochs = jobs["epochs"]["id"]
    assert jobs["steps 0"]["parent"] == epochs and jobs["steps 1"]["parent"] == epochs
    assert all(jobs[name]["parent"] is None for name in NAMES if not name.startswith("steps"))
    # the cell shows our bar for each, and never tqdm's widget or its text bar
    assert foreign_displays(messages) == []
    assert job_displays(messages) == {jobs[name]["id"] for name in NAMES}
    assert not any("it/s]" in m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")


async def test_cancel_stops_a_captured_loop_and_unload_puts_tqdm_back(
    sse_server: SSEServer, kernel: KernelSession
) -> None:
    assert errors(await kernel.execute(BEFORE)) == []
    await _load(kernel)
    msg_id = kernel.start("for i in auto_tqdm(range(10**9), desc='long'):\n    time.sleep(0.01)")
    await cancel_when_running(sse_server, "long")
    messages = await until_idle(kernel, msg_id)
    assert [e.split(":")[0] for e in errors(messages)] == ["JobCancelled"]
    job = (await settled(sse_server, ["long"]))["long"]
    assert job["state"] == "cancelled" and job["n"] >= 1

    messages = await kernel.execute(
        "%unload_ext jupyter_sse\n"
        "assert tqdm.std.tqdm.__dict__['__new__'] is ORIGINAL_NEW\n"
        "for i in nb_tqdm(range(3), desc='after unload'):\n    pass\n"
        "assert type(auto_tqdm(disable=True)) is auto_tqdm"
    )
    assert errors(messages) == []
    assert any(WIDGET_MIME in d for d in displays(messages)), "tqdm.notebook draws its widget again"
    assert not any(JOB_MIME in d for d in displays(messages))
    assert "after unload" not in await jobs_by_name(sse_server)
