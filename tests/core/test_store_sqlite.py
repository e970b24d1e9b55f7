"""The SQLite store: what survives a restart, and how often it writes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from jupyter_sse.core import Broker, parse_update_batch, store_sqlite
from jupyter_sse.core.store_sqlite import SQLiteStore


def _apply(broker: Broker, body: dict[str, Any]) -> list[str]:
    return broker.apply(parse_update_batch(json.dumps(body).encode()))


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    # A second connection, as another process would see the file.
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_finished_jobs_and_their_logs_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SQLiteStore(path, log_lines_kept=3)
    broker = Broker(store, log_lines_kept=3)
    _apply(broker, {"jobs": [{"id": "a", "name": "train", "n": 1, "total": 5}]})
    _apply(broker, {"logs": [{"job": "a", "lines": ["l1", "l2", "l3", "l4"]}]})
    _apply(broker, {"jobs": [{"id": "a", "n": 5, "state": "succeeded"}]})
    last_seq = store.current_seq
    store.close()

    reopened = SQLiteStore(path, log_lines_kept=3)
    again = Broker(reopened, log_lines_kept=3)
    job = again.get("a")
    assert (job.name, job.state, job.n, job.total) == ("train", "succeeded", 5, 5)
    assert [line for _, line in reopened.get("a").logs] == ["l2", "l3", "l4"]  # l1 was dropped by retention
    assert reopened.current_seq >= last_seq
    assert reopened.next_seq() > last_seq


def test_a_resumed_subscriber_after_restart_is_reset_then_synced(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    broker = Broker(SQLiteStore(path))
    _apply(broker, {"jobs": [{"id": "a", "state": "succeeded"}, {"id": "b"}]})
    cursor = broker.event_id(broker.store.current_seq)
    broker.store.close()

    broker = Broker(SQLiteStore(path))
    _apply(broker, {"jobs": [{"id": "b", "n": 7}]})

    async def read() -> list[Any]:
        return await broker.subscribe(last_event_id=cursor).next_events(1)

    # The removals before the restart are not kept (the store's horizon is its start): the subscriber cannot be
    # told exactly what it missed, so it is told to start over, and gets the state as it is.
    events = [(e.name, json.loads(e.data)) for e in asyncio.run(read()) if e.name]
    assert events[0][0] == "reset"
    synced = [(body["id"], body["state"], body["n"]) for _, body in events[1:]]
    assert synced == [("a", "succeeded", 0), ("b", "running", 7)]


def test_updates_are_coalesced_until_flush_and_terminal_states_are_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SQLiteStore(path)
    broker = Broker(store)
    for n in range(100):  # ten seconds of a job at 10 Hz
        _apply(broker, {"jobs": [{"id": "a", "n": n}]})
    # Its creation was written before the first answer; its progress waits: one write per flush, not per update.
    (data,) = _rows(path, "SELECT data FROM jobs WHERE id = 'a'")[0]
    assert json.loads(data)["n"] == 0
    assert store.pending_writes == 1
    store.flush()
    (data,) = _rows(path, "SELECT data FROM jobs WHERE id = 'a'")[0]
    assert json.loads(data)["n"] == 99
    _apply(broker, {"jobs": [{"id": "a", "n": 100, "state": "failed", "error": {"type": "E", "message": "m"}}]})
    (data,) = _rows(path, "SELECT data FROM jobs WHERE id = 'a'")[0]  # no flush needed
    assert json.loads(data)["state"] == "failed"
    store.close()


def test_removed_jobs_are_removed_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SQLiteStore(path)
    broker = Broker(store)
    _apply(broker, {"jobs": [{"id": "a", "state": "succeeded"}], "logs": [{"job": "a", "lines": ["x"]}]})
    broker.delete("a")
    store.flush()
    assert _rows(path, "SELECT id FROM jobs") == []
    assert _rows(path, "SELECT job FROM logs") == []
    store.close()
    assert Broker(SQLiteStore(path)).list_jobs() == []


def test_publish_token_is_kept_across_restarts_and_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "jobs.sqlite3"
    store = SQLiteStore(path)
    token = store.publish_token()
    store.close()
    assert SQLiteStore(path).publish_token() == token
    assert path.stat().st_mode & 0o077 == 0


def test_running_jobs_after_restart_get_a_whole_lease(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    clock = [1000.0]
    broker = Broker(SQLiteStore(path), clock=lambda: clock[0])
    _apply(broker, {"jobs": [{"id": "a", "n": 3}]})
    broker.store.close()
    clock[0] = 5000.0  # the server was down for a long time
    reopened = Broker(SQLiteStore(path), clock=lambda: clock[0])
    assert reopened.expire_leases(60) == []
    clock[0] += 61
    assert reopened.expire_leases(60) == ["a"]
    _apply(reopened, {"jobs": [{"id": "a", "n": 4}]})  # its publisher comes back
    assert reopened.get("a").state == "running"


def test_writes_leave_nothing_behind_in_the_connection(tmp_path: Path) -> None:
    # The sqlite3 connection keeps a weak reference to each cursor it makes and drops the dead ones only every
    # 200th: a cursor per statement left up to 200 of them, made at any time (for a server, during a burst of
    # streams, where each kept one of the allocator's 1 MiB arenas from being given back).
    import tracemalloc

    store = SQLiteStore(tmp_path / "jobs.sqlite3")
    broker = Broker(store)
    running = [{"id": f"run{j}", "n": 0} for j in range(20)]

    def write() -> int:
        """What is still allocated by the store's code after one more write of the 20 jobs."""
        for job in running:
            job["n"] += 1
        _apply(broker, {"jobs": running})
        store.flush()
        left = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, store_sqlite.__file__)])
        return sum(stat.count for stat in left.statistics("lineno"))

    tracemalloc.start()
    try:
        left = [write() for _ in range(12)]  # 22 statements each: 264, past the connection's 200
    finally:
        tracemalloc.stop()
        store.close()
    # A few more may be live state (the id block reserved ahead, say); a reference per statement would be 150+.
    assert max(left) - left[0] < 16, left
