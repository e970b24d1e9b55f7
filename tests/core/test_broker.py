"""The broker: fan-out, ordering, conflation, resume, refusals that change nothing, retention, leases, closing.

Tests are ``async def`` (pytest-jupyter runs them on its loop); the property test drives its own loop.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from jupyter_sse.core import (
    TERMINAL_STATES,
    Broker,
    Event,
    ProtocolError,
    Subscription,
    UpdateBatch,
    parse_update_batch,
)
from tests._wait import until
from tests.core.test_sse import spec_parse

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    st = None


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def batch(*jobs: dict[str, Any], logs: dict[str, list[str]] | None = None) -> UpdateBatch:
    body = {"jobs": list(jobs), "logs": [{"job": job, "lines": lines} for job, lines in (logs or {}).items()]}
    return parse_update_batch(json.dumps(body).encode())


def up(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": job_id, **fields}


def parked(sub: Subscription) -> bool:
    """Whether ``sub`` waits in ``next_events`` (as a stream between changes)."""
    return sub._waiter is not None


async def read(sub: Subscription) -> list[Event]:
    """What the subscription has now, without waiting."""
    return await sub.next_events(0)


def decoded(events: list[Event]) -> list[tuple[str, dict[str, Any]]]:
    """The events with their data, without the bare ``id:`` that may end a sync."""
    return [(e.name, json.loads(e.data)) for e in events if e.name]


def state_of(broker: Broker) -> Any:
    """Everything a refused request must leave as it was."""
    store = broker.store
    return copy.deepcopy(
        (
            store.current_seq,
            [
                (e.job.to_dict(), list(e.logs), e.seq, e.change_seq, e.last_dropped_seq)
                for e in sorted(store.entries(), key=lambda e: e.job.id)
            ],
            list(store.removed_since(0)),
            broker._finished_count,
        )
    )


def _check_ids_increase(events: list[Event], after: int = 0) -> int:
    last = after
    for event in events:
        if event.name == "reset":
            assert event.event_id is None and event is events[0], events  # no id, and only first
            continue
        assert event.id > last, (event, last)
        last = event.id
    return last


# ---- fan-out and order -------------------------------------------------------------------------------------


async def test_every_subscriber_gets_each_update() -> None:
    broker = Broker()
    everyone = [broker.subscribe() for _ in range(3)]
    only_a = broker.subscribe(["a"])
    only_b = broker.subscribe(["b"])
    for sub in [*everyone, only_a, only_b]:
        assert await read(sub) == []  # nothing yet
    broker.apply(batch(up("a", n=1)))
    got = [await read(sub) for sub in everyone]
    assert all(decoded(events) == decoded(got[0]) for events in got)
    ((name, job),) = decoded(got[0])
    assert (name, job["id"], job["n"]) == ("job", "a", 1)
    # One event object, encoded once, is shared by all subscribers.
    assert all(events[0] is got[0][0] for events in got)
    assert decoded(await read(only_a)) == decoded(got[0])
    assert await read(only_b) == []
    assert broker.subscriber_count == 5


async def test_a_filtered_subscription_sees_only_its_jobs_including_their_removal() -> None:
    broker = Broker()
    sub = broker.subscribe(["a", "c"])
    broker.apply(batch(up("a"), up("b"), up("c", state="succeeded"), logs={"b": ["x"], "a": ["y"]}))
    events = decoded(await read(sub))
    assert {(name, body.get("id") or body.get("job")) for name, body in events} == {
        ("job", "a"),
        ("job", "c"),
        ("log", "a"),
    }
    broker.delete("c")
    assert decoded(await read(sub)) == [("removed", {"job": "c"})]


async def test_ids_strictly_increase_along_a_stream() -> None:
    broker = Broker(log_lines_kept=5)
    sub = broker.subscribe()
    last = 0
    for i in range(30):
        broker.apply(batch(up(f"j{i % 4}", n=i), up(f"j{(i + 1) % 4}", n=i), logs={f"j{i % 3}": [f"l{i}"] * (i % 7)}))
        if i % 3 == 0:
            broker.request_cancel(f"j{i % 4}")
        if i % 5 == 0:
            last = _check_ids_increase(await read(sub), last)
    last = _check_ids_increase(await read(sub), last)
    assert last == broker.store.current_seq


async def test_events_come_out_in_the_order_things_happened() -> None:
    broker = Broker()
    sub = broker.subscribe()
    broker.apply(batch(up("a"), logs={"a": ["1", "2"]}))
    broker.apply(batch(up("b"), logs={"a": ["3"]}))
    events = decoded(await read(sub))
    # a's snapshot (its latest), its first lines, b's snapshot, a's next line: in seq order.
    assert [(n, b.get("id") or b.get("lines")) for n, b in events] == [
        ("job", "a"),
        ("log", ["1", "2"]),
        ("job", "b"),
        ("log", ["3"]),
    ]


# ---- conflation --------------------------------------------------------------------------------------------


async def test_a_subscriber_that_does_not_read_gets_one_latest_snapshot() -> None:
    broker = Broker()
    broker.apply(batch(up("a", n=0, total=1000)))
    slow = broker.subscribe()
    assert len(await read(slow)) == 1
    for n in range(1, 1001):
        broker.apply(batch(up("a", n=n)))
    events = await read(slow)
    assert len(events) == 1
    assert json.loads(events[0].data)["n"] == 1000
    assert events[0].id == broker.store.current_seq
    assert await read(slow) == []


async def test_a_waiting_subscriber_wakes_on_an_update() -> None:
    broker = Broker()
    sub = broker.subscribe()
    assert await read(sub) == []
    waiting = asyncio.ensure_future(sub.next_events(5))
    await until(lambda: parked(sub), what="the subscriber to wait")
    assert not waiting.done()
    broker.apply(batch(up("a")))
    events = await asyncio.wait_for(waiting, 2)
    assert [e.name for e in events] == ["job"]


async def test_next_events_times_out_with_nothing() -> None:
    broker = Broker()
    sub = broker.subscribe()
    assert await read(sub) == []
    assert await sub.next_events(0.01) == []
    assert not sub.done


# ---- resume ------------------------------------------------------------------------------------------------


def _history(broker: Broker) -> list[tuple[str, Any]]:
    """A varied history; returns the ops with the event ids a live reader saw after each."""
    ops: list[tuple[str, Any]] = [
        ("u", batch(up("a", n=1, total=10))),
        ("u", batch(up("b", name="second"), logs={"a": ["a1", "a2"]})),
        ("u", batch(logs={"b": ["b1"]})),
        ("u", batch(up("a", n=5), logs={"a": ["a3"]})),
        ("c", "b"),
        ("u", batch(up("c", state="succeeded"), logs={"c": ["c1", "c2", "c3"]})),
        ("d", "c"),
        ("u", batch(up("b", n=7), logs={"a": ["a4"], "b": ["b2", "b3"]})),
        ("u", batch(up("a", state="failed", error={"type": "E", "message": "m"}), logs={"a": ["a5"]})),
    ]
    return ops


async def test_resume_from_every_cursor_gets_latest_snapshots_and_exactly_the_missed_lines() -> None:
    broker = Broker()
    live = broker.subscribe()
    cursors: list[int] = []  # every id a live reader was sent
    for kind, arg in _history(broker):
        if kind == "u":
            broker.apply(arg)
        elif kind == "c":
            broker.request_cancel(arg)
        else:
            broker.delete(arg)
        cursors.extend(event.id for event in await read(live))
    final = {e.job.id: e for e in broker.store.entries()}
    deleted = {job: seq for seq, job, _final in broker.store.removed_since(0)}
    # A removed job's tombstone keeps its final snapshot, for readers that had not seen it yet.
    last_words = {job: final for _seq, job, final in broker.store.removed_since(0)}
    assert list(deleted) == ["c"]
    for cursor in cursors:
        events = await read(broker.subscribe(last_event_id=broker.event_id(cursor)))
        _check_ids_increase(events, cursor)
        snapshots = [json.loads(e.data) for e in events if e.name == "job"]
        # Every job changed since the cursor, once, in its latest state.
        expected = [j for j, e in final.items() if e.seq > cursor]
        expected += [j for j, event in last_words.items() if event.id > cursor]
        assert sorted(s["id"] for s in snapshots) == sorted(expected)
        for snap in snapshots:
            if snap["id"] in final:
                assert snap == final[snap["id"]].job.to_dict()
            else:
                assert snap == json.loads(last_words[snap["id"]].data)
                assert snap["state"] in TERMINAL_STATES
        # Exactly the retained lines after the cursor, in order, per job.
        for job_id, entry in final.items():
            got = [line for e in events if e.name == "log" for line in json.loads(e.data)["lines"]
                   if json.loads(e.data)["job"] == job_id]  # fmt: skip
            assert got == [line for seq, line in entry.logs if seq > cursor], (cursor, job_id)
        removed = [json.loads(e.data)["job"] for e in events if e.name == "removed"]
        assert removed == [job for job, seq in deleted.items() if seq > cursor]
        assert not any(json.loads(e.data).get("dropped") for e in events if e.name == "log")


async def test_resume_marks_lines_dropped_by_retention_after_the_cursor() -> None:
    broker = Broker(log_lines_kept=5)
    broker.apply(batch(up("a")))
    live = broker.subscribe()
    (first,) = await read(live)
    line_ids = []
    for i in range(10):
        broker.apply(batch(logs={"a": [f"l{i}"]}))
        (event,) = await read(live)
        line_ids.append(event.id)
    # Lines l0..l4 were dropped; l5..l9 are kept.
    for cursor, want_lines, dropped in [
        (first.id, [f"l{i}" for i in range(5, 10)], True),
        (line_ids[2], [f"l{i}" for i in range(5, 10)], True),
        (line_ids[3], [f"l{i}" for i in range(5, 10)], True),  # l4 was missed and dropped
        (line_ids[4], [f"l{i}" for i in range(5, 10)], False),  # nothing missed was dropped
        (line_ids[7], ["l8", "l9"], False),
    ]:
        events = decoded(await read(broker.subscribe(["a"], last_event_id=broker.event_id(cursor))))
        logs = [body for name, body in events if name == "log"]
        assert [line for body in logs for line in body["lines"]] == want_lines, cursor
        assert any(body.get("dropped") for body in logs) is dropped, (cursor, logs)


async def test_a_new_subscription_gets_the_drop_mark_when_lines_were_dropped() -> None:
    broker = Broker(log_lines_kept=3)
    broker.apply(batch(up("a"), logs={"a": [str(i) for i in range(10)]}))
    events = decoded(await read(broker.subscribe()))
    assert events[0][0] == "job"
    assert events[1] == ("log", {"job": "a", "lines": ["7", "8", "9"], "dropped": True})


async def test_a_cursor_from_the_future_gets_a_reset_then_everything() -> None:
    broker = Broker()
    broker.apply(batch(up("a", n=1), up("b", state="succeeded"), logs={"a": ["x", "y"]}))
    fresh = decoded(await read(broker.subscribe()))
    for future in (broker.store.current_seq + 1, broker.store.current_seq * 10, 10**29):
        events = decoded(await read(broker.subscribe(last_event_id=broker.event_id(future))))
        assert events == [("reset", {"epoch": broker.store.epoch}), *fresh]
    assert len(fresh) == 3


async def test_a_cursor_at_the_current_seq_gets_nothing_until_something_changes() -> None:
    broker = Broker()
    broker.apply(batch(up("a")))
    sub = broker.subscribe(last_event_id=broker.event_id(broker.store.current_seq))
    assert await read(sub) == []
    broker.apply(batch(up("a", n=2)))
    assert [json.loads(e.data)["n"] for e in await read(sub)] == [2]


_BAD_IDS = ["abc", "-1", "+1", "1.5.1", "a.", ".1", "a-b.1", " 1", "1 ", "0x10", "1" * 31, "1e3", "²"]
_BAD_IDS += ["\u0661\u0662", "\uff11", "1\n2"]


@pytest.mark.parametrize("bad", _BAD_IDS)
async def test_an_invalid_last_event_id_is_a_400(bad: str) -> None:
    broker = Broker()
    broker.apply(batch(up("a")))
    with pytest.raises(ProtocolError) as info:
        broker.subscribe(last_event_id=bad)
    assert (info.value.status, info.value.error) == (400, "invalid_query")
    assert broker.subscriber_count == 0


async def test_an_empty_last_event_id_is_a_new_subscription() -> None:
    broker = Broker()
    broker.apply(batch(up("a")))
    assert len(await read(broker.subscribe(last_event_id=""))) == 1


async def test_a_subscriber_that_missed_a_delete_hears_removed() -> None:
    broker = Broker()
    broker.apply(batch(up("a", state="succeeded"), up("b")))
    sub = broker.subscribe()
    await read(sub)
    broker.delete("a")
    broker.apply(batch(up("b", n=3)))
    assert decoded(await read(sub)) == [("removed", {"job": "a"}), ("job", broker.get("b").to_dict())]


async def test_a_log_entry_with_no_lines_does_not_hide_other_changes() -> None:
    """An empty ``lines`` list is valid; it must not reorder the store so that later changes go unseen."""
    broker = Broker()
    broker.apply(batch(up("a")))
    sub = broker.subscribe()
    assert len(await read(sub)) == 1
    broker.apply(batch(up("b")))
    broker.apply(batch(logs={"a": []}))
    assert [json.loads(e.data)["id"] for e in await read(sub)] == ["b"]


# ---- refused batches change nothing ------------------------------------------------------------------------


async def _setup_for_refusal() -> tuple[Broker, Subscription, Subscription]:
    broker = Broker(clock=Clock())
    broker.apply(batch(up("done", state="succeeded", n=3), up("run", n=1), logs={"run": ["r1"], "done": ["d1"]}))
    everyone = broker.subscribe()
    per_job = broker.subscribe(["run", "new"])
    await read(everyone)
    await read(per_job)
    return broker, everyone, per_job


@pytest.mark.parametrize("final_state", ["succeeded", "failed", "cancelled"])
async def test_a_batch_that_would_revive_a_finished_job_is_refused_whole(final_state: str) -> None:
    broker, everyone, per_job = await _setup_for_refusal()
    if final_state != "succeeded":
        broker.apply(batch(up("other", state=final_state)))
        await read(everyone)
    target = "done" if final_state == "succeeded" else "other"
    before = state_of(broker)
    with pytest.raises(ProtocolError) as info:
        broker.apply(
            batch(
                up("run", n=5, message="changed"),
                up("new", n=1),
                up(target, state="running"),
                logs={"run": ["r2"], "new": ["n1"]},
            )
        )
    assert (info.value.status, info.value.error) == (409, "job_finished")
    assert target in str(info.value.detail)
    assert state_of(broker) == before
    assert await read(everyone) == []
    assert await read(per_job) == []


async def test_a_job_finished_earlier_in_the_same_batch_cannot_be_revived_by_it() -> None:
    broker, everyone, _ = await _setup_for_refusal()
    before = state_of(broker)
    with pytest.raises(ProtocolError) as info:
        broker.apply(batch(up("fresh", state="failed"), up("fresh", state="running")))
    assert info.value.status == 409
    assert state_of(broker) == before
    assert await read(everyone) == []


async def test_logs_for_an_unknown_job_are_404_and_change_nothing() -> None:
    broker, everyone, per_job = await _setup_for_refusal()
    before = state_of(broker)
    with pytest.raises(ProtocolError) as info:
        broker.apply(batch(up("run", n=9), up("new"), logs={"run": ["r2"], "ghost": ["boo"], "new": ["n"]}))
    assert (info.value.status, info.value.error) == (404, "not_found")
    assert "ghost" in str(info.value.detail)
    assert state_of(broker) == before
    assert await read(everyone) == []
    assert await read(per_job) == []


async def test_logs_may_name_a_job_created_earlier_in_the_same_batch() -> None:
    broker = Broker()
    sub = broker.subscribe()
    broker.apply(batch(up("new"), logs={"new": ["hello"]}))
    assert decoded(await read(sub))[1] == ("log", {"job": "new", "lines": ["hello"]})


async def test_a_lost_job_may_finish_or_come_back() -> None:
    clock = Clock()
    broker = Broker(clock=clock)
    broker.apply(batch(up("a"), up("b")))
    clock.t += 100
    assert sorted(broker.expire_leases(60)) == ["a", "b"]
    broker.apply(batch(up("a", state="succeeded"), up("b", state="running")))
    assert broker.get("a").state == "succeeded"
    assert broker.get("b").state == "running"
    assert broker.get("b").finished is None


# ---- retention ---------------------------------------------------------------------------------------------


async def test_retention_forgets_the_oldest_finished_jobs_and_keeps_running_ones() -> None:
    clock = Clock()
    broker = Broker(jobs_kept=2, clock=clock)
    broker.apply(batch(up("r1"), up("r2")))
    sub = broker.subscribe()
    await read(sub)
    for i in range(1, 4):
        clock.t += 1
        broker.apply(batch(up(f"f{i}", state="succeeded")))
    events = decoded(await read(sub))
    assert ("removed", {"job": "f1"}) in events
    assert sorted(e.job.id for e in broker.store.entries()) == ["f2", "f3", "r1", "r2"]
    clock.t += 1
    broker.apply(batch(up("r1", state="failed")))
    assert decoded(await read(sub))[-1] == ("removed", {"job": "f2"})
    assert sorted(e.job.id for e in broker.store.entries()) == ["f3", "r1", "r2"]
    assert broker.get("r2").state == "running"


async def test_retention_counts_lost_jobs_and_their_return() -> None:
    clock = Clock()
    broker = Broker(jobs_kept=1, clock=clock)
    broker.apply(batch(up("a")))
    clock.t += 100
    broker.expire_leases(60)
    clock.t += 1
    broker.apply(batch(up("a", n=1)))  # back to running: no longer counts as finished
    clock.t += 1
    broker.apply(batch(up("b", state="succeeded")))
    assert sorted(e.job.id for e in broker.store.entries()) == ["a", "b"]
    clock.t += 1
    broker.apply(batch(up("c", state="succeeded")))
    assert sorted(e.job.id for e in broker.store.entries()) == ["a", "c"]


async def test_a_live_subscriber_sees_the_terminal_state_even_when_no_finished_job_is_kept() -> None:
    """Protocol: "The terminal state of a job is never skipped", also with jobs_kept=0."""
    broker = Broker(jobs_kept=0)
    broker.apply(batch(up("a", n=1)))
    sub = broker.subscribe(["a"], end_with_job="a")
    await read(sub)
    broker.apply(batch(up("a", state="succeeded", n=2)))
    names_states = [(n, b.get("state")) for n, b in decoded(await read(sub))]
    assert ("job", "succeeded") in names_states


# ---- per-job streams ---------------------------------------------------------------------------------------


async def test_a_job_stream_ends_after_the_terminal_snapshot_and_its_log_lines() -> None:
    broker = Broker()
    broker.apply(batch(up("a", n=1), up("b")))
    sub = broker.subscribe(["a"], end_with_job="a")
    assert [e.name for e in await read(sub)] == ["job"]
    broker.apply(batch(up("a", n=2), logs={"a": ["working"]}))
    assert [e.name for e in await read(sub)] == ["job", "log"]
    assert not sub.done
    broker.apply(batch(up("a", state="succeeded", n=3), up("b", n=1), logs={"a": ["bye", "really"]}))
    events = decoded(await read(sub))
    assert [(n, b.get("state") or b.get("lines")) for n, b in events] == [
        ("job", "succeeded"),
        ("log", ["bye", "really"]),
    ]
    assert sub.done
    assert broker.subscriber_count == 0
    broker.apply(batch(up("b", n=2)))
    assert await sub.next_events(1) == []


async def test_a_job_stream_of_a_finished_job_sends_it_and_ends() -> None:
    broker = Broker()
    broker.apply(batch(up("a", state="cancelled"), logs={"a": ["x"]}))
    sub = broker.subscribe(["a"], end_with_job="a")
    assert [e.name for e in await read(sub)] == ["job", "log"]
    assert sub.done


async def test_a_job_stream_ends_when_its_job_is_removed() -> None:
    broker = Broker()
    broker.apply(batch(up("a", state="succeeded")))
    broker.apply(batch(up("b")))
    sub = broker.subscribe(["a"], end_with_job="a", last_event_id=broker.event_id(broker.store.current_seq))
    broker.delete("a")
    assert decoded(await read(sub)) == [("removed", {"job": "a"})]
    assert sub.done


async def test_a_job_stream_ends_when_its_job_is_lost() -> None:
    clock = Clock()
    broker = Broker(clock=clock)
    broker.apply(batch(up("a")))
    sub = broker.subscribe(["a"], end_with_job="a")
    await read(sub)
    clock.t += 100
    broker.expire_leases(60)
    (lost,) = decoded(await read(sub))
    # "lost" is terminal, so a per-job stream ends with it (a client reconnects if it wants more).
    assert lost[1]["state"] == "lost"
    assert sub.done


# ---- close -------------------------------------------------------------------------------------------------


async def test_close_ends_every_subscription_even_waiting_ones() -> None:
    broker = Broker()
    broker.apply(batch(up("a")))
    subs = [broker.subscribe(), broker.subscribe(["a"]), broker.subscribe(["a"], end_with_job="a")]
    for sub in subs:
        await read(sub)
    waiting = [asyncio.ensure_future(sub.next_events(30)) for sub in subs]
    await until(lambda: all(parked(sub) for sub in subs), what="the subscribers to wait")
    broker.close()
    results = await asyncio.wait_for(asyncio.gather(*waiting), 2)
    assert results == [[], [], []]
    assert all(sub.done for sub in subs)
    assert broker.subscriber_count == 0
    with pytest.raises(ProtocolError) as info:
        broker.subscribe()
    assert info.value.status == 503


# ---- leases ------------------------------------------------------------------------------------------------


async def test_a_silent_running_job_becomes_lost_and_an_update_brings_it_back() -> None:
    clock = Clock()
    broker = Broker(clock=clock)
    broker.apply(batch(up("quiet", n=1, total=10, rate=1.0), up("talks"), up("done", state="succeeded")))
    sub = broker.subscribe()
    await read(sub)
    clock.t += 30
    broker.apply(batch(up("talks", n=1)))
    await read(sub)
    clock.t += 31
    assert broker.expire_leases(60) == ["quiet"]
    assert broker.expire_leases(60) == []  # only once
    job = broker.get("quiet")
    assert job.state == "lost"
    assert job.finished == clock.t
    assert job.eta is None
    assert "60" in job.message
    assert [(b["id"], b["state"]) for _, b in decoded(await read(sub))] == [("quiet", "lost")]
    assert broker.get("talks").state == "running"
    assert broker.get("done").state == "succeeded"
    clock.t += 1
    broker.apply(batch(up("quiet", n=2)))
    job = broker.get("quiet")
    assert (job.state, job.finished, job.n) == ("running", None, 2)
    assert job.eta == pytest.approx(8.0)
    assert [(b["id"], b["state"]) for n, b in decoded(await read(sub))] == [("quiet", "running")]


async def test_lease_expiry_is_announced_to_subscribers() -> None:
    clock = Clock()
    broker = Broker(clock=clock)
    broker.apply(batch(up("a")))
    sub = broker.subscribe()
    await read(sub)
    clock.t += 61
    broker.expire_leases(60)
    assert [(b["id"], b["state"]) for _, b in decoded(await read(sub))] == [("a", "lost")]


async def test_a_lost_job_is_no_longer_cancel_requested() -> None:
    """Protocol: cancel_requested is "a cancel was asked for and the job has not ended yet"; lost has ended."""
    clock = Clock()
    broker = Broker(clock=clock)
    broker.apply(batch(up("a")))
    broker.request_cancel("a")
    clock.t += 61
    broker.expire_leases(60)
    job = broker.get("a")
    assert job.state == "lost"
    assert job.cancel_requested is False


# ---- cancel and delete -------------------------------------------------------------------------------------


async def test_request_cancel_on_a_running_job() -> None:
    broker = Broker()
    broker.apply(batch(up("a"), up("b")))
    sub = broker.subscribe()
    await read(sub)
    job, asked = broker.request_cancel("a")
    assert asked is True
    assert job.cancel_requested is True
    assert [(b["id"], b["cancel_requested"]) for _, b in decoded(await read(sub))] == [("a", True)]
    # Asking again changes nothing and sends nothing.
    seq = broker.store.current_seq
    assert broker.request_cancel("a")[1] is True
    assert broker.store.current_seq == seq
    assert await read(sub) == []
    # The publisher hears it in the reply to its next report, for that job only.
    assert broker.apply(batch(up("a", n=1), up("b", n=1))) == ["a"]
    assert broker.apply(batch(logs={"a": ["still going"]})) == ["a"]
    assert broker.apply(batch(up("b", n=2))) == []
    # Once it ends, the request is over.
    assert broker.apply(batch(up("a", state="cancelled"))) == []
    assert broker.get("a").cancel_requested is False


@pytest.mark.parametrize("state", ["succeeded", "failed", "cancelled"])
async def test_request_cancel_on_a_finished_job_changes_nothing(state: str) -> None:
    broker = Broker()
    broker.apply(batch(up("a", state=state)))
    sub = broker.subscribe()
    await read(sub)
    before = state_of(broker)
    job, asked = broker.request_cancel("a")
    assert asked is False
    assert job.cancel_requested is False
    assert state_of(broker) == before
    assert await read(sub) == []


async def test_cancel_get_and_delete_of_unknown_or_invalid_ids() -> None:
    broker = Broker()
    for call in (broker.request_cancel, broker.delete, broker.get):
        with pytest.raises(ProtocolError) as info:
            call("nope")
        assert (info.value.status, info.value.error) == (404, "not_found")
        with pytest.raises(ProtocolError) as info:
            call("a b")
        assert (info.value.status, info.value.error) == (400, "invalid_job_id")
    with pytest.raises(ProtocolError) as info:
        broker.subscribe(["a/b"])
    assert info.value.status == 400


async def test_delete_refuses_a_running_job_and_forgets_a_finished_one() -> None:
    broker = Broker()
    broker.apply(batch(up("run"), up("done", state="failed")))
    sub = broker.subscribe()
    await read(sub)
    before = state_of(broker)
    with pytest.raises(ProtocolError) as info:
        broker.delete("run")
    assert (info.value.status, info.value.error) == (409, "job_running")
    assert state_of(broker) == before
    broker.delete("done")
    assert decoded(await read(sub)) == [("removed", {"job": "done"})]
    assert [j.id for j in broker.list_jobs()] == ["run"]


async def test_list_jobs_is_newest_first_and_filters_by_state() -> None:
    clock = Clock()
    broker = Broker(clock=clock)
    for i in range(3):
        clock.t += 1
        broker.apply(batch(up(f"j{i}", state="succeeded" if i == 1 else "running")))
    clock.t += 1
    broker.apply(batch(up("j0", n=5)))  # a change does not make it newer: order is by creation
    assert [j.id for j in broker.list_jobs()] == ["j2", "j1", "j0"]
    assert [j.id for j in broker.list_jobs("running")] == ["j2", "j0"]
    assert [j.id for j in broker.list_jobs("lost")] == []


# ---- memory ------------------------------------------------------------------------------------------------


async def test_idle_subscribers_cost_little_memory() -> None:
    broker = Broker()
    broker.apply(batch(*(up(f"j{i}", n=0, total=100) for i in range(10))))
    subs = [broker.subscribe() for _ in range(1000)]
    for sub in subs:
        await read(sub)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for n in range(100):
            broker.apply(batch(up(f"j{n % 10}", n=n, message="x" * 200), logs={f"j{n % 10}": ["line " * 20]}))
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 2_000_000, grown
    # And when they do read, they get the latest state of each job: 10 snapshots and the retained lines.
    events = await read(subs[0])
    assert sum(e.name == "job" for e in events) == 10


# ---- property: resume is correct whatever happens ----------------------------------------------------------

JOBS = ["a", "b", "c"]

if st is not None:
    _op = st.one_of(
        st.tuples(
            st.just("update"),
            st.sampled_from(JOBS),
            st.integers(0, 100),
            st.sampled_from([None, None, None, "running", "succeeded", "failed", "pending"]),
        ),
        # At least one line: an empty list is test_a_log_entry_with_no_lines_does_not_hide_other_changes.
        st.tuples(st.just("log"), st.sampled_from(JOBS), st.integers(1, 6)),
        st.tuples(st.just("delete"), st.sampled_from(JOBS)),
        st.tuples(st.just("cancel"), st.sampled_from(JOBS)),
        st.tuples(st.just("lease"), st.integers(0, 120)),
        st.tuples(st.just("read")),
        st.tuples(st.just("disconnect")),
        st.tuples(st.just("reconnect")),
    )

    @settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        ops=st.lists(st.tuples(_op, st.booleans()), max_size=30),
        jobs_filter=st.sampled_from([None, ("a",), ("a", "c")]),
        log_lines_kept=st.sampled_from([2, 4, 1000]),
        jobs_kept=st.sampled_from([1, 500]),
    )
    def test_property_resume_delivers_the_final_state(
        ops: list[tuple[tuple[Any, ...], bool]],
        jobs_filter: tuple[str, ...] | None,
        log_lines_kept: int,
        jobs_kept: int,
    ) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(_scenario(ops, jobs_filter, log_lines_kept, jobs_kept))
        finally:
            loop.close()


async def _scenario(
    ops: list[tuple[tuple[Any, ...], bool]], jobs_filter: tuple[str, ...] | None, log_lines_kept: int, jobs_kept: int
) -> None:
    clock = Clock()
    broker = Broker(log_lines_kept=log_lines_kept, jobs_kept=jobs_kept, clock=clock)
    received: list[Event] = []
    sub: Subscription | None = broker.subscribe(jobs_filter)
    last_id: str | None = None
    last_seq = 0
    line_no = 0
    all_lines: dict[str, list[str]] = {j: [] for j in JOBS}  # lines of each job's current incarnation

    async def drain() -> None:
        nonlocal last_id, last_seq
        assert sub is not None
        events = await read(sub)
        last_seq = _check_ids_increase(events, last_seq)
        received.extend(events)
        if events:
            last_id = events[-1].event_id
        # Right after a read, the subscriber is up to date: check it now, not only at the end, so that a
        # later change cannot hide a miss.
        _verify(broker, received, jobs_filter, all_lines)

    for op, read_after in ops:  # read_after: a live subscriber mostly keeps up
        clock.t += 1
        kind = op[0]
        try:
            if kind == "update":
                _, job, n, state = op
                fields: dict[str, Any] = {"n": n}
                if state is not None:
                    fields["state"] = state
                existed = broker.store.get(job) is not None
                broker.apply(batch(up(job, **fields)))
                if not existed:
                    all_lines[job] = []
            elif kind == "log":
                _, job, count = op
                lines = [f"{job}:{line_no + i}" for i in range(count)]
                line_no += count
                broker.apply(batch(logs={job: lines}))
                all_lines[job].extend(lines)
            elif kind == "delete":
                broker.delete(op[1])
            elif kind == "cancel":
                broker.request_cancel(op[1])
            elif kind == "lease":
                clock.t += op[1]
                broker.expire_leases(60)
        except ProtocolError:
            pass
        if (kind == "read" or read_after) and sub is not None:
            await drain()
        elif kind == "disconnect" and sub is not None:
            sub.close()
            sub = None
        elif kind == "reconnect" and sub is None:
            sub = broker.subscribe(jobs_filter, last_id)
    if sub is None:
        sub = broker.subscribe(jobs_filter, last_id)
    await drain()
    sub.close()


def _verify(
    broker: Broker, received: list[Event], jobs_filter: tuple[str, ...] | None, all_lines: dict[str, list[str]]
) -> None:
    """What the subscriber was sent, replayed in order, equals the current state of every job it follows."""
    known: dict[str, dict[str, Any] | None] = {}
    lines_seen: dict[str, list[str]] = {}
    dropped_seen: dict[str, bool] = {}
    for event in received:
        if not event.name:
            continue  # the bare id that ends a sync
        body = json.loads(event.data)
        if event.name == "reset":
            known.clear()
            lines_seen.clear()
            dropped_seen.clear()
        elif event.name == "job":
            known[body["id"]] = body
        elif event.name == "removed":
            known[body["job"]] = None
            lines_seen[body["job"]] = []
            dropped_seen[body["job"]] = False
        else:
            lines_seen.setdefault(body["job"], []).extend(body["lines"])
            dropped_seen[body["job"]] = dropped_seen.get(body["job"], False) or bool(body.get("dropped"))
    for job in JOBS:
        if jobs_filter is not None and job not in jobs_filter:
            assert job not in known and job not in lines_seen
            continue
        entry = broker.store.get(job)
        if entry is None:
            assert known.get(job) is None
            continue
        assert known.get(job) == entry.job.to_dict()
        seen = lines_seen.get(job, [])
        retained = [line for _, line in entry.logs]
        # Every retained line exactly once, in order; what is missing was announced as dropped.
        assert len(seen) == len(set(seen))
        assert seen == sorted(seen, key=lambda s: int(s.split(":")[1]))
        assert seen[len(seen) - len(retained) :] == retained
        if set(all_lines[job]) - set(seen):
            assert dropped_seen.get(job), (job, all_lines[job], seen)


def test_an_ignored_cancel_of_a_submitted_job_does_not_escalate_to_an_interrupt() -> None:
    clock = [100.0]
    broker = Broker(clock=lambda: clock[0])
    broker.apply(batch(up("bg", kernel_id="k1", metadata={"submitted": True}), up("fg", kernel_id="k1")))
    broker.request_cancel("bg")
    broker.request_cancel("fg")
    clock[0] += 11
    # Only the loop in the kernel's main thread is interrupted: a background job's thread cannot be.
    assert broker.overdue_cancels(10) == [("fg", "k1")]


@pytest.fixture
def costly_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every window lasts the whole wake_delay, as after a pass over thousands of subscribers."""
    monkeypatch.setattr("jupyter_sse.core.broker._WINDOW_PER_PASS", 1e9)


