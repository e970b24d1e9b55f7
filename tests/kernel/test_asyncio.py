"""async: ``async for`` over progress() and jupyter_sse.tqdm, and jupyter_sse.asyncio's gather/as_completed,
each ending succeeded, failed or cancelled as its code did."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import jupyter_sse
from jupyter_sse import asyncio as sse_asyncio
from jupyter_sse.kernel import JobCancelled, progress
from jupyter_sse.kernel._state import JobState
from tests._wait import until
from tests.kernel._local_jobs import named, recording_jobs


@pytest.fixture(autouse=True)
def jobs() -> Iterator[list[JobState]]:
    with recording_jobs() as started:
        yield started


async def agen(n: int, fail_at: int | None = None) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        if i == fail_at:
            raise RuntimeError(f"source broke at {i}")
        yield i


async def work(i: int, fail: bool = False, delay: float = 0.0) -> int:
    await asyncio.sleep(delay or 0.001 * i)
    if fail:
        raise ValueError(f"task {i}")
    return i


def test_async_for_over_progress(jobs: list[JobState]) -> None:
    async def main() -> list[int]:
        seen = []
        p = progress(agen(5), desc="aloop")
        async for x in p:
            seen.append(p.n)
            assert x == len(seen) - 1
        return seen

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]  # inside item k, k are done: tqdm's count
    job = named(jobs, "aloop")
    assert (job.state, job.count, job.total) == ("succeeded", 5, None)


def test_async_for_ends(jobs: list[JobState]) -> None:
    async def main() -> None:
        async for x in progress(agen(10), desc="break"):
            if x == 3:
                break
        with pytest.raises(KeyError):
            async for x in progress(agen(10), desc="body"):
                if x == 3:
                    raise KeyError(x)
        with pytest.raises(RuntimeError):
            async for _ in progress(agen(10, fail_at=2), desc="source"):
                pass

    asyncio.run(main())
    assert (named(jobs, "break").state, named(jobs, "break").count) == ("succeeded", 3)
    assert (named(jobs, "body").state, named(jobs, "body").count) == ("failed", 3)
    assert named(jobs, "source").error == {"type": "RuntimeError", "message": "source broke at 2"}


def test_async_for_cancel_and_task_cancel(jobs: list[JobState]) -> None:
    async def main() -> None:
        with pytest.raises(JobCancelled):
            async for x in progress(agen(10), desc="cancel"):
                if x == 2:
                    named(jobs, "cancel").request_cancel()

        async def forever() -> None:
            async def slow() -> AsyncIterator[int]:
                while True:
                    await asyncio.sleep(0.01)
                    yield 1

            async for _ in progress(slow(), desc="task"):
                pass

        task = asyncio.ensure_future(forever())
        await until(lambda: [j.count for j in jobs if j.name == "task"] >= [1], what="the task's loop to run")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert (named(jobs, "cancel").state, named(jobs, "cancel").count) == ("cancelled", 3)
    assert named(jobs, "task").state == "cancelled"


def test_async_for_needs_an_async_iterable() -> None:
    async def main() -> None:
        async for _ in progress([1, 2]):  # type: ignore[attr-defined]
            pass

    with pytest.raises(TypeError, match="async iterable"):
        asyncio.run(main())


def test_async_for_over_jupyter_sse_tqdm(jobs: list[JobState]) -> None:
    async def main() -> list[int]:
        return [x async for x in jupyter_sse.tqdm(agen(4), desc="tq async", file=io.StringIO())]

    assert asyncio.run(main()) == [0, 1, 2, 3]
    assert (named(jobs, "tq async").state, named(jobs, "tq async").count) == ("succeeded", 4)

    async def failing() -> None:
        async for _ in jupyter_sse.tqdm(agen(4, fail_at=1), desc="tq async fail"):
            pass

    with pytest.raises(RuntimeError):
        asyncio.run(failing())
    assert named(jobs, "tq async fail").state == "failed"

    async def left() -> None:
        async for x in jupyter_sse.tqdm(agen(10), desc="tq async break"):
            if x == 3:
                break
        async for x in jupyter_sse.tqdm(agen(10), desc="tq async body"):
            if x == 3:
                raise KeyError(x)

    with pytest.raises(KeyError):
        asyncio.run(left())
    assert (named(jobs, "tq async break").state, named(jobs, "tq async break").message) == (
        "succeeded",
        "stopped early at 4",  # tqdm's async loop counts an item when it hands it out
    )
    assert named(jobs, "tq async body").state == "failed"


def test_gather_counts_each_awaitable_and_keeps_the_order(jobs: list[JobState]) -> None:
    async def main() -> list[Any]:
        return await sse_asyncio.gather(*(work(i, delay=0.001 * (5 - i)) for i in range(5)), desc="gather")

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    job = named(jobs, "gather")
    assert (job.state, job.count, job.total) == ("succeeded", 5, 5)


def test_gather_failure_return_exceptions_and_cancel(jobs: list[JobState]) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="task 1"):
            await sse_asyncio.gather(work(0), work(1, fail=True), desc="fails")
        got = await sse_asyncio.gather(work(0), work(1, fail=True), desc="returns", return_exceptions=True)
        assert got[0] == 0 and isinstance(got[1], ValueError)
        task = asyncio.ensure_future(sse_asyncio.gather(work(0), work(1, delay=10), desc="cancelled"))
        await until(lambda: [j.count for j in jobs if j.name == "cancelled"] == [1], what="the quick task to end")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    fails = named(jobs, "fails")
    assert (fails.state, fails.error) == ("failed", {"type": "ValueError", "message": "task 1"})
    assert (named(jobs, "returns").state, named(jobs, "returns").count) == ("succeeded", 2)
    assert (named(jobs, "cancelled").state, named(jobs, "cancelled").count) == ("cancelled", 1)


def test_gather_stops_on_a_cancel_request_and_cancels_the_rest(jobs: list[JobState]) -> None:
    async def main() -> None:
        slow = asyncio.ensure_future(work(9, delay=10))
        gathered = asyncio.ensure_future(sse_asyncio.gather(work(0), work(1, delay=0.05), slow, desc="stop"))
        await asyncio.sleep(0.01)
        named(jobs, "stop").request_cancel()
        with pytest.raises(JobCancelled):
            await gathered
        await asyncio.sleep(0)
        assert slow.cancelled()

    asyncio.run(main())
    assert named(jobs, "stop").state == "cancelled"


def test_tqdm_class_gather(jobs: list[JobState]) -> None:
    async def main() -> list[Any]:
        return await jupyter_sse.tqdm.gather(*(work(i) for i in range(3)), desc="tq gather")  # type: ignore[no-any-return]

    assert asyncio.run(main()) == [0, 1, 2]
    assert (named(jobs, "tq gather").state, named(jobs, "tq gather").count) == ("succeeded", 3)


def test_as_completed_counts_awaited_items(jobs: list[JobState]) -> None:
    async def main() -> list[int]:
        out = []
        for f in sse_asyncio.as_completed([work(i) for i in range(4)], desc="ac"):
            out.append(await f)
            assert named(jobs, "ac").count == len(out)
        return out

    assert sorted(asyncio.run(main())) == [0, 1, 2, 3]
    assert (named(jobs, "ac").state, named(jobs, "ac").count, named(jobs, "ac").total) == ("succeeded", 4, 4)


def test_as_completed_failure_and_break(jobs: list[JobState]) -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            for f in sse_asyncio.as_completed([work(0), work(1, fail=True)], desc="ac fail"):
                await f
        for f in sse_asyncio.as_completed([work(0), work(5, delay=0.02)], desc="ac break"):
            await f
            break
        # the task left behind ends before the loop does (asyncio.run would cancel it)
        await until(lambda: len(asyncio.all_tasks()) == 1, what="the task left behind")

    asyncio.run(main())
    assert named(jobs, "ac fail").state == "failed"
    assert (named(jobs, "ac break").state, named(jobs, "ac break").count) == ("succeeded", 1)


@pytest.mark.parametrize(("total", "error"), [(-3, ValueError), (float("nan"), ValueError), ("3", TypeError)])
def test_bad_arguments_raise_before_any_work(jobs: list[JobState], total: Any, error: type[Exception]) -> None:
    async def main() -> None:
        coro = work(0)
        with pytest.raises(error):
            await sse_asyncio.gather(coro, total=total)
        with pytest.raises(error):
            sse_asyncio.as_completed([coro], total=total)
        with pytest.raises(TypeError, match="awaitables"):
            await sse_asyncio.gather(coro, 3)  # type: ignore[arg-type]
        await coro  # never scheduled by the failed calls: still ours to run

    asyncio.run(main())
    assert jobs == []
