"""The write lock that keeps the replicas' ids in the stream's order: a replica waiting for it keeps serving, and
concurrent writes through every replica stay in order with nothing lost. Real redis-server, real hubs."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
import redis

from jupyter_sse.core.store_redis import RedisStore
from jupyter_sse.hub import BackgroundHub
from tests._replicas import AUTH, TOKEN, RedisServer, StreamReader, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def store_url(redis_server: RedisServer) -> str:
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


def _seq(event_id: str) -> int:
    return int(event_id.rpartition(".")[2])


def test_a_replica_waiting_for_the_lock_keeps_serving(store_url: str) -> None:
    """Another replica holds the lock for 1 s: a POST through this one waits for it, and meanwhile this replica
    still answers within a fraction of that (a wait that blocked the loop would hold every answer for the whole
    second), then the POST goes through as soon as the lock is let go."""
    with BackgroundHub(TOKEN, store=store_url) as hub:
        owner = hub.broker.owner
        # The hub's own store for that user: the same keys, another holder (as another replica would be).
        other = RedisStore(store_url, prefix=f"jupyter-sse:{{{owner}}}:", shared_prefix="jupyter-sse:")
        posted: dict[str, Any] = {}

        def post() -> None:
            started = time.monotonic()
            body = {"jobs": [{"id": "waits", "n": 1}]}
            response = httpx.post(hub.url + "jupyter-sse/api/updates", json=body, headers=AUTH, timeout=10)
            posted.update(status=response.status_code, at=time.monotonic(), took=time.monotonic() - started)

        try:
            other.next_seq()  # takes the lock, and keeps it until its commit
            held_at = time.monotonic()
            poster = threading.Thread(target=post)
            poster.start()
            slowest = 0.0
            with httpx.Client(headers=AUTH, timeout=10) as client:
                while time.monotonic() - held_at < 1.0:
                    started = time.monotonic()
                    assert client.get(hub.url + "jupyter-sse/api/jobs").status_code == 200
                    slowest = max(slowest, time.monotonic() - started)
                    time.sleep(0.02)
            assert slowest < 0.25, f"an answer took {slowest:.3f} s while another replica held the lock"
            assert not posted, "the POST went through while the lock was held elsewhere"
            released_at = time.monotonic()
            other.commit()  # nothing changed: lets the lock go
            poster.join(5)
            assert posted["status"] == 200
            assert posted["at"] - released_at < 0.5, "the waiting POST was not woken by the release"
            assert hub.broker.get("waits").n == 1
        finally:
            other.close()


def test_concurrent_writes_through_three_replicas_keep_ids_in_stream_order(store_url: str) -> None:
    """Three replicas, each taking progress and log lines for its own jobs from several publishers at once (so
    requests wait for the lock together): every replica's subscriber sees ids only grow, every acknowledged log
    line in order and every job's last progress; the stream in Redis holds the ids in increasing order."""
    hubs = [BackgroundHub(TOKEN, store=store_url).start() for _ in range(3)]
    readers: list[StreamReader] = []
    try:
        readers = [StreamReader(hub.url) for hub in hubs]
        for reader in readers:
            assert reader.connected.wait(10)
        acked: dict[str, list[str]] = {}
        lock = threading.Lock()

        def publish(hub: BackgroundHub, job: str) -> None:
            lines: list[str] = []
            with httpx.Client(headers=AUTH, timeout=10) as client:
                for n in range(1, 31):
                    body: dict[str, Any] = {"jobs": [{"id": job, "n": n, "total": 30}]}
                    if n % 3 == 0:  # a promised change among progress alone
                        body["logs"] = [{"job": job, "lines": [f"{job} {n}"]}]
                    response = client.post(hub.url + "jupyter-sse/api/updates", json=body)
                    assert response.status_code == 200, response.text
                    if n % 3 == 0:
                        lines.append(f"{job} {n}")
            with lock:
                acked[job] = lines

        threads = [
            threading.Thread(target=publish, args=(hub, f"r{i}-j{k}")) for i, hub in enumerate(hubs) for k in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert len(acked) == 9 and all(len(lines) == 10 for lines in acked.values())
        for reader in readers:
            for job, lines in acked.items():
                wait_for(lambda r=reader, j=job: any(d["n"] == 30 for d in r.jobs(j)), what=f"the end of {job}")
                got = [x for _, name, d, _ in reader.events if name == "log" and d["job"] == job for x in d["lines"]]
                assert got == lines
            ids = [_seq(event_id) for event_id, *_ in reader.events]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
        owner = hubs[0].broker.owner
        client = redis.Redis.from_url(store_url, decode_responses=True)
        try:
            written = [int(fields["s"]) for _, fields in client.xrange(f"jupyter-sse:{{{owner}}}:events")]
        finally:
            client.close()
        assert len(written) >= 9 and written == sorted(written) and len(set(written)) == len(written)
    finally:
        for reader in readers:
            reader.close()
        for hub in hubs:
            hub.stop()
