"""What the SQLite store promises under faults: a change that cannot be stored is refused (503) and changes
nothing, in memory either; ids never go back; one server per file; a corrupt file is moved aside, never
deleted; a finished job refuses further updates, except the very same final state sent again.

The faults are SQLite's own: ``PRAGMA max_page_count`` makes the file full (SQLITE_FULL, the error a full disk
gives), a lock held by another connection, and a file of garbage is a real file.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jupyter_sse.core import Broker, ProtocolError, Subscription, parse_update_batch
from jupyter_sse.core.store import StoreUnavailable
from jupyter_sse.core.store_sqlite import SQLiteStore, open_store


def _apply(broker: Broker, body: dict[str, Any]) -> list[str]:
    return broker.apply(parse_update_batch(json.dumps(body).encode()))


def _state(broker: Broker) -> list[tuple[Any, ...]]:
    """Everything a reader can see of the broker's jobs."""
    store = broker.store
    return [
        (e.job.to_dict(), e.seq, list(e.logs), e.last_dropped_seq)
        for e in sorted(store.entries(), key=lambda e: e.job.id)
    ]


def _read(sub: Subscription) -> list[Any]:
    async def read() -> list[Any]:
        return await sub.next_events(0)

    return asyncio.run(read())


def _fill(store: SQLiteStore) -> None:
    """Let the file hold no page more than it has: the next write that needs one fails with SQLITE_FULL."""
    store.flush()
    (pages,) = store._db.execute("PRAGMA page_count").fetchone()
    store._db.execute(f"PRAGMA max_page_count = {pages}")


def _make_room(store: SQLiteStore) -> None:
    store._db.execute("PRAGMA max_page_count = 1073741823")


_BIG = ["x" * 2000] * 50  # 100 kB of log lines: more pages than a full file has to spare


def test_a_batch_that_cannot_be_stored_is_refused_with_503_and_changes_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "jobs.sqlite3", log_lines_kept=60)
    broker = Broker(store, log_lines_kept=60)
    _apply(
        broker,
        {"jobs": [{"id": "run", "n": 1}, {"id": "other", "n": 1}], "logs": [{"job": "run", "lines": ["a"] * 59}]},
    )
    sub = broker.subscribe()
    _read(sub)
    before = _state(broker)
    _fill(store)
    batch = {
        "jobs": [{"id": "run", "n": 9, "state": "failed"}, {"id": "new", "name": "fresh"}, {"id": "other", "n": 2}],
        "logs": [{"job": "run", "lines": _BIG}, {"job": "new", "lines": ["hello"]}],
    }
    with pytest.raises(ProtocolError) as info:
        _apply(broker, batch)
    assert (info.value.status, info.value.error) == (503, "storage_unavailable")
    assert isinstance(info.value, StoreUnavailable)
    assert "full" in str(store.fault)
    # Nothing changed in memory either: not the state, not the logs (retention had dropped old lines), no new job.
    assert _state(broker) == before
    assert _read(sub) == []
    # A progress-only change needs no write before its answer: it is still accepted while the file is full.
    _apply(broker, {"jobs": [{"id": "other", "n": 3}]})
    assert broker.get("other").n == 3
    # Space is back: the very same batch goes through, once.
    _make_room(store)
    _apply(broker, batch)
    assert store.fault is None
    assert (broker.get("run").state, broker.get("new").name) == ("failed", "fresh")
    assert [line for _, line in store.get("run").logs] == (["a"] * 59 + _BIG)[-60:]
    names = [e.name for e in _read(sub)]
    assert names.count("job") == 3
    store.close()
    # And it is what a restart finds.
    reopened = Broker(SQLiteStore(tmp_path / "jobs.sqlite3", log_lines_kept=60), log_lines_kept=60)
    assert (reopened.get("run").state, reopened.get("new").name) == ("failed", "fresh")


