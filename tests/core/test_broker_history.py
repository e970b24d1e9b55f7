"""The broker with a large history: the bounded first sync, pages of jobs, the indexes behind both, and reset."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from jupyter_sse.core import Broker, Event, MemoryStore, ProtocolError
from tests.core.test_broker import Clock, batch, read, up


def names(events: list[Event]) -> list[tuple[str, Any]]:
    """(event, job id) of each event; the bare id that may end a sync is ("", None)."""
    out: list[tuple[str, Any]] = []
    for event in events:
        data = json.loads(event.data) if event.data else {}
        out.append((event.name, data.get("id") or data.get("job")))
    return out


async def test_the_first_sync_is_the_unfinished_jobs_and_the_most_recent_finished_ones() -> None:
    broker = Broker(jobs_kept=1000, sync_finished_jobs=3)
    broker.apply(batch(up("old-running", n=1)))
    for i in range(10):
        broker.apply(batch(up(f"done{i}", state="succeeded")))
    broker.apply(batch(up("new-running")))
    events = await read(broker.subscribe())
    got = names(events)
    assert sorted(job for name, job in got if name == "job") == sorted(
        ["old-running", "new-running", "done7", "done8", "done9"]
    )
    assert [e.id for e in events] == sorted(e.id for e in events)


async def test_the_first_sync_never_sends_removed_and_ends_where_a_resume_hears_nothing_older() -> None:
    broker = Broker(jobs_kept=5, sync_finished_jobs=2)
    for i in range(20):  # retention removes 15 of these: tombstones a new subscriber never saw
        broker.apply(batch(up(f"d{i}", state="failed")))
    broker.delete("d19")
    events = await read(broker.subscribe())
    assert [name for name, _ in names(events)] == ["job", "job", ""]
    assert [job for _, job in names(events)[:2]] == ["d17", "d18"]
    # The sync ends with a bare id at the current seq: a reconnect from it gets nothing it left out.
    last = events[-1]
    assert last.id == broker.store.current_seq and last.encode() == f"id: {last.event_id}\n\n".encode()
    assert await read(broker.subscribe(last_event_id=last.event_id)) == []


async def test_sync_finished_jobs_zero_sends_only_unfinished_jobs() -> None:
    broker = Broker(sync_finished_jobs=0)
    broker.apply(batch(up("a", state="succeeded"), up("b")))
    assert [job for name, job in names(await read(broker.subscribe())) if name] == ["b"]


async def test_a_resume_too_far_behind_is_a_reset_and_a_bounded_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jupyter_sse.core.broker._RESUME_LIMIT", 10)
    broker = Broker(jobs_kept=100, sync_finished_jobs=2)
    broker.apply(batch(up("first")))
    cursor = broker.event_id(broker.store.current_seq)
    for i in range(30):
        broker.apply(batch(up(f"d{i}", state="succeeded")))
    got = names(await read(broker.subscribe(last_event_id=cursor)))
    assert got[0] == ("reset", None)
    assert [job for name, job in got if name == "job"] == ["first", "d28", "d29"]
    # Within the limit, the same resume is exact: every change since, no reset.
    monkeypatch.setattr("jupyter_sse.core.broker._RESUME_LIMIT", 100)
    got = names(await read(broker.subscribe(last_event_id=cursor)))
    assert [name for name, _ in got] == ["job"] * 30


async def test_a_reset_of_a_filtered_stream_sends_its_jobs_and_moves_no_cursor_backwards() -> None:
    broker = Broker()
    broker.apply(batch(up("a", n=1), up("b")))
    sub = broker.subscribe(["a"], last_event_id="other.5")
    assert names(await read(sub)) == [("reset", None), ("job", "a")]
    broker.apply(batch(up("a", n=2)))
    assert names(await read(sub)) == [("job", "a")]


def test_pages_walk_every_job_newest_first_while_jobs_come_and_go() -> None:
    clock = Clock()
    broker = Broker(jobs_kept=1000, clock=clock)
    for i in range(50):
        clock.t += 1
        broker.apply(batch(up(f"j{i:02d}", **({"state": "succeeded"} if i % 2 else {}))))
    first = broker.page_jobs(limit=20)
    assert [job.id for job in first.jobs] == [f"j{i:02d}" for i in range(49, 29, -1)]
    assert first.total == 50 and first.next is not None
    # Between two pages: a new job, a deletion on the next page, a job removed and made again.
    clock.t += 1
    broker.apply(batch(up("newest")))
    broker.delete("j27")
    broker.delete("j29")
    clock.t += 1
    broker.apply(batch(up("j29")))  # made again: it is now the newest
    second = broker.page_jobs(limit=20, cursor=first.next)
    assert [job.id for job in second.jobs] == [f"j{i:02d}" for i in range(28, 7, -1) if i != 27]
    third = broker.page_jobs(limit=20, cursor=second.next)
    assert [job.id for job in third.jobs] == [f"j{i:02d}" for i in range(7, -1, -1)]
    assert third.next is None
    assert [job.id for job in broker.page_jobs(limit=3).jobs] == ["j29", "newest", "j49"]
    finished = broker.page_jobs(state="succeeded", limit=100)
    assert finished.total == 23 and len(finished.jobs) == 23 and finished.next is None
    running = broker.page_jobs(state="running", limit=5)
    assert running.total == 27 and len(running.jobs) == 5


@pytest.mark.parametrize("bad", ["", "x", "1~", "~a", "1~a/b", "-1~a", "1.5~a", "1~" + "a" * 65])
def test_a_cursor_the_server_did_not_make_is_400(bad: str) -> None:
    broker = Broker()
    with pytest.raises(ProtocolError) as info:
        broker.page_jobs(cursor=bad)
    assert (info.value.status, info.value.error) == (400, "invalid_query")


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_a_limit_out_of_range_is_400(limit: int) -> None:
    with pytest.raises(ProtocolError) as info:
        Broker().page_jobs(limit=limit)
    assert info.value.status == 400


def test_the_indexes_are_rebuilt_when_removals_they_missed_are_forgotten() -> None:
    broker = Broker(MemoryStore(tombstones_kept=3), jobs_kept=0)
    broker.apply(batch(up("keep")))
    assert broker.page_jobs().total == 1
    for i in range(10):  # each finishes and is removed at once; only the last 3 tombstones are kept
        broker.apply(batch(up(f"gone{i}", state="succeeded")))
    assert broker.store.horizon > 0
    page = broker.page_jobs()
    assert [job.id for job in page.jobs] == ["keep"] and page.total == 1
    assert [entry.job.id for entry in broker.unfinished_entries()] == ["keep"]


async def test_a_first_sync_longer_than_one_read_goes_on_as_a_sync_not_as_a_resume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A sync is read in turns of MAX_EVENTS_PER_READ. The turns after the first must keep to what the sync
    # chose (the unfinished jobs, the most recent finished ones): read as a plain resume from the middle, they
    # would pull in every older finished job changed after that point, and past the resume limit start over
    # with a reset, again and again.
    monkeypatch.setattr("jupyter_sse.core.broker.MAX_EVENTS_PER_READ", 50)
    monkeypatch.setattr("jupyter_sse.core.broker._RESUME_LIMIT", 100)
    broker = Broker(jobs_kept=1000, sync_finished_jobs=5)
    broker.apply(batch(*(up(f"run{i}", n=1) for i in range(80))))  # old seqs: before the finished ones
    for i in range(300):
        broker.apply(batch(up(f"done{i}", state="succeeded")))
    sub = broker.subscribe()
    seen: list[tuple[str, Any]] = []
    for _ in range(10):
        events = await read(sub)
        if not events:
            break
        seen += names(events)
    assert ("reset", None) not in seen
    jobs = [job for name, job in seen if name == "job"]
    assert sorted(jobs) == sorted([f"run{i}" for i in range(80)] + [f"done{i}" for i in range(295, 300)])
    assert await read(sub) == []
    # and it ends where a resume hears nothing the sync left out
    assert sub.cursor == broker.store.current_seq


async def test_a_crowd_of_new_subscribers_syncs_one_per_turn_of_the_loop() -> None:
    broker = Broker(jobs_kept=1000)
    broker.apply(batch(*(up(f"d{i}", state="succeeded") for i in range(500)), up("running")))
    turns = 0
    stop = False

    async def ticker() -> None:  # counts the turns of the loop
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    synced_at: list[int] = []

    async def subscriber() -> None:
        events = await broker.subscribe().next_events(1.0)
        assert len([e for e in events if e.name == "job"]) == 101
        synced_at.append(turns)

    ticking = asyncio.ensure_future(ticker())
    await asyncio.gather(*(subscriber() for _ in range(50)))
    stop = True
    await ticking
    # Each sync in a turn of its own: between two, the loop polls its sockets (other requests get in). All 50 in
    # one turn kept everything else waiting for the whole crowd's syncs.
    assert len(set(synced_at)) == 50, synced_at
