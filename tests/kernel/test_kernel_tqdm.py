"""jupyter_sse.tqdm is a real tqdm: tqdm's APIs work on it, and its job follows the bar (ends, cancel, after close).

The jobs are read from a recording display (the display factory is the public hook for other displays); what
reaches a real server from a real kernel is in tests/integration/test_kernel_tqdm_api.py.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import tqdm.std
from tqdm.contrib.concurrent import process_map, thread_map
from tqdm.contrib.logging import logging_redirect_tqdm

import jupyter_sse
from jupyter_sse.kernel import JobCancelled
from jupyter_sse.kernel import publisher as publisher_mod
from jupyter_sse.kernel._state import JobState
from tests.kernel._local_jobs import named, recording_jobs


@pytest.fixture(autouse=True)
def jobs() -> Iterator[list[JobState]]:
    with recording_jobs() as started:
        yield started


tqdm_cls = jupyter_sse.tqdm


def square(x: int) -> int:
    return x * x


def test_it_is_a_tqdm_subclass_with_tqdms_helpers() -> None:
    assert issubclass(tqdm_cls, tqdm.std.tqdm)
    assert isinstance(jupyter_sse.trange(3), tqdm.std.tqdm)
    assert tqdm_cls.format_sizeof(12345) == "12.3k"
    assert tqdm_cls.format_interval(100) == "01:40"
    assert "1/10" in tqdm_cls.format_meter(1, 10, 1.0)
    assert tqdm_cls._instances is tqdm.std.tqdm._instances
    with tqdm_cls.external_write_mode():
        pass
    lock = tqdm_cls.get_lock()
    tqdm_cls.set_lock(lock)
    assert tqdm_cls._lock is lock


def test_pandas_progress_apply_that_raises_ends_failed_at_the_row_reached(jobs: list[JobState]) -> None:
    tqdm_cls.pandas(desc="rows")
    frame = pd.DataFrame({"x": range(200)})

    def on_row(x: int) -> int:
        if x == 119:  # the 120th row
            raise ValueError("bad row 120")
        return x

    with pytest.raises(ValueError, match="bad row"):
        frame["x"].progress_apply(on_row)
    job = named(jobs, "rows")
    assert (job.state, job.count, job.total) == ("failed", 120, 200)
    assert job.error == {"type": "ValueError", "message": "bad row 120"}


def test_pandas_progress_apply_that_succeeds(jobs: list[JobState]) -> None:
    tqdm_cls.pandas(desc="ok rows")
    out = pd.DataFrame({"x": range(50)})["x"].progress_apply(square)
    assert out.sum() == sum(x * x for x in range(50))
    assert (named(jobs, "ok rows").state, named(jobs, "ok rows").count) == ("succeeded", 50)


def test_thread_map_twice(jobs: list[JobState]) -> None:
    for i in range(2):
        assert thread_map(square, range(10), tqdm_class=tqdm_cls, desc=f"map {i}", max_workers=2) == [
            x * x for x in range(10)
        ]
        job = named(jobs, f"map {i}")
        assert (job.state, job.count, job.total) == ("succeeded", 10, 10)


def test_process_map_twice(jobs: list[JobState]) -> None:
    for i in range(2):
        got = process_map(square, range(6), tqdm_class=tqdm_cls, desc=f"pmap {i}", max_workers=2, chunksize=1)
        assert got == [x * x for x in range(6)]
        assert named(jobs, f"pmap {i}").state == "succeeded"


def test_logging_redirect_and_write_go_through_tqdm_write() -> None:
    out = io.StringIO()
    log = logging.getLogger("jupyter_sse.tests.redirect")
    log.propagate = False
    log.addHandler(logging.StreamHandler(out))
    with logging_redirect_tqdm(loggers=[log], tqdm_class=tqdm_cls):
        for i in tqdm_cls(range(3), desc="logged"):
            log.warning("step %d", i)
    tqdm_cls.write("done", file=out)
    assert out.getvalue().splitlines() == ["step 0", "step 1", "step 2", "done"]


def test_updates_after_close_are_ignored(jobs: list[JobState]) -> None:
    bar = tqdm_cls(total=5, desc="closed early")
    bar.update(2)
    bar.close()
    bar.update(3)
    bar.set_description("renamed")
    bar.set_postfix(loss=1)
    bar.n = 5
    job = named(jobs, "closed early")
    assert (job.state, job.count, job.n(), job.message) == ("succeeded", 2, 2, "")


def test_bar_closed_in_a_finally_while_an_exception_propagates_fails_with_it(jobs: list[JobState]) -> None:
    bar = tqdm_cls(total=10, desc="finally")
    with pytest.raises(KeyError):
        try:
            bar.update(4)
            raise KeyError("k")
        finally:
            bar.close()
    job = named(jobs, "finally")
    assert (job.state, job.count, job.error) == ("failed", 4, {"type": "KeyError", "message": "'k'"})


def test_close_inside_an_except_block_that_handles_another_exception_succeeds(jobs: list[JobState]) -> None:
    try:
        raise OSError("handled before the bar ran")
    except OSError:
        for _ in tqdm_cls(range(3), desc="in handler"):
            pass
    assert named(jobs, "in handler").state == "succeeded"


def test_loop_ends(jobs: list[JobState]) -> None:
    for i in tqdm_cls(range(10), desc="break"):
        if i == 4:
            break
    with pytest.raises(ValueError):
        for i in tqdm_cls(range(10), desc="body raises"):
            if i == 4:
                raise ValueError("boom")

    def source() -> Iterator[int]:
        yield 1
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        for _ in tqdm_cls(source(), desc="source raises"):
            pass
    assert [x for x in tqdm_cls(range(3), desc="whole")] == [0, 1, 2]
    brk, body, src, whole = (named(jobs, n) for n in ("break", "body raises", "source raises", "whole"))
    assert (brk.state, brk.count, brk.message) == ("succeeded", 4, "stopped early at 4/10")
    assert (body.state, body.count) == ("failed", 4)
    assert (src.state, src.error) == ("failed", {"type": "RuntimeError", "message": "source broke"})
    assert (whole.state, whole.count, whole.total) == ("succeeded", 3, 3)


def test_with_block_ends_by_its_exception(jobs: list[JobState]) -> None:
    with pytest.raises(KeyboardInterrupt), tqdm_cls(total=3, desc="interrupted") as bar:
        bar.update()
        raise KeyboardInterrupt
    with tqdm_cls(total=3, desc="fine") as bar:
        bar.update(3)
    assert named(jobs, "interrupted").state == "cancelled"
    assert (named(jobs, "fine").state, named(jobs, "fine").count) == ("succeeded", 3)


def test_cancel_raises_at_the_next_refresh_of_the_loop(jobs: list[JobState]) -> None:
    bar = tqdm_cls(range(10**9), desc="cancel me", mininterval=0.01)
    timer = threading.Timer(0.05, lambda: named(jobs, "cancel me").request_cancel())
    timer.start()
    with pytest.raises(JobCancelled):
        for _ in bar:
            pass
    timer.join()
    job = named(jobs, "cancel me")
    assert job.state == "cancelled"
    assert 0 < job.count < 10**9


def test_manual_update_raises_once_cancelled(jobs: list[JobState]) -> None:
    bar = tqdm_cls(total=5, desc="manual cancel")
    bar.update()
    named(jobs, "manual cancel").request_cancel()
    with pytest.raises(JobCancelled):
        bar.update()
    assert named(jobs, "manual cancel").state == "cancelled"
    bar.update()  # closed now: ignored, as tqdm ignores updates after close


def test_description_postfix_total_and_reset_follow_the_bar(jobs: list[JobState]) -> None:
    bar = tqdm_cls(total=10, desc="first", metadata={"run": 1})
    job = named(jobs, "first")
    assert job.metadata == {"run": 1}
    bar.update(3)
    assert job.n() == 3
    bar.set_description("second")
    bar.set_postfix(loss=0.5)
    assert (job.name, job.message) == ("second", "loss=0.5")
    bar.total = 20
    bar.refresh()
    assert job.total == 20
    bar.reset(total=7)
    assert (job.n(), job.total) == (0, 7)
    bar.close()


def test_disabled_bar_makes_no_job(jobs: list[JobState]) -> None:
    assert list(tqdm_cls(range(3), disable=True)) == [0, 1, 2]
    assert jobs == []


def test_disable_none_keeps_the_bar_on_when_not_a_terminal(jobs: list[JobState]) -> None:
    assert list(tqdm_cls(range(2), disable=None, file=io.StringIO(), desc="not a tty")) == [0, 1]
    assert named(jobs, "not a tty").state == "succeeded"


@pytest.mark.parametrize(
    ("total", "error"), [(-1, ValueError), (float("nan"), ValueError), ("ten", TypeError), (True, TypeError)]
)
def test_bad_total_raises_at_the_call_and_publishes_nothing(
    jobs: list[JobState], total: Any, error: type[Exception]
) -> None:
    before = len(tqdm.std.tqdm._instances)
    with pytest.raises(error):
        tqdm_cls(range(3), total=total)
    with pytest.raises(error):
        jupyter_sse.trange(3, total=total)
    assert jobs == []
    assert publisher_mod.get_publisher().jobs() == []
    assert len(tqdm.std.tqdm._instances) == before


def test_infinite_total_is_unknown_as_in_tqdm(jobs: list[JobState]) -> None:
    bar = tqdm_cls(total=float("inf"), desc="inf")
    assert bar.total is None
    bar.close()
    assert named(jobs, "inf").total is None