@pytest.mark.usefixtures("costly_passes")
async def test_wake_delay_sends_the_first_change_at_once_and_gathers_the_rest_of_its_window() -> None:
    broker = Broker(wake_delay=0.05)
    sub = broker.subscribe()
    await sub.next_events(0.1)  # the (empty) initial snapshot
    broker.apply(batch(up("first")))
    # A change after a quiet window wakes the subscriber at once...
    assert [json.loads(e.data)["id"] for e in await sub.next_events(0)] == ["first"]
    for n in range(5):
        broker.apply(batch(up(f"j{n}", n=n)))
    # ...and the changes that follow within the window wait for its end: one wake-up reads all five.
    waiting = asyncio.ensure_future(sub.next_events(1.0))
    await until(lambda: parked(sub), what="the subscriber to wait")
    assert not waiting.done()
    events = await waiting
    assert sorted(json.loads(e.data)["id"] for e in events) == [f"j{n}" for n in range(5)]
    assert await sub.next_events(0.1) == []  # and no further wake-ups for the same changes
    broker.close()


async def test_without_a_wake_delay_subscribers_are_woken_at_once() -> None:
    broker = Broker()
    sub = broker.subscribe()
    await sub.next_events(0.1)
    broker.apply(batch(up("a")))
    started = asyncio.get_running_loop().time()
    (event,) = await sub.next_events(1.0)
    assert asyncio.get_running_loop().time() - started < 0.05
    assert json.loads(event.data)["id"] == "a"


