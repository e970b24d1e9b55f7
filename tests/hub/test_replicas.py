"""Hubs on one Redis act as one hub: jobs, ids, cancels and resumes cross replicas, and nothing acknowledged is
lost when a replica or Redis goes away. Real redis-server, real hubs (uvicorn), real nginx in front."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jupyter_sse.cli import main
from jupyter_sse.core import Broker, parse_update_batch
from jupyter_sse.core.store import StoreUnavailable
from jupyter_sse.core.store_redis import RedisStore
from jupyter_sse.hub import BackgroundHub
from tests._replicas import AUTH, TOKEN, RedisServer, StreamReader, wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def store_url(redis_server: RedisServer) -> str:
    if redis_server.proc is None:  # a test stopped it and failed before starting it again
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def hubs(store_url: str) -> Iterator[list[BackgroundHub]]:
    started = [BackgroundHub(TOKEN, heartbeat=1.0, store=store_url).start() for _ in range(2)]
    try:
        yield started
    finally:
        for hub in started:
            hub.stop()


def _seq(event_id: str) -> int:
    """The sequence number of an event id (``<epoch>.<seq>``)."""
    return int(event_id.rpartition(".")[2])


def _post(hub: BackgroundHub | str, body: dict[str, Any]) -> httpx.Response:
    url = hub if isinstance(hub, str) else hub.url
    return httpx.post(url + "jupyter-sse/api/updates", json=body, headers=AUTH, timeout=10)


def _get(hub: BackgroundHub | str, path: str) -> httpx.Response:
    url = hub if isinstance(hub, str) else hub.url
    return httpx.get(url + "jupyter-sse/api/" + path, headers=AUTH, timeout=10)


def test_a_job_published_through_one_replica_reaches_the_subscribers_of_another(hubs: list[BackgroundHub]) -> None:
    a, b = hubs
    reader = StreamReader(b.url)
    try:
        assert reader.connected.wait(10)
        assert _post(a, {"jobs": [{"id": "train", "name": "training", "total": 10, "n": 0}]}).status_code == 200
        for n in range(1, 6):
            assert _post(a, {"jobs": [{"id": "train", "n": n}], "logs": [{"job": "train", "lines": [f"step {n}"]}]})
        wait_for(lambda: any(job["n"] == 5 for job in reader.jobs("train")), what="n=5 on replica B")
        assert _get(b, "jobs/train").json()["name"] == "training"
        logs = [line for _, name, data, _ in reader.events if name == "log" for line in data["lines"]]
        assert logs == [f"step {n}" for n in range(1, 6)]
        ids = [_seq(event_id) for event_id, *_ in reader.events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    finally:
        reader.close()


def test_ids_are_global_and_a_resume_on_another_replica_sends_only_what_was_missed(
    hubs: list[BackgroundHub],
) -> None:
    a, b = hubs
    _post(a, {"jobs": [{"id": "one", "n": 1}]})
    _post(b, {"jobs": [{"id": "two", "n": 1}]})
    first = StreamReader(a.url)
    try:
        wait_for(lambda: first.jobs("one") and first.jobs("two"), what="both jobs on replica A")
    finally:
        first.close()
    seen = first.last_id
    assert seen is not None
    _post(b, {"jobs": [{"id": "two", "n": 2}]})  # written through B while nobody listened
    wait_for(lambda: a.broker.get("two").n == 2, what="replica A to apply B's change")
    resumed = StreamReader(b.url, last_event_id=seen)
    try:
        wait_for(lambda: resumed.jobs("two"), what="the missed change on replica B")
        assert [data["n"] for data in resumed.jobs("two")] == [2]
        assert resumed.jobs("one") == []  # nothing it already had
        assert _seq(resumed.events[0][0]) > _seq(seen)
    finally:
        resumed.close()


def test_a_cancel_through_one_replica_reaches_the_publisher_polling_another(hubs: list[BackgroundHub]) -> None:
    a, b = hubs
    assert _post(a, {"jobs": [{"id": "loop", "n": 1}]}).json() == {"cancel": []}
    wait_for(lambda: b.broker.store.get("loop") is not None, what="replica B to know the job")
    cancelled = httpx.post(b.url + "jupyter-sse/api/jobs/loop/cancel", headers=AUTH, timeout=10)
    assert cancelled.status_code == 202
    assert wait_for(lambda: _post(a, {"jobs": [{"id": "loop", "n": 2}]}).json()["cancel"], what="the cancel on A") == [
        "loop"
    ]
    assert _post(a, {"jobs": [{"id": "loop", "state": "cancelled"}]}).status_code == 200
    wait_for(lambda: _get(b, "jobs/loop").json()["state"] == "cancelled", what="the end on replica B")


def test_a_delete_through_one_replica_removes_the_job_everywhere(hubs: list[BackgroundHub]) -> None:
    a, b = hubs
    _post(a, {"jobs": [{"id": "done", "state": "succeeded"}]})
    wait_for(lambda: b.broker.store.get("done") is not None, what="replica B to know the job")
    reader = StreamReader(a.url)
    try:
        wait_for(lambda: reader.jobs("done"), what="the job on A's stream")
        assert httpx.delete(b.url + "jupyter-sse/api/jobs/done", headers=AUTH, timeout=10).status_code == 204
        wait_for(lambda: any(name == "removed" for _, name, *_ in reader.events), what="`removed` on replica A")
        assert _get(a, "jobs/done").status_code == 404
    finally:
        reader.close()


def test_a_new_replica_starts_with_every_job_and_its_log(store_url: str, hubs: list[BackgroundHub]) -> None:
    a, _ = hubs
    _post(a, {"jobs": [{"id": "kept", "n": 3, "total": 9}], "logs": [{"job": "kept", "lines": ["a", "b"]}]})
    with BackgroundHub(TOKEN, store=store_url) as late:
        assert _get(late, "jobs/kept").json()["n"] == 3
        reader = StreamReader(late.url)
        try:
            wait_for(lambda: any(name == "log" for _, name, *_ in reader.events), what="the log on the new replica")
            assert [data["lines"] for _, name, data, _ in reader.events if name == "log"] == [["a", "b"]]
        finally:
            reader.close()


def test_redis_away_means_503_and_a_store_that_cannot_start(redis_server: RedisServer, store_url: str) -> None:
    with BackgroundHub(TOKEN, store=store_url) as hub:
        assert _post(hub, {"jobs": [{"id": "before", "n": 1}]}).status_code == 200
        redis_server.stop()
        try:
            refused = _post(hub, {"jobs": [{"id": "before", "n": 2}, {"id": "during", "n": 1}]})
            assert refused.status_code == 503
            assert refused.json()["error"] == "storage_unavailable"
            # Refused whole: nothing of it was kept, so the publisher's retry is the one that counts.
            assert _get(hub, "jobs/before").json()["n"] == 1
            assert _get(hub, "jobs/during").status_code == 404
            with pytest.raises(StoreUnavailable):
                RedisStore(store_url, socket_timeout=0.5)
        finally:
            redis_server.start()
        # Back (from its append-only file): the publisher's retry is accepted, and what was acknowledged is there.
        retry = {"jobs": [{"id": "before", "n": 2}, {"id": "during", "n": 1}]}
        wait_for(lambda: _post(hub, retry).status_code == 200, what="the retry to be accepted")
    with BackgroundHub(TOKEN, store=store_url) as fresh:
        assert {job["id"]: job["n"] for job in _get(fresh, "jobs").json()["jobs"]} == {"before": 2, "during": 1}


def test_cross_replica_latency(hubs: list[BackgroundHub]) -> None:
    """Publish through A, time the arrival on B's stream (loopback; both hubs and the clients in this process)."""
    a, b = hubs
    reader = StreamReader(b.url)
    try:
        assert reader.connected.wait(10)
        sent: dict[int, float] = {}
        with httpx.Client(headers=AUTH, timeout=10) as client:
            for n in range(50):
                sent[n] = time.time()
                client.post(a.url + "jupyter-sse/api/updates", json={"jobs": [{"id": "timed", "n": n}]})
                wait_for(lambda n=n: any(job["n"] == n for job in reader.jobs("timed")), what=f"n={n} on B")
        arrived = {job["n"]: t for _, name, job, t in reader.events if name == "job" and job["id"] == "timed"}
        delays = sorted(arrived[n] - sent[n] for n in sent)
        median = statistics.median(delays)
        print(f"cross-replica delay over 50 updates: median {median * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms")
        assert median < 0.2  # a few ms when the machine is idle; a loaded shared machine adds its own queueing
    finally:
        reader.close()


