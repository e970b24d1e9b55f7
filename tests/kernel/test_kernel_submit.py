"""submit(): background jobs in the kernel process, without a server (the publisher only tracks them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import jupyter_sse
from jupyter_sse.kernel import JobCancelled, SubmittedJob, context, job, progress, submit
from jupyter_sse.kernel import publisher as publisher_mod

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def no_server() -> Iterator[publisher_mod.Publisher]:
    pub = publisher_mod.configure(None)
    yield pub
    pub.close()


def test_exported_from_the_package() -> None:
    assert jupyter_sse.submit is submit
    assert "submit" in jupyter_sse.__all__


def test_returns_at_once_and_gives_the_result() -> None:
    gate = threading.Event()

    def work(a: int, b: int, *, scale: int = 1) -> int:
        gate.wait(5)
        return (a + b) * scale

    started = time.monotonic()
    handle = submit(work, 2, 3, scale=10)
    assert time.monotonic() - started < 0.5  # did not wait for fn
    assert isinstance(handle, SubmittedJob)
    assert handle.state == "running" and not handle.done()
    assert handle._state.name == "work"
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.05)
    gate.set()
    assert handle.result(timeout=5) == 50
    assert handle.done() and handle.state == "succeeded"
    assert handle.exception() is None
    assert handle.cancel() is False  # it had ended


def test_failure_is_reraised_and_recorded() -> None:
    def boom() -> None:
        raise ValueError("bad input")

    handle = submit(boom, name="explode")
    with pytest.raises(ValueError, match="bad input"):
        handle.result(timeout=5)
    assert handle.state == "failed"
    assert handle._state.error == {"type": "ValueError", "message": "bad input"}
    assert isinstance(handle.exception(), ValueError)


def test_progress_inside_reports_as_child_and_cancel_reaches_it() -> None:
    seen: dict[str, object] = {}
    inside = threading.Event()

    def train() -> None:
        seen["parent_at_start"] = context.current_parent()
        bar = progress(range(10_000), desc="epoch")
        for i in bar:
            if i == 0:
                seen["child"] = publisher_mod.get_publisher().get(bar.job_id or "")
                inside.set()
            time.sleep(0.002)

    handle = submit(train, name="train", total=1)
    assert inside.wait(5)
    child = seen["child"]
    assert seen["parent_at_start"] == handle.job_id
    assert child is not None and child.parent == handle.job_id  # type: ignore[attr-defined]
    assert handle.cancel() is True
    with pytest.raises(JobCancelled):
        handle.result(timeout=5)
    assert handle.state == "cancelled"
    assert child.state == "cancelled"  # type: ignore[attr-defined]


def test_cancel_from_the_server_reply_cascades_to_job_steps() -> None:
    """The publisher thread calls request_cancel on the submitted job only: a job() step inside must raise."""
    inside = threading.Event()

    def steps() -> str:
        with job("inner", total=1000) as j:
            inside.set()
            for _ in range(1000):
                time.sleep(0.002)
                j.update()
        return "finished"

    handle = submit(steps)
    assert inside.wait(5)
    handle._state.request_cancel()  # what Publisher._apply_reply does for {"cancel": [id]}
    with pytest.raises(JobCancelled):
        handle.result(timeout=5)
    assert handle.state == "cancelled"


def test_fn_that_swallows_the_cancel_still_ends_cancelled() -> None:
    inside = threading.Event()

    def stubborn() -> str:
        try:
            for _ in progress(range(10_000)):
                inside.set()
                time.sleep(0.002)
        except JobCancelled:
            return "stopped"
        return "finished"

    handle = submit(stubborn)
    assert inside.wait(5)
    handle.cancel()
    with pytest.raises(JobCancelled):
        handle.result(timeout=5)
    assert handle.state == "cancelled"


def test_the_callers_thread_is_not_left_inside_the_job() -> None:
    gate = threading.Event()
    handle = submit(gate.wait, 5)
    try:
        # a loop in a later cell (the main thread) must not become a child of the background job
        assert context.current_parent() is None
        bar = progress(range(3), leave=False)
        for _ in bar:
            state = publisher_mod.get_publisher().get(bar.job_id or "")
            assert state is not None and state.parent is None
    finally:
        gate.set()
    assert handle.result(timeout=5) is True


def test_the_thread_is_a_daemon_and_the_handle_shows_as_text() -> None:
    gate = threading.Event()
    handle = submit(gate.wait, 5, name="waiter")
    try:
        assert handle._thread is not None and handle._thread.daemon
        bundle = handle._repr_mimebundle_()
        # the live view was displayed at submit time; the handle itself only repeats as text
        assert list(bundle) == ["text/plain"] and "waiter" in bundle["text/plain"]
    finally:
        gate.set()
    handle.result(timeout=5)


def test_not_callable() -> None:
    with pytest.raises(TypeError):
        submit(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(("total", "error"), [(-1, ValueError), (float("nan"), ValueError), ("ten", TypeError)])
def test_bad_total_raises_at_the_call_runs_nothing_and_publishes_nothing(
    no_server: publisher_mod.Publisher, total: object, error: type[Exception]
) -> None:
    threads = set(threading.enumerate())
    with pytest.raises(error, match="total"):
        submit(print, total=total)  # type: ignore[arg-type]
    assert no_server.jobs() == []
    assert set(threading.enumerate()) <= threads  # no thread was started for it


def test_the_handle_steps_its_own_job_and_raises_once_cancelled() -> None:
    ready = threading.Event()
    holder: list[SubmittedJob] = []

    def work() -> None:
        ready.wait(5)
        h = holder[0]
        for _ in range(10_000):
            h.update()
            h.message("working")
            time.sleep(0.001)

    handle = submit(work, name="counted", total=10_000)
    holder.append(handle)
    ready.set()
    deadline = time.monotonic() + 5
    while handle._state.count < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handle._state.count >= 5 and handle._state.message == "working"
    handle.cancel()
    with pytest.raises(JobCancelled):
        handle.result(timeout=5)
    assert handle.state == "cancelled"
    assert handle._state.count < 10_000