def test_a_cancel_or_delete_that_cannot_be_stored_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SQLiteStore(path)
    broker = Broker(store)
    _apply(broker, {"jobs": [{"id": "run"}, {"id": "done", "state": "succeeded"}]})
    before = _state(broker)
    # Writes fail for another reason than space: another connection holds the write lock, as a stuck writer would.
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    store._db.execute("PRAGMA busy_timeout = 0")
    try:
        with pytest.raises(StoreUnavailable):
            broker.request_cancel("run")
        with pytest.raises(StoreUnavailable):
            broker.delete("done")
        assert _state(broker) == before
        assert store.fault is not None
    finally:
        other.execute("ROLLBACK")
        other.close()
    job, asked = broker.request_cancel("run")
    assert asked and job.cancel_requested
    broker.delete("done")
    store.close()
    reopened = Broker(SQLiteStore(path))
    assert [j.id for j in reopened.list_jobs()] == ["run"]
    assert reopened.get("run").cancel_requested


KILL_AFTER = """
import json, os, signal, sys
from jupyter_sse.core import Broker, parse_update_batch
from jupyter_sse.core.store_sqlite import SQLiteStore
broker = Broker(SQLiteStore(sys.argv[1]))
def apply(body):
    broker.apply(parse_update_batch(json.dumps(body).encode()))
apply({"jobs": [{"id": "gone", "state": "succeeded"}, {"id": "cancel-me"}, {"id": "progress", "n": 1}]})
broker.store.flush()
apply({"jobs": [{"id": "new", "name": "made"}, {"id": "end", "state": "failed"}, {"id": "progress", "n": 2}]})
apply({"logs": [{"job": "new", "lines": ["one", "two"]}]})
broker.request_cancel("cancel-me")
broker.delete("gone")
print(broker.store.current_seq, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no flush, no close: every answer above was a 2xx
"""