def test_the_hub_refuses_a_store_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Redis URL"):
        BackgroundHub(TOKEN, store=f"sqlite:///{tmp_path}/x").start()


def test_concurrent_publishers_on_two_replicas_are_seen_whole_and_in_order_on_a_third(store_url: str) -> None:
    """The write lock keeps the stream in id order: a subscriber on a third replica, whose cursor moves with every
    event, never skips a change written concurrently through the other two."""
    with (
        BackgroundHub(TOKEN, store=store_url) as a,
        BackgroundHub(TOKEN, store=store_url) as b,
        BackgroundHub(TOKEN, store=store_url) as c,
    ):
        reader = StreamReader(c.url)
        acked: dict[str, list[str]] = {"on-a": [], "on-b": []}

        def publish(hub: BackgroundHub, job: str) -> None:
            with httpx.Client(headers=AUTH, timeout=10) as client:
                for n in range(40):
                    body = {"jobs": [{"id": job, "n": n}], "logs": [{"job": job, "lines": [f"{job} {n}"]}]}
                    if client.post(hub.url + "jupyter-sse/api/updates", json=body).status_code == 200:
                        acked[job].append(f"{job} {n}")

        try:
            assert reader.connected.wait(10)
            threads = [threading.Thread(target=publish, args=(hub, job)) for hub, job in ((a, "on-a"), (b, "on-b"))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert [len(lines) for lines in acked.values()] == [40, 40]
            for job, lines in acked.items():
                wait_for(lambda job=job: any(d["n"] == 39 for d in reader.jobs(job)), what=f"the end of {job} on C")
                got = [x for _, name, d, _ in reader.events if name == "log" and d["job"] == job for x in d["lines"]]
                assert got == lines
            ids = [_seq(event_id) for event_id, *_ in reader.events]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
        finally:
            reader.close()


def test_a_change_first_applies_the_earlier_changes_of_other_replicas(store_url: str) -> None:
    """No listener runs here: only taking the write lock brings replica A's change to B, before B's own."""

    async def main() -> None:
        store_a, store_b = RedisStore(store_url), RedisStore(store_url)
        a, b = Broker(store_a), Broker(store_b)
        store_b.on_remote = b.changed_elsewhere
        sub = b.subscribe()
        assert await sub.next_events(1) == []
        a.apply(parse_update_batch(b'{"jobs": [{"id": "x", "n": 1}]}'))
        b.apply(parse_update_batch(b'{"jobs": [{"id": "y", "n": 1}]}'))
        events = await sub.next_events(1)
        assert [(e.name, json.loads(e.data)["id"]) for e in events] == [("job", "x"), ("job", "y")]
        assert events[0].id < events[1].id
        assert store_a.epoch == store_b.epoch
        store_a.close()
        store_b.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("store", "says"),
    [("sqlite:///jobs.db", "must be a Redis URL"), ("redis://127.0.0.1:1/0", "cannot start the hub")],
)
def test_the_cli_refuses_a_store_it_cannot_use_or_reach(
    store: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["hub", "--port", "0", "--token", TOKEN, "--store", store]) == 2
    assert says in capsys.readouterr().err
