"""Forked children: no lock inherited in a held state hangs them, and their final states reach the server
however they leave (``os._exit`` as multiprocessing does, under a parent job or not)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_sse.kernel import job, progress
from jupyter_sse.kernel import publisher as publisher_mod
from jupyter_sse.kernel._state import END_LOCK
from tests.kernel._recorder import Recorder, server

__all__ = ["server"]  # the fixture, re-exported for pytest

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only"),
    # forking a process that runs threads is what this module is about
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

CHILD_ALARM = 10  # seconds: a child still running then is hung, and SIGALRM ends it


@pytest.fixture
def publish(server: tuple[Recorder, str]) -> Iterator[tuple[Recorder, publisher_mod.Publisher]]:
    rec, url = server
    pub = publisher_mod.configure(url, "secret-token", interval=0.02, flush_timeout=2.0)
    yield rec, pub
    pub.close()
    publisher_mod.configure(None)


def fork_child(name: str, steps: int = 5) -> int:
    """Fork a child that runs a short ``progress`` loop named ``name`` and leaves with ``os._exit(0)``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not pytest-timeout's handler: die, do not unwind
            signal.alarm(CHILD_ALARM)
            for _ in progress(range(steps), desc=name, file=io.StringIO()):
                pass
            code = 0
        finally:
            os._exit(code)
    return pid


def reap(pid: int, timeout: float = CHILD_ALARM + 5) -> int:
    """The child's wait status (it is under an alarm, so it ends by then)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not end")
        time.sleep(0.01)


def final_states(rec: Recorder, names: list[str]) -> dict[str, str | None]:
    with rec.lock:
        merged: dict[str, dict[str, Any]] = {}
        for body in rec.bodies:
            for update in body["jobs"]:
                merged.setdefault(update["id"], {}).update(update)
    by_name = {u.get("name"): u.get("state") for u in merged.values()}
    return {name: by_name.get(name) for name in names}


def test_a_lock_held_by_another_thread_at_fork_does_not_hang_the_child(publish: tuple[Recorder, Any]) -> None:
    rec, _ = publish
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with END_LOCK:  # as the publisher thread holds it while it builds a batch
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        pid = fork_child("held-at-fork")
    finally:
        release.set()
        holder.join()
    status = reap(pid)
    assert os.waitstatus_to_exitcode(status) == 0, "the child hung on a lock held at fork time"
    assert final_states(rec, ["held-at-fork"]) == {"held-at-fork": "succeeded"}


_WATCH_THE_THREADS_IMPORTS = """
import io, sys, threading
imported = []

def hook(event, args):
    if event == "import" and threading.current_thread().name == "jupyter-sse-publisher":
        imported.append(args[0])

sys.addaudithook(hook)
from jupyter_sse.kernel import progress, publisher
publisher.configure(sys.argv[1], "secret-token", interval=0.02)
for _ in progress(range(3), desc="watched", file=io.StringIO()):
    pass
publisher.get_publisher().close()
print(imported)
"""


def test_the_publisher_thread_imports_nothing(server: tuple[Recorder, str]) -> None:
    """A fork while our thread is inside an import would leave that module's lock held in the child for good (CPython
    re-makes only the global import lock): the child hung at its first use of tqdm.std. So the thread never imports;
    a fresh interpreter shows it, as the test process has imported everything already."""
    rec, url = server
    done = subprocess.run(
        [sys.executable, "-c", _WATCH_THE_THREADS_IMPORTS, url], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
    assert final_states(rec, ["watched"]) == {"watched": "succeeded"}


_COUNT_THE_IMPORTS_OF_LATER_JOBS = """
import builtins
from jupyter_sse.kernel import publisher
from jupyter_sse.kernel._state import JobState
real_import = builtins.__import__
imported = []

def counting(name, globals=None, locals=None, fromlist=(), level=0):
    if globals is not None and globals.get("__name__") == publisher.__name__:
        imported.append(name)
    return real_import(name, globals, locals, fromlist, level)

pub = publisher.Publisher(None)  # no server and no display: its thread never starts
pub.add(JobState("first"))
builtins.__import__ = counting
for i in range(100):
    pub.add(JobState(f"later-{i}"))
builtins.__import__ = real_import
assert pub._thread is None
print(imported)
"""


def test_what_the_thread_needs_is_imported_once_a_process() -> None:
    """While no publisher thread runs, every job starts as the first did; the imports for the thread happen for
    the first only (each import statement of a loaded module still costs a lookup, 3.3 us a job in all)."""
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_THE_IMPORTS_OF_LATER_JOBS], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_children_under_a_parent_job_that_leave_with_os_exit_deliver_their_final_state(
    publish: tuple[Recorder, Any],
) -> None:
    rec, _ = publish
    names = [f"child-{i}" for i in range(4)]
    with job("outer") as outer:
        pids = [fork_child(name) for name in names]
        statuses = [reap(pid) for pid in pids]
    assert [os.waitstatus_to_exitcode(s) for s in statuses] == [0] * 4
    # the children waited for their final state before os._exit: it is on the server already
    assert final_states(rec, names) == dict.fromkeys(names, "succeeded")
    with rec.lock:
        parents = {u["parent"] for b in rec.bodies for u in b["jobs"] if u.get("name") in names}
    assert parents == {outer.id}


def test_a_child_whose_sends_fail_still_delivers_its_final_state(publish: tuple[Recorder, Any]) -> None:
    """The child's first sends fail (as from a server that reset the connection): it tries again before leaving,
    where a long-lived process would leave the state pending for its thread to send later."""
    rec, _ = publish
    rec.fail_next = 3
    status = reap(fork_child("retried"))
    assert os.waitstatus_to_exitcode(status) == 0
    assert final_states(rec, ["retried"]) == {"retried": "succeeded"}
    assert rec.fail_next == 0


def test_fork_storm_while_jobs_churn(publish: tuple[Recorder, Any]) -> None:
    """Many forks while other threads start and end jobs: no child hangs, none is lost."""
    rec, _ = publish
    forks = int(os.environ.get("JUPYTER_SSE_FORK_STORM", "200"))
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            with job("churn", leave=False) as j:
                j.update()

    churners = [threading.Thread(target=churn) for _ in range(2)]
    for t in churners:
        t.start()
    names = [f"storm-{i}" for i in range(forks)]
    try:
        pids = []
        for name in names:
            pids.append(fork_child(name, steps=3))
            if len(pids) >= 16:  # bounded concurrency on a small machine
                assert os.waitstatus_to_exitcode(reap(pids.pop(0))) == 0
        codes = [os.waitstatus_to_exitcode(reap(pid)) for pid in pids]
    finally:
        stop.set()
        for t in churners:
            t.join()
    assert codes == [0] * len(codes)
    states = final_states(rec, names)
    assert [n for n, s in states.items() if s != "succeeded"] == []
