"""Notifications from hub replicas sharing Redis: one message per job end, whichever replicas saw it end, to the
targets its user set through any replica. Real redis-server, real hubs (uvicorn), a real json:// endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Scope

from jupyter_sse.core import Broker, parse_update_batch
from jupyter_sse.core.notify import NotifyRules
from jupyter_sse.core.store_redis import RedisStore
from jupyter_sse.hub import BackgroundHub, UsersFile
from jupyter_sse.hub._identity import Identity
from jupyter_sse.hub._notify import HubNotifications
from tests._notify_targets import HTTPSink
from tests._replicas import RedisServer, wait_for

pytestmark = pytest.mark.timeout(90)

API = "jupyter-sse/api/"
RULES = {"min_duration": 0, "window": 0}


async def _carol(scope: Scope, token: str | None) -> Identity | None:
    # a user the hubs know without a users file (as JupyterHub services know theirs): settings kept in Redis
    return Identity("carol") if token == "carol-token" else None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _post(hub: BackgroundHub, token: str, *jobs: dict[str, Any]) -> None:
    response = httpx.post(
        hub.url + API + "updates", json={"jobs": list(jobs)}, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text


def _put(hub: BackgroundHub, token: str, settings: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.put(hub.url + API + "notify", json=settings, headers=headers, timeout=10)
    assert response.status_code == 200, response.text


def _state(hub: BackgroundHub, token: str, job_id: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.get(hub.url + API + f"jobs/{job_id}", headers=headers, timeout=10)
    return str(response.json()["state"]) if response.status_code == 200 else ""


def _titles(sink: HTTPSink, path: str) -> list[str]:
    return [body["title"] for p, body in zip(sink.paths, sink.bodies, strict=True) if p == path]


def _sent(hubs: list[BackgroundHub]) -> int:
    return sum(hub.broker.metrics.notifications_sent for hub in hubs)


def test_one_message_per_job_end_across_replicas(
    tmp_path: Path, redis_server: RedisServer, http_sink: HTTPSink
) -> None:
    users = UsersFile(tmp_path / "users.json")
    alice = users.add("alice")
    hubs = [
        BackgroundHub(users=users.path, identify=[_carol], store=redis_server.url, publisher_lease=1.0).start()
        for _ in range(2)
    ]
    a, b = hubs
    try:
        # each sets their targets through replica A; replica B sends with them (users file; Redis)
        _put(a, alice, {"urls": [http_sink.url("alice")], **RULES})
        _put(a, "carol-token", {"urls": [http_sink.url("carol")], **RULES})
        # a job started through A ends through B; its publisher then retries the end through A (an answer lost
        # on the way back): A applies it to a job it had seen running, yet B already sent the message
        _post(a, alice, {"id": "train", "name": "train", "n": 1})
        end = {"id": "train", "state": "succeeded", "n": 10, "elapsed": 3}
        _post(b, alice, end)
        wait_for(lambda: _titles(http_sink, "/alice"), what="alice's message")
        response = httpx.post(
            a.url + API + "updates",
            json={"jobs": [end], "logs": [{"job": "train", "lines": ["saved the model"]}]},
            headers={"Authorization": f"Bearer {alice}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        # carol's job: started through B, which never heard her settings, and left silent: both replicas' lease
        # checks may find it so; still one message
        _post(b, "carol-token", {"id": "train", "name": "train", "n": 1})
        wait_for(lambda: _state(a, "carol-token", "train") == "lost", what="A to see carol's job lost")
        wait_for(lambda: _state(b, "carol-token", "train") == "lost", what="B to see carol's job lost")
        # Then a last job for each through each replica: once those are told, anything sent before them is too.
        for hub, name in ((a, "last-a"), (b, "last-b")):
            _post(hub, alice, {"id": name, "name": name}, {"id": name, "state": "succeeded", "elapsed": 1})
        wait_for(lambda: len(_titles(http_sink, "/alice")) >= 3, what="the last jobs' messages")
        wait_for(lambda: _sent(hubs) == len(http_sink.bodies), what="every message sent counted")
    finally:
        for hub in hubs:
            hub.stop()
    assert sorted(_titles(http_sink, "/alice")) == [
        "last-a succeeded after 1.0 s",
        "last-b succeeded after 1.0 s",
        "train succeeded after 3.0 s",
    ]
    (carol,) = _titles(http_sink, "/carol")
    assert carol.startswith("train lost after ")
    assert _sent(hubs) == 4


def test_a_job_two_replicas_both_ended_makes_one_message(redis_server: RedisServer, http_sink: HTTPSink) -> None:
    """Both replicas' lease checks find the same publisher silent at the same moment and each records the end
    (it happens, rarely, in the test above): the claim in Redis lets one of them send."""

    async def run() -> None:
        def store() -> RedisStore:
            return RedisStore(redis_server.url, prefix="jupyter-sse:{alice}:", shared_prefix="jupyter-sse:")

        first = Broker(store(), owner="alice")
        first.apply(parse_update_batch(b'{"jobs": [{"id": "train", "name": "train", "n": 1}]}'))
        second = Broker(store(), owner="alice")  # a replica that knows the job as running
        stores = [first.store, second.store]
        assert second.get("train").state == "running"
        rules = NotifyRules(min_duration=0, window=0)
        replicas = [HubNotifications([http_sink.url("hub")], rules, store_url=redis_server.url) for _ in stores]
        for notifications, broker in zip(replicas, (first, second), strict=True):
            notifications.start(broker.metrics)
            notifications.attach(broker)
        try:
            assert first.expire_leases(0) == ["train"]
            assert second.expire_leases(0) == ["train"]  # it had not heard of the first's yet: ended twice
        finally:
            for notifications in replicas:
                notifications.stop()  # lets the sender's workers finish what is queued
            for one in stores:
                one.close()
        assert first.metrics.notifications_sent + second.metrics.notifications_sent == 1

    asyncio.run(run())
    (message,) = http_sink.bodies
    assert message["title"].startswith("train lost after ")