# ---- the broadcast path: a subscription with a writer ----------------------------------------------------------
class Writer:
    """What a server adapter passes to ``set_writer``: records frames, takes them or refuses them."""

    def __init__(self, takes: bool = True, raises: bool = False) -> None:
        self.frames: list[bytes] = []
        self.takes = takes
        self.raises = raises

    def __call__(self, frame: bytes) -> bool:
        self.frames.append(frame)
        if self.raises:
            raise OSError("broken pipe")
        return self.takes


async def _parked(
    broker: Broker, writer: Callable[[bytes], bool], **kwargs: Any
) -> tuple[Subscription, asyncio.Future[list[Event]]]:
    """A subscription that read its initial snapshot and now waits in next_events, as a stream does."""
    sub = broker.subscribe(**kwargs)
    sub.set_writer(writer)
    await read(sub)
    waiting = asyncio.ensure_future(sub.next_events(30))
    await until(lambda: parked(sub), what="the subscriber to wait")
    return sub, waiting


async def test_a_waiting_subscriber_with_a_writer_is_written_its_events_without_being_woken() -> None:
    broker = Broker()
    plain = broker.subscribe()
    await read(plain)
    writer = Writer()
    sub, waiting = await _parked(broker, writer)
    expected: list[Event] = []
    for changes in (batch(up("a", n=1), logs={"a": ["one", "two"]}), batch(up("b", n=2)), batch(up("a", n=3))):
        broker.apply(changes)
        expected = await read(plain)  # what a subscriber that reads gets for the same change
        assert writer.frames[-1] == b"".join(e.encode() for e in expected)
    assert len(writer.frames) == 3
    assert sub.cursor == expected[-1].id
    await asyncio.sleep(0.01)
    assert not waiting.done()  # written to, never woken: nothing left for it to read
    sub.close()
    assert await waiting == []


