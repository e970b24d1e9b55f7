"""Users and replicas together: two hubs with one users file on one Redis keep users apart and show an admin
everyone's jobs, whichever hub each job was published through. Real redis-server, real hubs (uvicorn)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from jupyter_sse.hub import BackgroundHub, UsersFile
from tests._replicas import RedisServer, StreamReader, wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def team(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[list[BackgroundHub], dict[str, str]]]:
    if redis_server.proc is None:  # a test stopped it and failed before starting it again
        redis_server.start()
    redis_server.flush()
    users = UsersFile(tmp_path / "users")
    tokens = {"alice": users.add("alice"), "bob": users.add("bob"), "root": users.add("root", admin=True)}
    hubs = [BackgroundHub(users=users.path, heartbeat=1.0, store=redis_server.url).start() for _ in range(2)]
    try:
        yield hubs, tokens
    finally:
        for hub in hubs:
            hub.stop()


def _post(hub: BackgroundHub, token: str, body: dict[str, Any]) -> None:
    response = httpx.post(
        hub.url + "jupyter-sse/api/updates", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text


def _list(hub: BackgroundHub, token: str) -> list[tuple[str, str]]:
    response = httpx.get(hub.url + "jupyter-sse/api/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text
    return sorted((job["owner"], job["id"]) for job in response.json()["jobs"])


def _seen(reader: StreamReader) -> set[tuple[str, str]]:
    return {(data["owner"], data["id"]) for _, name, data, _ in reader.events if name == "job"}


def test_two_users_on_two_replicas_stay_apart_and_an_admin_sees_both(
    team: tuple[list[BackgroundHub], dict[str, str]],
) -> None:
    (a, b), tokens = team
    alice_on_a = StreamReader(a.url, token=tokens["alice"])
    root_on_a = StreamReader(a.url, token=tokens["root"])
    root_on_b = StreamReader(b.url, token=tokens["root"])
    readers = [alice_on_a, root_on_a, root_on_b]
    try:
        for reader in readers:
            assert reader.connected.wait(10)
        # bob first appears on B, with the same job id as alice's: ids are per user
        _post(b, tokens["bob"], {"jobs": [{"id": "train", "name": "bob's", "n": 1}, {"id": "bob-only", "n": 1}]})
        _post(a, tokens["alice"], {"jobs": [{"id": "train", "name": "alice's", "n": 1}]})
        everyone = {("alice", "train"), ("bob", "train"), ("bob", "bob-only")}
        wait_for(lambda: _seen(root_on_b) >= everyone, what="the admin on B to see both users' jobs")
        # A learns of bob, who never published through it, and the admin's open stream there gets his jobs
        wait_for(lambda: _seen(root_on_a) >= everyone, what="the admin on A to see bob's jobs too")
        wait_for(lambda: ("alice", "train") in _seen(alice_on_a), what="alice's own job on A")
        _post(b, tokens["bob"], {"jobs": [{"id": "train", "n": 2}]})
        wait_for(
            lambda: any(d["owner"] == "bob" and d["n"] == 2 for _, n, d, _ in root_on_a.events if n == "job"),
            what="bob's change on the admin's stream on A",
        )
        _post(a, tokens["alice"], {"jobs": [{"id": "train", "n": 2}]})
        wait_for(lambda: any(job["n"] == 2 for job in alice_on_a.jobs("train")), what="alice's change on A")
        # nothing of bob's ever reached alice, though it went through the stream her hub follows
        assert _seen(alice_on_a) == {("alice", "train")}
        assert {job["name"] for job in alice_on_a.jobs("train")} == {"alice's"}
        for hub in (a, b):
            assert _list(hub, tokens["alice"]) == [("alice", "train")]
            assert _list(hub, tokens["bob"]) == [("bob", "bob-only"), ("bob", "train")]
        wait_for(lambda: _list(a, tokens["root"]) == sorted(everyone), what="the admin's list on A")
        assert _list(b, tokens["root"]) == sorted(everyone)
    finally:
        for reader in readers:
            reader.close()


def test_ids_come_from_one_counter_across_users_and_replicas(
    team: tuple[list[BackgroundHub], dict[str, str]],
) -> None:
    (a, b), tokens = team
    root_on_a = StreamReader(a.url, token=tokens["root"])
    try:
        assert root_on_a.connected.wait(10)
        for n in range(1, 4):
            _post(a, tokens["alice"], {"jobs": [{"id": "a", "n": n}]})
            _post(b, tokens["bob"], {"jobs": [{"id": "b", "n": n}]})
        wait_for(
            lambda: (
                {(d["owner"], d["n"]) for _, name, d, _ in root_on_a.events if name == "job"}
                >= {(user, 3) for user in ("alice", "bob")}
            ),
            what="both users' last changes on the admin's stream",
        )
        ids = [event_id for event_id, name, _, _ in root_on_a.events if name == "job"]
        assert len({event_id.partition(".")[0] for event_id in ids}) == 1  # one epoch
        seqs = [int(event_id.rpartition(".")[2]) for event_id in ids]
        assert len(set(seqs)) == len(seqs)  # no id handed out twice, whoever's job it was
    finally:
        root_on_a.close()


def _connections(redis_server: RedisServer) -> int:
    """Connections open to Redis, this one left out (both hubs run in this process)."""
    client = redis.Redis(port=redis_server.port)
    try:
        return len(client.client_list()) - 1
    finally:
        client.close()


def _last_n(reader: StreamReader) -> dict[str, int]:
    return {d["owner"]: d["n"] for _, name, d, _ in reader.events if name == "job"}


def test_one_reader_per_hub_follows_many_users_one_added_later_and_a_restart_of_redis(
    team: tuple[list[BackgroundHub], dict[str, str]], redis_server: RedisServer, tmp_path: Path
) -> None:
    (a, b), tokens = team
    root_on_b = StreamReader(b.url, token=tokens["root"], reconnect=True)
    try:
        assert root_on_b.connected.wait(10)
        _post(a, tokens["alice"], {"jobs": [{"id": "j", "n": 1}]})
        wait_for(lambda: _last_n(root_on_b).get("alice") == 1, what="alice's job on B")
        few = _connections(redis_server)
        # Users who first publish after the hubs started, one of them added to the users file only now: each
        # needs a store on both hubs, and B hears of them all through its one reader.
        users = UsersFile(tmp_path / "users")
        tokens.update({f"u{i}": users.add(f"u{i}") for i in range(12)})
        for name in sorted(tokens):
            _post(a, tokens[name], {"jobs": [{"id": "j", "n": 1}]})
        everyone = set(tokens)
        wait_for(lambda: set(_last_n(root_on_b)) == everyone, what="every user's job on B")
        # The connections to Redis do not grow with the users (they were 2 per user and hub).
        assert _connections(redis_server) <= few + 2, (few, _connections(redis_server))

        redis_server.stop()
        redis_server.start()  # the same port; the append-only file kept everything acknowledged
        for name in sorted(tokens):

            def accepted(name: str = name) -> bool:
                response = httpx.post(
                    a.url + "jupyter-sse/api/updates",
                    json={"jobs": [{"id": "j", "n": 2}]},
                    headers={"Authorization": f"Bearer {tokens[name]}"},
                    timeout=10,
                )
                return response.status_code == 200

            wait_for(accepted, what=f"{name}'s update accepted once Redis is back")
        wait_for(
            lambda: _last_n(root_on_b) == dict.fromkeys(everyone, 2), what="every user's change after the restart on B"
        )
        for hub in (a, b):
            assert _ns(hub, tokens["root"]) == dict.fromkeys(everyone, 2)
    finally:
        root_on_b.close()


def _ns(hub: BackgroundHub, token: str) -> dict[str, int]:
    response = httpx.get(hub.url + "jupyter-sse/api/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text
    return {job["owner"]: job["n"] for job in response.json()["jobs"]}


def test_an_admin_resuming_on_the_other_replica_gets_every_change_once_while_two_users_publish_fast(
    team: tuple[list[BackgroundHub], dict[str, str]],
) -> None:
    """alice publishes through A and bob through B as fast as they can; the admin's stream drops every few events
    and resumes, with its Last-Event-ID, on the other replica. Ids must only ever increase (so a resume neither
    repeats nor skips a change) and both users' last changes arrive."""
    (a, b), tokens = team
    stop = threading.Event()
    sent: dict[str, int] = {}

    def publish(hub: BackgroundHub, user: str) -> None:
        n = 0
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                n += 1
                response = client.post(
                    hub.url + "jupyter-sse/api/updates",
                    json={"jobs": [{"id": "j", "n": n}]},
                    headers={"Authorization": f"Bearer {tokens[user]}"},
                )
                assert response.status_code == 200, response.text
                sent[user] = n

    _post(a, tokens["alice"], {"jobs": [{"id": "j", "n": 0}]})
    _post(b, tokens["bob"], {"jobs": [{"id": "j", "n": 0}]})
    threads = [threading.Thread(target=publish, args=(hub, user)) for hub, user in ((a, "alice"), (b, "bob"))]
    events: list[tuple[str, str, dict[str, Any], float]] = []
    last: str | None = None
    for thread in threads:
        thread.start()
    try:
        for attempt in range(16):
            reader = StreamReader((a, b)[attempt % 2].url, last_event_id=last, token=tokens["root"])
            try:
                wait_for(lambda reader=reader: len(reader.events) >= 6, what="a few events before the drop")
            finally:
                reader.close()
            events.extend(reader.events)
            last = reader.last_id
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert set(sent) == {"alice", "bob"}
    reader = StreamReader(b.url, last_event_id=last, token=tokens["root"])
    try:
        wait_for(
            lambda: {owner: n for owner, n in _last_n(reader).items() if n == sent[owner]} == sent,
            what="both users' last changes after the last resume",
        )
    finally:
        reader.close()
    events.extend(reader.events)
    seqs = [
        (int(event_id.rpartition(".")[2]), name, d.get("owner"), d.get("n"))
        for event_id, name, d, _ in events
        if event_id
    ]
    bad = [(i, x, y) for i, (x, y) in enumerate(itertools.pairwise(seqs)) if x[0] >= y[0]]
    assert not bad, f"an id repeated or went back: {bad} in {seqs}"
    changes = [(d["owner"], d["n"]) for _, name, d, _ in events if name == "job"]
    assert len(changes) == len(set(changes)), "a change was sent twice"


def test_a_crashed_hubs_expired_id_blocks_are_forgotten_and_live_ones_kept(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        seconds, micros = r.time()
        now_ms = seconds * 1000 + micros // 1000
        # "<first id>:<until, ms>": a store of a hub killed while it held its lock, and one that holds it now
        r.hset("jupyter-sse:inflight", mapping={"dead": f"5:{now_ms - 1000}", "live": f"9:{now_ms + 60_000}"})
        users = UsersFile(tmp_path / "users")
        users.add("alice")
        hub = BackgroundHub(users=users.path, heartbeat=1.0, store=redis_server.url).start()
        try:
            wait_for(lambda: not r.hexists("jupyter-sse:inflight", "dead"), what="the expired block to be deleted")
            assert r.hget("jupyter-sse:inflight", "live") == f"9:{now_ms + 60_000}"
        finally:
            hub.stop()
    finally:
        r.close()
