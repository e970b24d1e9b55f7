"""Large histories over real sockets, on both servers: pages of GET jobs, a bounded first sync with no stray
``removed``, and ``reset`` for a resume from a history the server no longer has (another epoch, below the horizon,
an id from before epochs)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import SSEServer
from tests.core.test_sse import spec_parse

pytestmark = pytest.mark.timeout(120)


async def _publish(client: httpx.AsyncClient, server: SSEServer, jobs: list[dict[str, Any]]) -> None:
    for start in range(0, len(jobs), 1000):  # at most 1,000 jobs a request
        response = await client.post(
            server.api + "updates", json={"jobs": jobs[start : start + 1000]}, headers=server.publish_auth
        )
        assert response.status_code == 200, response.text


async def _read_until(
    client: httpx.AsyncClient, server: SSEServer, sentinel: str, headers: dict[str, str] | None = None
) -> list[tuple[str, Any, str]]:
    """Every event of a new ``GET events`` up to the ``job`` event of ``sentinel`` (published after it opened),
    as ``(name, data, last event id)``: so the test knows it has all the sync without waiting for a silence."""
    raw = b""
    async with client.stream("GET", server.api + "events", headers=headers or {}) as response:
        assert response.status_code == 200
        published = False
        async for chunk in response.aiter_raw():
            raw += chunk
            if not published and b"\n\n" in raw:  # the stream is open: the sentinel comes after its sync
                published = True
                await _publish(client, server, [{"id": sentinel, "n": 1}])
            if f'"id":"{sentinel}"'.encode() in raw and raw.endswith(b"\n\n"):
                break
    return [(e.type, json.loads(e.data), e.last_event_id) for e in spec_parse(raw).events]


async def test_pages_of_thousands_of_jobs_newest_first_with_a_total(api_server: SSEServer) -> None:
    # Running jobs, so that retention (500 finished jobs kept in the tests) keeps them all.
    jobs = [{"id": f"p{i:05d}", "n": i} for i in range(3000)] + [
        {"id": f"f{i:03d}", "state": "failed"} for i in range(200)
    ]
    async with httpx.AsyncClient(headers=api_server.auth, timeout=30) as client:
        for start in range(0, len(jobs), 800):  # several batches: several creation times
            await _publish(client, api_server, jobs[start : start + 800])
        first = (await client.get(api_server.api + "jobs")).json()
        assert len(first["jobs"]) == 100 and first["total"] == 3200  # bounded by default
        seen: list[dict[str, Any]] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": "700", **({"cursor": cursor} if cursor else {})}
            page = (await client.get(api_server.api + "jobs", params=params)).json()
            assert page["total"] == 3200
            seen.extend(page["jobs"])
            pages += 1
            cursor = page["next"]
            if cursor is None:
                break
        assert pages == 5
        assert len(seen) == 3200 and len({job["id"] for job in seen}) == 3200
        assert seen[:100] == first["jobs"]
        keys = [(job["created"], job["id"]) for job in seen]
        assert keys == sorted(keys, reverse=True)  # newest first, the same order across pages
        # A filter pages too, and counts only its own.
        failed = (await client.get(api_server.api + "jobs", params={"state": "failed", "limit": "150"})).json()
        assert failed["total"] == 200 and len(failed["jobs"]) == 150
        rest = await client.get(api_server.api + "jobs", params={"state": "failed", "cursor": failed["next"]})
        assert {job["id"] for job in failed["jobs"] + rest.json()["jobs"]} == {f"f{i:03d}" for i in range(200)}
        # Jobs that come and go between pages move no page boundary: a cursor is a place, not a position.
        middle = (await client.get(api_server.api + "jobs", params={"limit": "1000"})).json()
        await _publish(client, api_server, [{"id": "newer", "n": 1}])
        await client.delete(api_server.api + "jobs/f000")
        after = (await client.get(api_server.api + "jobs", params={"limit": "1000", "cursor": middle["next"]})).json()
        assert after["jobs"][0]["id"] == seen[1000]["id"]
        for bad in ({"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"limit": "-1"}, {"cursor": "not-a-cursor"}):
            response = await client.get(api_server.api + "jobs", params=bad)
            assert response.status_code == 400, (bad, response.text)
            assert response.json()["error"] == "invalid_query"


async def test_a_new_subscriber_gets_running_jobs_and_recent_finished_ones_and_no_removed(
    api_server: SSEServer,
) -> None:
    # 700 finished jobs: retention (500 kept in the tests) removes 200, which a new subscriber never saw.
    finished = [{"id": f"done{i:03d}", "state": "succeeded"} for i in range(700)]
    running = [{"id": f"run{i}", "n": i} for i in range(3)]
    async with httpx.AsyncClient(headers=api_server.auth, timeout=30) as client:
        await _publish(client, api_server, running)
        for start in range(0, 700, 100):
            await _publish(client, api_server, finished[start : start + 100])
        events = await _read_until(client, api_server, "sentinel")
    names = [name for name, _, _ in events]
    assert "removed" not in names and "reset" not in names
    synced = [data["id"] for name, data, _ in events if name == "job" and data["id"] != "sentinel"]
    # Every running job, and the 100 most recently finished (sync_finished_jobs), once each.
    assert sorted(synced) == sorted([f"run{i}" for i in range(3)] + [f"done{i:03d}" for i in range(600, 700)])


@pytest.mark.parametrize("kind", ["other_epoch", "plain_integer", "below_horizon", "from_the_future"])
async def test_a_resume_from_a_history_that_is_gone_gets_reset_then_the_sync(api_server: SSEServer, kind: str) -> None:
    async with httpx.AsyncClient(headers=api_server.auth, timeout=30) as client:
        await _publish(client, api_server, [{"id": "old", "state": "succeeded"}, {"id": "live", "n": 1}])
        fresh = await _read_until(client, api_server, "s1")
        epoch, _, seq = fresh[-1][2].partition(".")
        store = api_server.broker.store
        assert epoch == store.epoch
        last_event_id = {
            "other_epoch": f"{'x' if epoch[0] != 'x' else 'y'}{epoch[1:]}.{seq}",
            "plain_integer": seq,  # an id from before epochs
            "below_horizon": f"{epoch}.{store.horizon - 1}",
            "from_the_future": f"{epoch}.{int(seq) + 10**6}",
        }[kind]
        events = await _read_until(client, api_server, "s2", headers={"Last-Event-ID": last_event_id})
    assert events[0][0] == "reset"
    assert events[0][1] == {"epoch": store.epoch}
    jobs = {data["id"]: data["state"] for name, data, _ in events if name == "job"}
    assert jobs == {"old": "succeeded", "live": "running", "s1": "running", "s2": "running"}
    assert [name for name, _, _ in events[1:]].count("reset") == 0
    assert all(event_id.startswith(store.epoch + ".") for _, _, event_id in events[1:])


async def test_a_resume_within_the_history_gets_no_reset(api_server: SSEServer) -> None:
    async with httpx.AsyncClient(headers=api_server.auth, timeout=30) as client:
        await _publish(client, api_server, [{"id": "a", "n": 1}])
        fresh = await _read_until(client, api_server, "s1")
        await _publish(client, api_server, [{"id": "a", "n": 2}])
        events = await _read_until(client, api_server, "s2", headers={"Last-Event-ID": fresh[-1][2]})
    assert [(name, data.get("id"), data.get("n")) for name, data, _ in events] == [
        ("job", "a", 2),
        ("job", "s2", 1),
    ]


async def test_a_live_subscriber_hears_of_no_removal_of_jobs_its_sync_left_out(api_server: SSEServer) -> None:
    # 500 finished jobs (as many as the tests keep): each new finished job makes retention remove the oldest one,
    # which the subscriber's sync (the 100 most recent) never sent.
    finished = [{"id": f"done{i:03d}", "state": "succeeded"} for i in range(500)]
    async with httpx.AsyncClient(headers=api_server.auth, timeout=30) as client:
        for start in range(0, 500, 100):
            await _publish(client, api_server, finished[start : start + 100])
        raw = b""
        async with client.stream("GET", api_server.api + "events") as response:
            stage = 0
            async for chunk in response.aiter_raw():
                raw += chunk
                if stage == 0 and b"\n\n" in raw:
                    stage = 1
                    await _publish(client, api_server, [{"id": "s1", "n": 1}])
                elif stage == 1 and b'"id":"s1"' in raw and raw.endswith(b"\n\n"):
                    stage = 2  # synced and live: now 50 new jobs end, and retention removes 50 old ones
                    for i in range(50):
                        await _publish(client, api_server, [{"id": f"new{i}", "state": "failed"}])
                    await client.delete(api_server.api + "jobs/done499")  # one the sync sent
                    await _publish(client, api_server, [{"id": "s2", "n": 1}])
                elif stage == 2 and b'"id":"s2"' in raw and raw.endswith(b"\n\n"):
                    break
    events = [(e.type, json.loads(e.data)) for e in spec_parse(raw).events]
    assert [data["job"] for name, data in events if name == "removed"] == ["done499"]
    assert {data["id"] for name, data in events if name == "job" and data["id"].startswith("new")} == {
        f"new{i}" for i in range(50)
    }