async def test_subscribers_at_the_same_cursor_share_one_frame_encoded_once() -> None:
    broker = Broker()
    writers = [Writer() for _ in range(3)]
    parked = [await _parked(broker, w) for w in writers]
    broker.apply(batch(up("a", n=1), up("b", n=1)))
    frames = [w.frames[0] for w in writers]
    assert frames[0] is frames[1] is frames[2]
    assert [name for name, _ in decoded_frame(frames[0])] == ["job", "job"]
    for sub, waiting in parked:
        sub.close()
        await waiting


def decoded_frame(frame: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of each event in an encoded frame, read by the spec-following parser of test_sse."""
    return [(event.type, json.loads(event.data)) for event in spec_parse(frame).events]


@pytest.mark.parametrize("writer", [Writer(takes=False), Writer(raises=True)], ids=["refuses", "raises"])
async def test_a_writer_that_cannot_take_a_frame_leaves_the_events_to_next_events(writer: Writer) -> None:
    broker = Broker()
    sub, waiting = await _parked(broker, writer)
    broker.apply(batch(up("a", n=1)))
    assert len(writer.frames) == 1
    events = await asyncio.wait_for(waiting, 1)
    assert decoded(events) == decoded_frame(writer.frames[0])
    assert sub.cursor == events[-1].id
    sub.close()


async def test_a_subscription_that_ends_with_its_job_is_never_written_to() -> None:
    broker = Broker()
    broker.apply(batch(up("a")))
    writer = Writer()
    sub, waiting = await _parked(broker, writer, jobs=["a"], end_with_job="a")
    broker.apply(batch(up("a", state="succeeded")))
    events = await asyncio.wait_for(waiting, 1)
    assert writer.frames == []
    assert decoded(events)[-1][1]["state"] == "succeeded"
    assert sub.done


async def test_a_job_filtered_subscriber_is_written_only_its_jobs() -> None:
    broker = Broker()
    writer = Writer()
    sub, waiting = await _parked(broker, writer, jobs=["a"])
    broker.apply(batch(up("b", n=1)))
    assert writer.frames == []
    broker.apply(batch(up("a", n=1), up("b", n=2)))
    assert [(name, data["id"]) for name, data in decoded_frame(writer.frames[0])] == [("job", "a")]
    sub.close()
    await waiting


async def test_a_subscriber_that_is_not_waiting_reads_the_changes_itself() -> None:
    broker = Broker()
    writer = Writer()
    sub = broker.subscribe()
    sub.set_writer(writer)  # it has not read its initial snapshot yet: it is busy, as while sending
    broker.apply(batch(up("a", n=1)))
    assert writer.frames == []
    assert [data["id"] for _, data in decoded(await read(sub))] == ["a"]


async def test_a_resumed_subscriber_behind_the_others_gets_its_own_longer_frame() -> None:
    broker = Broker()
    broker.apply(batch(up("a", n=1)))
    first = broker.store.current_seq
    broker.apply(batch(up("b", n=1)))
    current, behind = Writer(), Writer()
    parked = [await _parked(broker, current), await _parked(broker, behind, last_event_id=broker.event_id(first))]
    behind_sub = parked[1][0]
    behind_sub.cursor = first  # as if it had not read b yet when it parked
    broker.apply(batch(up("c", n=1)))
    assert [data["id"] for _, data in decoded_frame(current.frames[0])] == ["c"]
    assert [data["id"] for _, data in decoded_frame(behind.frames[0])] == ["b", "c"]
    for sub, waiting in parked:
        sub.close()
        await waiting


@pytest.mark.usefixtures("costly_passes")
async def test_with_a_wake_delay_a_window_of_changes_is_written_as_one_frame() -> None:
    broker = Broker(wake_delay=0.05)
    writer = Writer()
    sub, waiting = await _parked(broker, writer)
    broker.apply(batch(up("first")))  # after a quiet window: written at once
    assert len(writer.frames) == 1
    for n in range(5):
        broker.apply(batch(up(f"j{n}", n=n)))
    assert len(writer.frames) == 1
    await until(lambda: len(writer.frames) == 2, timeout=2, what="the window's frame")
    assert sorted(data["id"] for _, data in decoded_frame(writer.frames[1])) == [f"j{n}" for n in range(5)]
    sub.close()
    await waiting
    broker.close()


async def test_a_read_that_fails_for_one_written_subscriber_does_not_keep_the_others_from_their_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = Broker()
    broken_writer, writer = Writer(), Writer()
    broken, broken_waiting = await _parked(broker, broken_writer)
    filtered, waiting = await _parked(broker, writer, jobs=["b"])
    collect = broker._collect

    def failing_for_one(sub: Subscription) -> list[Event]:
        if sub is broken:
            raise ValueError("cannot encode")
        return collect(sub)

    monkeypatch.setattr(broker, "_collect", failing_for_one)
    broker.apply(batch(up("b", n=1)))  # the publisher's request is not the one that fails
    assert [data["id"] for _, data in decoded_frame(writer.frames[0])] == ["b"]
    assert broken_writer.frames == []
    monkeypatch.undo()
    # the failing one was woken to read for itself instead
    assert [data["id"] for _, data in decoded(await asyncio.wait_for(broken_waiting, 1))] == ["b"]
    for sub in (broken, filtered):
        sub.close()
    await waiting


async def test_an_infinite_eta_from_valid_numbers_is_sent_as_unknown() -> None:
    broker = Broker()
    writer = Writer()
    sub, waiting = await _parked(broker, writer)
    broker.apply(batch(up("x", n=0, total=1e15, rate=5e-324)))
    ((_, data),) = decoded_frame(writer.frames[0])
    assert data["eta"] is None and data["rate"] == 5e-324
    sub.close()
    await waiting


async def test_after_a_cheap_pass_the_next_change_is_not_held_for_the_whole_wake_delay() -> None:
    broker = Broker(wake_delay=1.0)
    writer = Writer()
    sub, waiting = await _parked(broker, writer)
    broker.apply(batch(up("a", n=1)))
    broker.apply(batch(up("a", n=2)))  # within the window of a pass over one subscriber: microseconds long
    # well before the wake_delay of 1 s
    await until(lambda: len(writer.frames) == 2, timeout=0.5, what="the second frame")
    assert [data["n"] for frame in writer.frames for _, data in decoded_frame(frame)] == [1, 2]
    sub.close()
    await waiting
    broker.close()


async def test_a_costly_pass_holds_the_next_change_for_twice_as_long_as_it_took() -> None:
    broker = Broker(wake_delay=1.0)
    slow = Writer()
    real_call = slow.__call__

    def slow_writer(frame: bytes) -> bool:
        time.sleep(0.05)  # a pass that takes 50 ms, as over thousands of subscribers
        return real_call(frame)

    sub, waiting = await _parked(broker, slow_writer)
    broker.apply(batch(up("a", n=1)))
    broker.apply(batch(up("a", n=2)))
    await asyncio.sleep(0.05)
    assert len(slow.frames) == 1  # held: the window after a 50 ms pass is about 100 ms
    # and not for the whole wake_delay of 1 s
    await until(lambda: len(slow.frames) == 2, timeout=0.7, what="the held frame")
    sub.close()
    await waiting
    broker.close()