def test_what_an_answer_promised_survives_a_sigkill_right_after_it(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    done = subprocess.run([sys.executable, "-c", KILL_AFTER, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    last_id = int(done.stdout)
    store = SQLiteStore(path)
    broker = Broker(store)
    jobs = {job.id: job for job in broker.list_jobs()}
    assert "gone" not in jobs
    assert jobs["new"].name == "made"
    assert [line for _, line in store.get("new").logs] == ["one", "two"]
    assert jobs["end"].state == "failed"
    assert jobs["cancel-me"].cancel_requested
    assert jobs["progress"].n == 1  # progress alone may lag by a flush (1 s in the server)
    assert store.next_seq() > last_id  # ids never go back, though the last ones were never written with a job


def test_ids_come_from_a_mark_written_ahead_not_from_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SQLiteStore(path)
    handed_out = [store.next_seq() for _ in range(25_000)]  # crosses reservations
    assert handed_out == sorted(set(handed_out))
    # No close (as after SIGKILL), and the clock stepped back a day: the next ids are still above all of them.
    monkeypatch.setattr(time, "time_ns", lambda: 0)
    monkeypatch.setattr(time, "time", lambda: 0.0)
    again = SQLiteStore(path)
    assert again.next_seq() > handed_out[-1]
    assert again.horizon >= handed_out[-1]
    assert again.epoch == store.epoch


def test_a_second_server_takes_the_next_free_file_and_a_restarted_one_its_own(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = open_store(path)
    second = open_store(path)
    assert (first.path, second.path) == (path, tmp_path / "jobs-1.sqlite3")
    assert first.publish_token() != second.publish_token()
    Broker(first).apply(parse_update_batch(b'{"jobs": [{"id": "mine", "state": "succeeded"}]}'))
    assert second.get("mine") is None
    token = first.publish_token()
    first.close()
    restarted = open_store(path)  # the second one still runs: the first free file is the first server's own
    assert restarted.path == path
    assert restarted.publish_token() == token
    entry = restarted.get("mine")
    assert entry is not None and entry.job.state == "succeeded"
    restarted.close()
    second.close()


def test_a_corrupt_file_is_moved_aside_and_a_new_one_started(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    garbage = b"this is not an SQLite file " * 100
    path.write_bytes(garbage)
    store = open_store(path)
    assert store.moved_aside is not None
    assert store.moved_aside.read_bytes() == garbage  # kept as it was
    assert store.moved_aside.parent == tmp_path
    assert len(store) == 0
    Broker(store).apply(parse_update_batch(b'{"jobs": [{"id": "a"}]}'))
    store.close()
    assert open_store(path).get("a") is not None


# ---- a finished job refuses further updates ------------------------------------------------------------------


@pytest.mark.parametrize("final", ["succeeded", "failed", "cancelled"])
def test_a_finished_job_refuses_an_update_without_a_state(final: str) -> None:
    broker = Broker()
    _apply(broker, {"jobs": [{"id": "a", "n": 5, "state": final}]})
    before = _state(broker)
    with pytest.raises(ProtocolError) as info:
        _apply(broker, {"jobs": [{"id": "b"}, {"id": "a", "n": 6}]})
    assert (info.value.status, info.value.error) == (409, "job_finished")
    assert _state(broker) == before


def test_the_same_final_state_sent_again_is_accepted_and_changes_nothing() -> None:
    # The publisher's earlier answer was lost: it sends the same batch again, with another job's news in it.
    broker = Broker()
    _apply(broker, {"jobs": [{"id": "b", "n": 1}]})
    retried = {
        "jobs": [{"id": "a", "n": 5, "state": "succeeded"}, {"id": "b", "n": 2}],
        "logs": [{"job": "a", "lines": ["last words"]}],
    }
    _apply(broker, retried)
    sub = broker.subscribe()
    _read(sub)
    finished = broker.get("a").to_dict()
    _apply(broker, retried)
    assert broker.get("a").to_dict() == finished
    assert [line for _, line in broker.store.get("a").logs] == ["last words"]  # not twice
    assert broker.get("b").n == 2
    assert [json.loads(e.data)["id"] for e in _read(sub)] == ["b"]


def test_a_lost_job_still_comes_back_and_hears_a_cancel_asked_before() -> None:
    clock = [1000.0]
    broker = Broker(clock=lambda: clock[0])
    _apply(broker, {"jobs": [{"id": "a", "n": 1}]})
    broker.request_cancel("a")
    assert broker.lose_orphans((), "restart") == ["a"]
    assert broker.get("a").state == "lost"
    assert _apply(broker, {"jobs": [{"id": "a", "n": 2}]}) == ["a"]
    assert broker.get("a").state == "running"


def test_orphans_are_jobs_of_kernels_not_running_here() -> None:
    broker = Broker()
    _apply(broker, {"jobs": [{"id": "k1", "kernel_id": "k1"}, {"id": "k2", "kernel_id": "k2"}, {"id": "script"}]})
    _apply(broker, {"jobs": [{"id": "done", "kernel_id": "k2", "state": "succeeded"}]})
    assert sorted(broker.lose_orphans({"k1"}, "restart")) == ["k2", "script"]
    assert broker.get("k1").state == "running"
    assert broker.get("done").state == "succeeded"


def test_a_batch_refused_because_no_id_can_be_reserved_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SQLiteStore(path)
    broker = Broker(store, jobs_kept=1)
    _apply(broker, {"jobs": [{"id": "run", "n": 1}, {"id": "old", "state": "succeeded"}]})
    before = _state(broker)
    store._reserved = store.current_seq + 2  # the third id of the next batch needs a new reservation ...
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")  # ... which another connection's write lock makes fail
    store._db.execute("PRAGMA busy_timeout = 0")
    batch = {
        "jobs": [{"id": "new", "state": "failed"}, {"id": "run", "n": 5}],
        "logs": [{"job": "run", "lines": ["a"]}],
    }
    try:
        with pytest.raises(StoreUnavailable):
            _apply(broker, batch)
        assert _state(broker) == before
    finally:
        other.execute("ROLLBACK")
        other.close()
    _apply(broker, batch)
    # The same batch goes through once the lock is gone; retention (1 kept) forgets the older finished job.
    assert sorted(job.id for job in broker.list_jobs()) == ["new", "run"]
