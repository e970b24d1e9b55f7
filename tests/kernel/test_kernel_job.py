"""job(): a context manager for work that is not a loop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jupyter_sse.kernel import JobCancelled, JobHandle, job, progress
from jupyter_sse.kernel import publisher as publisher_mod


@pytest.fixture(autouse=True)
def no_server() -> Iterator[publisher_mod.Publisher]:
    pub = publisher_mod.configure(None)
    yield pub
    pub.close()


def test_normal_exit_succeeds_with_the_count() -> None:
    with job("load", total=3, unit="file", leave=False) as j:
        assert isinstance(j, JobHandle)
        assert j.state == "running"
        j.update()
        j.update(2)
        j.message("almost")
        j.log("line 1\nline 2")
    assert j.state == "succeeded"
    assert j.n == 3
    assert j._state.message == "almost"
    assert j._state.unit == "file"


def test_set_and_settable_total() -> None:
    with job("x", leave=False) as j:
        j.total = 50
        j.set(20)
        assert (j.n, j.total) == (20, 50)
        j.total = float("inf")
        assert j.total is None


def test_exception_fails_with_the_error_and_is_reraised() -> None:
    with pytest.raises(ValueError, match="boom"), job("x", leave=False) as j:
        raise ValueError("boom")
    assert j.state == "failed"
    assert j._state.error == {"type": "ValueError", "message": "boom"}


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), JobCancelled("abc")])
def test_interrupt_or_job_cancelled_cancels_and_is_reraised(exc: BaseException) -> None:
    with pytest.raises(type(exc)), job("x", leave=False) as j:
        raise exc
    assert j.state == "cancelled"
    assert j._state.error is None


@pytest.mark.parametrize("step", ["update", "set", "message", "log"])
def test_every_step_raises_job_cancelled_once_cancel_was_requested(step: str) -> None:
    calls = {
        "update": lambda j: j.update(),
        "set": lambda j: j.set(1),
        "message": lambda j: j.message("m"),
        "log": lambda j: j.log("l"),
    }
    with pytest.raises(JobCancelled) as info, job("x", leave=False) as j:
        j.update()
        j._state.request_cancel()
        calls[step](j)
        pytest.fail("the step should have raised")
    assert info.value.job_id == j.id
    assert j.state == "cancelled"
    assert "cancel" in str(info.value)


def test_job_ids_are_valid_protocol_ids() -> None:
    import re

    ids = {job("x").id for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)


def test_a_loop_inside_a_job_is_its_child() -> None:
    import io

    with job("outer", leave=False) as j:
        p = progress(range(3), file=io.StringIO())
        list(p)
    assert p._job is not None and p._job.parent == j.id


@pytest.mark.parametrize(("total", "error"), [(-1, ValueError), (float("nan"), ValueError), ("ten", TypeError)])
def test_bad_total_raises_at_the_call_and_publishes_nothing(
    no_server: publisher_mod.Publisher, total: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="total"):
        job("bad", total=total)  # type: ignore[arg-type]
    with job("ok", total=3) as j:
        with pytest.raises(error, match="total"):
            j.total = total  # type: ignore[assignment]
        assert j.total == 3
    assert no_server.jobs() == []


def test_steps_after_the_end_change_nothing() -> None:
    with job("done", total=3) as j:
        j.update(2)
        j.message("two")
    j.update(5)
    j.set(9)
    j.message("late")
    assert (j.n, j._state.message, j.state) == (2, "two", "succeeded")
