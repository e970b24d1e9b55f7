"""Iteration through progress(): values, counting, ends (exhausted, break, exception, cancel)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from tqdm.std import TqdmKeyError

from jupyter_sse.kernel import JobCancelled, Progress, progress, tqdm, trange
from jupyter_sse.kernel import publisher as publisher_mod
from jupyter_sse.kernel._state import JobState


@pytest.fixture(autouse=True)
def no_server() -> Iterator[publisher_mod.Publisher]:
    pub = publisher_mod.configure(None)
    yield pub
    pub.close()


def quiet(iterable: object = None, **kwargs: object) -> Progress[object]:
    return progress(iterable, file=io.StringIO(), **kwargs)  # type: ignore[arg-type]


def gen(n: int) -> Iterator[int]:
    yield from range(n)


KINDS = {
    "range": lambda: range(7),
    "list": lambda: [3, 1, 4, 1, 5, 9, 2],
    "tuple": lambda: ("a", "b", "c", "d", "e", "f", "g"),
    "str": lambda: "abcdefg",
    "ndarray": lambda: np.arange(7) * 2,
    "ndarray2d": lambda: np.arange(14).reshape(7, 2),
    "generator": lambda: gen(7),
    "dict": lambda: {f"k{i}": i for i in range(7)},
    "dict_items": lambda: {f"k{i}": i for i in range(7)}.items(),
    "set": lambda: set(range(7)),
    "list_iterator": lambda: iter([1, 2, 3, 4, 5, 6, 7]),
    "reversed": lambda: reversed([1, 2, 3, 4, 5, 6, 7]),
}


def job_of(p: Any) -> JobState:
    assert p._job is not None
    return p._job


@pytest.mark.parametrize("kind", KINDS)
def test_values_and_order_are_those_of_the_bare_loop(kind: str) -> None:
    expected = [repr(x) for x in KINDS[kind]()]
    p = quiet(KINDS[kind]())
    got = [repr(x) for x in p]
    assert got == expected
    assert job_of(p).state == "succeeded"
    assert job_of(p).count == 7


@pytest.mark.parametrize("kind", KINDS)
def test_n_counts_items_done_while_inside_each_item(kind: str) -> None:
    p = quiet(KINDS[kind]())
    seen = []
    for _ in p:
        seen.append(p.n)
    assert seen == list(range(7))  # tqdm semantics: inside item k, k are done
    assert p.n == 7


def test_total_comes_from_len_and_unknown_for_generators() -> None:
    assert quiet(range(5)).total == 5
    assert quiet(np.zeros(4)).total == 4
    assert quiet(gen(3)).total is None
    assert quiet(gen(3), total=3).total == 3
    assert quiet(gen(3), total=float("inf")).total is None


@pytest.mark.parametrize("kind", ["range", "list", "generator", "dict"])
def test_break_ends_succeeded_at_the_count_reached(kind: str) -> None:
    p = quiet(KINDS[kind]())
    for i, _ in enumerate(p):
        if i == 5:
            break
    job = job_of(p)
    assert job.state == "succeeded"
    assert job.count == 5
    assert job.message.startswith("stopped early at 5")


def test_return_from_a_function_ends_succeeded() -> None:
    def first_big(p: Progress[int]) -> int:
        for x in p:
            if x > 2:
                return x
        return -1

    p = quiet(range(10))
    assert first_big(p) == 3  # type: ignore[arg-type]
    assert job_of(p).state == "succeeded"
    assert job_of(p).count == 3


def test_exception_in_the_loop_ends_failed_outside_ipython() -> None:
    p = quiet(range(10))
    with pytest.raises(ValueError):
        for x in p:
            if x == 4:
                raise ValueError("boom")
    job = job_of(p)
    assert job.state == "failed"
    assert job.count == 4
    assert job.error is not None and job.error["type"] == "Exception"


def test_exception_inside_with_ends_failed_with_the_real_error() -> None:
    with pytest.raises(ValueError), quiet(range(10)) as p:
        for x in p:
            if x == 4:
                raise ValueError("boom")
    job = job_of(p)
    assert job.state in ("failed",)
    assert job.error is not None and job.error["type"] in ("ValueError", "Exception")


def test_generator_that_raises_fails_the_job() -> None:
    def bad() -> Iterator[int]:
        yield 1
        raise RuntimeError("source broke")

    p = quiet(bad())
    with pytest.raises(RuntimeError):
        for _ in p:
            pass
    assert job_of(p).state == "failed"


def test_zip_with_a_shorter_iterable_is_a_normal_early_exit() -> None:
    p = quiet(range(10))
    pairs = []
    for pair in zip(p, "abc", strict=False):
        pairs.append(pair)
    assert len(pairs) == 3
    assert job_of(p).state == "succeeded"


@pytest.mark.parametrize("kind", ["range", "list", "tuple", "str", "ndarray", "ndarray2d", "generator", "dict", "set"])
def test_cancel_raises_job_cancelled_at_the_next_step(kind: str) -> None:
    p = quiet(KINDS[kind]())
    job = job_of(p)
    steps = []
    with pytest.raises(JobCancelled) as info:
        for i, _ in enumerate(p):
            steps.append(i)
            if i == 3:
                job.request_cancel()  # what the publisher thread does on {"cancel": [id]}
    assert steps == [0, 1, 2, 3]
    assert info.value.job_id == job.id
    assert job.state == "cancelled"
    assert job.count == 3


def test_cancel_from_another_thread_stops_a_running_loop() -> None:
    p = quiet(range(10**9))
    job = job_of(p)
    timer = threading.Timer(0.05, job.request_cancel)
    timer.start()
    with pytest.raises(JobCancelled):
        for _ in p:
            pass
    timer.join()
    assert job.state == "cancelled"
    assert 0 < job.count < 10**9


def test_nested_loops_record_the_parent() -> None:
    outer = quiet(range(2))
    inners = []
    for _ in outer:
        inner = quiet(range(3))
        for _ in inner:
            pass
        inners.append(inner)
    assert all(job_of(i).parent == job_of(outer).id for i in inners)
    assert job_of(outer).parent is None
    assert quiet(range(1))._job is not None


def test_disable_is_a_plain_passthrough() -> None:
    data = [1, 2, 3]
    p = quiet(data, disable=True)
    assert p._job is None
    assert type(iter(p)) is type(iter(data))
    assert list(p) == data
    p.update()
    p.set_postfix(a=1)
    p.close()


@pytest.mark.parametrize("make", [tqdm, progress])
def test_tqdm_arguments_are_accepted(make: Any) -> None:
    p = make(
        range(3),
        desc="d",
        leave=False,
        file=io.StringIO(),
        ncols=80,
        mininterval=0.5,
        maxinterval=5,
        miniters=1,
        ascii=True,
        unit="batch",
        unit_scale=True,
        dynamic_ncols=True,
        smoothing=0.1,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}",
        initial=0,
        position=1,
        postfix={"loss": 0.5},
        unit_divisor=1024,
        write_bytes=False,
        lock_args=None,
        nrows=10,
        colour="green",
        delay=0.1,
        gui=False,
    )
    assert list(p) == [0, 1, 2]
    job = job_of(p)
    assert (job.name, job.unit, job.state, job.message) == ("d", "batch", "succeeded", "loss=0.5")


def test_unknown_arguments_are_ignored_by_progress_and_rejected_by_tqdm_as_tqdm_does() -> None:
    assert list(quiet(range(2), some_future_tqdm_option=True)) == [0, 1]
    with pytest.raises(TqdmKeyError):
        tqdm(range(2), file=io.StringIO(), some_future_tqdm_option=True)


def test_trange_and_len() -> None:
    t = trange(2, 8, 2, file=io.StringIO())
    assert len(t) == 3
    assert list(t) == [2, 4, 6]
    with pytest.raises(TypeError):
        len(quiet(gen(2)))


def test_manual_bar_update_postfix_description_and_close() -> None:
    p = quiet(total=10, desc="train")
    job = job_of(p)
    assert job.state == "running"
    p.update(3)
    p.update()
    assert p.n == 4
    p.set_postfix(loss=0.123456, acc="9", ordered_dict={"epoch": 2})
    assert p.postfix == "epoch=2, acc=9, loss=0.123"
    p.set_postfix_str("hello")
    assert job.message == "hello"
    p.set_description("eval")
    assert (p.desc, job.name) == ("eval", "eval")
    p.total = 20
    assert job.total == 20
    p.close()
    assert job.state == "succeeded"
    assert job.count == 4


def test_manual_bar_in_with_ends_by_its_exception() -> None:
    with quiet(total=3) as p:
        p.update()
    assert job_of(p).state == "succeeded"
    with pytest.raises(KeyError), quiet(total=3) as p2:
        raise KeyError("x")
    assert job_of(p2).state == "failed"
    assert job_of(p2).error == {"type": "KeyError", "message": "'x'"}
    with pytest.raises(KeyboardInterrupt), quiet(total=3) as p3:
        raise KeyboardInterrupt
    assert job_of(p3).state == "cancelled"


def test_manual_update_raises_when_cancel_was_requested() -> None:
    p = quiet(total=5)
    p.update()
    job_of(p).request_cancel()
    with pytest.raises(JobCancelled):
        p.update()
    assert job_of(p).state == "cancelled"


def test_reset_starts_over() -> None:
    p = quiet(total=5)
    p.update(5)
    p.reset(total=7)
    assert (p.n, p.total) == (0, 7)
    p.close()


def test_iterating_twice_makes_two_jobs() -> None:
    p = quiet([1, 2])
    assert list(p) == [1, 2]
    first = job_of(p).id
    assert list(p) == [1, 2]
    assert job_of(p).id != first
    assert job_of(p).state == "succeeded"


def test_write_prints_a_line() -> None:
    out = io.StringIO()
    tqdm.write("hello", file=out)
    assert out.getvalue() == "hello\n"


def test_updates_after_close_are_ignored() -> None:
    p = quiet(total=5)
    p.update(2)
    p.close()
    p.update(3)
    p.n = 5
    p.set_description("renamed")
    p.set_postfix_str("late")
    p.total = 9
    job = job_of(p)
    assert (job.state, job.count, job.name, job.message, job.total) == ("succeeded", 2, "", "", 5)


def test_close_in_a_finally_while_an_exception_propagates_fails_with_it() -> None:
    p = quiet(total=10)
    with pytest.raises(KeyError):
        try:
            p.update(4)
            raise KeyError("k")
        finally:
            p.close()
    assert (job_of(p).state, job_of(p).count) == ("failed", 4)
    assert job_of(p).error == {"type": "KeyError", "message": "'k'"}


BAD_TOTALS = [(-1, ValueError), (float("nan"), ValueError), ("ten", TypeError), (False, TypeError), ([3], TypeError)]


@pytest.mark.parametrize(("total", "error"), BAD_TOTALS)
def test_bad_total_raises_at_the_call_and_publishes_nothing(total: Any, error: type[Exception]) -> None:
    pub = publisher_mod.get_publisher()
    with pytest.raises(error, match="total"):
        progress(range(3), total=total)
    with pytest.raises(error, match="total"):
        progress(total=total)
    p = quiet(total=3)
    with pytest.raises(error, match="total"):
        p.total = total
    assert p.total == 3
    p.close()
    assert pub.jobs() == []


def test_nothing_to_iterate_raises_at_the_call_and_publishes_nothing() -> None:
    pub = publisher_mod.get_publisher()
    with pytest.raises(TypeError, match="iterable"):
        progress(None)
    with pytest.raises(TypeError, match="iterable"):
        progress(42)  # type: ignore[arg-type]
    assert pub.jobs() == []


def test_totals_tqdm_accepts_still_work() -> None:
    assert quiet(gen(2), total=np.int64(2)).total == 2
    assert quiet(gen(2), total=2.5).total == 2.5
    assert quiet(gen(2), total=0).total == 0
    assert quiet(total=float("inf")).total is None
