"""The client and the CLI against a real hub: `reset` after the hub restarted with its memory store (no ghost jobs),
and `list` reading page by page."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest

from jupyter_sse.cli import main
from jupyter_sse.client import AsyncClient, Client
from jupyter_sse.hub import BackgroundHub
from tests._servers import free_port

pytestmark = pytest.mark.timeout(60)


def _publish(hub: BackgroundHub, jobs: list[dict[str, Any]]) -> None:
    for start in range(0, len(jobs), 1000):
        response = httpx.post(
            hub.url + "jupyter-sse/api/updates",
            json={"jobs": jobs[start : start + 1000]},
            headers={"Authorization": f"Bearer {hub.token}"},
        )
        response.raise_for_status()


@pytest.fixture
def hub() -> Iterator[BackgroundHub]:
    # retry_ms: the client waits this long before it reconnects to the restarted hub.
    with BackgroundHub(secrets.token_urlsafe(8), port=free_port(), heartbeat=1.0, retry_ms=200) as hub:
        yield hub


def test_follow_after_the_hub_restarts_gets_reset_and_forgets_the_jobs_that_vanished(hub: BackgroundHub) -> None:
    _publish(hub, [{"id": "old-running", "n": 1}, {"id": "old-done", "state": "succeeded"}])
    names: list[str] = []
    with Client(hub.url, hub.token) as client, closing(client.follow()) as events:
        for event in events:
            names.append(event.event)
            if set(client.jobs) == {"old-running", "old-done"}:
                break
        # The hub restarts on the same port with an empty memory store: a new history.
        hub.stop()
        hub.start()
        _publish(hub, [{"id": "new", "n": 2}])
        for event in events:
            names.append(event.event)
            if event.event == "job" and event.data["id"] == "new":
                break
        # No ghost: the jobs of the old history are gone from what the client knows.
        assert set(client.jobs) == {"new"}
    assert names.count("reset") == 1
    assert names[-2:] == ["reset", "job"]  # then the new history's sync: only the new job


def test_async_follow_passes_reset_on_and_clears_its_jobs(hub: BackgroundHub) -> None:
    _publish(hub, [{"id": "a", "n": 1}])

    async def main_() -> tuple[list[str], dict[str, Any]]:
        async with AsyncClient(hub.url, hub.token) as client:
            client.jobs["ghost"] = {"id": "ghost", "state": "running"}  # known from another history
            seen: list[str] = []
            stream = client.follow(last_event_id="0ther.12")  # an id from another epoch
            async for event in stream:
                seen.append(event.event)
                if event.event == "job":
                    break
            await stream.aclose()
            return seen, dict(client.jobs)

    seen, jobs = asyncio.run(main_())
    assert seen == ["reset", "job"]
    assert set(jobs) == {"a"}


def test_cli_list_reads_page_by_page(hub: BackgroundHub, capsys: pytest.CaptureFixture[str]) -> None:
    _publish(hub, [{"id": f"j{i:04d}", "n": i} for i in range(2500)])
    base = ["--url", hub.url, "--token", hub.token]
    assert main(["list", *base]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 + 100  # the header and the 100 newest
    assert "the 100 newest of 2500 jobs" in err
    assert main(["list", "--all", "--json", *base]) == 0
    out, err = capsys.readouterr()
    jobs = json.loads(out)
    assert len(jobs) == 2500 and len({job["id"] for job in jobs}) == 2500  # three pages of at most 1,000
    assert main(["list", "--limit", "1500", "--json", *base]) == 0
    out, err = capsys.readouterr()
    assert [job["id"] for job in json.loads(out)] == [job["id"] for job in jobs[:1500]]
    assert "the 1500 newest of 2500" in err


def test_cli_follow_across_a_hub_restart_prints_the_reset_and_ends_with_the_new_historys_state(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A job stream of a job the hub does not know is a 404, which ends `follow`: the client must reconnect after
    # the job is published again, so it waits at least 1.2 s (retry 1.5 s, jitter 20 %), and the restart is quicker.
    hub = BackgroundHub(secrets.token_urlsafe(8), port=free_port(), heartbeat=1.0, retry_ms=1500).start()
    _publish(hub, [{"id": "job", "n": 1, "total": 3}])
    codes: list[int] = []
    follow = threading.Thread(
        target=lambda: codes.append(main(["follow", "job", "--json", "--url", hub.url, "--token", hub.token]))
    )
    follow.start()
    try:
        deadline = time.monotonic() + 10
        while hub.broker.subscriber_count == 0:
            assert time.monotonic() < deadline, "follow did not connect"
            time.sleep(0.01)
        # The hub restarts; the job's publisher reports again, and the job ends in the new history.
        hub.stop()
        hub.start()
        _publish(hub, [{"id": "job", "n": 3, "total": 3, "state": "succeeded"}])
    finally:
        follow.join(20)
        hub.stop()
    assert codes == [0]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["job", "reset", "job"]
    assert (lines[0]["data"]["n"], lines[2]["data"]["state"]) == (1, "succeeded")
