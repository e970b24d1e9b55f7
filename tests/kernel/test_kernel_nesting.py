"""Nesting follows the work, not the thread: the parent a job records, in this process (threads, pools, asyncio).
Child processes, joblib and Dask are in tests/integration/test_kernel_where_work_runs.py (a real kernel)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool

import pytest

from jupyter_sse.kernel import job
from jupyter_sse.kernel import publisher as publisher_mod
from jupyter_sse.kernel.context import current_parent


@pytest.fixture(autouse=True)
def no_server() -> Iterator[publisher_mod.Publisher]:
    pub = publisher_mod.configure(None)
    yield pub
    pub.close()


def parent_of_a_job_here(name: str = "child") -> str | None:
    with job(name, leave=False) as j:
        return j._state.parent


def test_asyncio_tasks_are_siblings_under_the_job_they_start_in() -> None:
    async def coro(i: int) -> str | None:
        with job(f"coro-{i}", leave=False) as j:
            await asyncio.sleep(0.01)  # all three are inside their jobs at once
            return j._state.parent

    async def main() -> tuple[str, list[str | None]]:
        with job("outer", leave=False) as outer:
            gathered = await asyncio.gather(*(coro(i) for i in range(3)))
            tasks = [asyncio.create_task(coro(i)) for i in range(3)]
            created = [await t for t in tasks]
            async with asyncio.TaskGroup() as tg:
                grouped = [tg.create_task(coro(i)) for i in range(3)]
        return outer.id, [*gathered, *created, *(t.result() for t in grouped)]

    outer_id, parents = asyncio.run(main())
    assert parents == [outer_id] * 9  # siblings, not a chain


def test_a_thread_nests_under_the_job_current_where_it_was_started() -> None:
    seen: list[str | None] = []
    with job("outer", leave=False) as outer:
        t = threading.Thread(target=lambda: seen.append(parent_of_a_job_here()))
        t.start()
        t.join()
    t = threading.Thread(target=lambda: seen.append(parent_of_a_job_here()))
    t.start()
    t.join()
    assert seen == [outer.id, None]


def test_a_reused_pool_thread_takes_the_parent_of_each_task() -> None:
    with ThreadPoolExecutor(1) as ex:
        with job("first", leave=False) as first:
            a = ex.submit(parent_of_a_job_here).result()
        outside = ex.submit(parent_of_a_job_here).result()
        with job("second", leave=False) as second:
            b = list(ex.map(lambda _: parent_of_a_job_here(), range(2)))
    assert (a, outside, b) == (first.id, None, [second.id] * 2)


def test_multiprocessing_thread_pool_tasks_nest() -> None:
    with ThreadPool(2) as pool, job("outer", leave=False) as outer:
        parents = pool.map(lambda _: parent_of_a_job_here(), range(4))
        applied = pool.apply_async(parent_of_a_job_here).get(10)
    assert parents == [outer.id] * 4
    assert applied == outer.id


def test_an_ended_job_is_never_a_parent() -> None:
    # a bar closed from another thread while it is still current here: the next job skips it
    with job("outer", leave=False) as outer:
        inner = job("inner", leave=False).__enter__()
        closer = threading.Thread(target=inner.__exit__, args=(None, None, None))
        closer.start()
        closer.join()
        assert inner.state == "succeeded"
        assert current_parent() == outer.id
        assert parent_of_a_job_here() == outer.id
    assert current_parent() is None
    assert outer._state.parent is None


def test_jobs_ended_out_of_order_are_not_kept_alive_by_the_nesting() -> None:
    """Bars entered and closed round-robin (never innermost first): the chain of enclosing jobs stays short."""
    live = 50
    handles = [job(f"j{i}", leave=False).__enter__() for i in range(live)]
    for i in range(5000):
        handles[i % live].__exit__(None, None, None)
        handles[i % live] = job(f"r{i}", leave=False).__enter__()
    newest = handles[(5000 - 1) % live]._state
    chain = 0
    node = newest.outer
    while node is not None:
        chain += 1
        node = node.outer
    for h in handles:
        h.__exit__(None, None, None)
    assert chain <= 2 * live
    assert current_parent() is None
