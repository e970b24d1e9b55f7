"""``jupyter_sse_*`` metrics on jupyter_server's own ``/metrics``, scraped from a real server with
prometheus_client's parser after a known workload; every value checked."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests._notify_targets import HTTPSink
from tests._sse import EventReader
from tests.conftest import SSEServer, open_raw_stream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def jp_server_config(http_sink: HTTPSink) -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_sse": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
        },
        "SSEExtension": {
            "store_kind": "memory",
            "notify_window": 0.0,
            "heartbeat_interval": 1.0,
            "send_timeout": 1.0,
        },
    }


async def scrape(server: SSEServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(headers=server.auth) as client:
        response = await client.get(server.url + "metrics")
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name.startswith("jupyter_sse_"):
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_after_a_known_workload(sse_server: SSEServer, http_sink: HTTPSink) -> None:
    empty = await scrape(sse_server)
    assert empty[("jupyter_sse_updates_accepted_total", ())] == 0
    assert empty[("jupyter_sse_jobs", (("state", "running"),))] == 0
    async with httpx.AsyncClient(headers=sse_server.publish_auth) as client:

        async def post(body: Any, status: int = 200) -> None:
            response = await client.post(sse_server.api + "updates", json=body)
            assert response.status_code == status, response.text

        await post({"jobs": [{"id": "a", "name": "a", "metadata": {"notify": http_sink.url("a")}}, {"id": "b"}]})
        await post({"jobs": [{"id": "c"}]})
        await post({"jobs": [{"id": "a", "state": "succeeded", "elapsed": 2.0}]})
        await post({"jobs": [{"id": "b", "state": "failed", "elapsed": 20.0}]})
        await post({"jobs": [{"id": "a", "state": "running"}]}, 409)  # job_finished
        await post({"jobs": [], "logs": [{"job": "nope", "lines": ["x"]}]}, 404)  # not_found
        await post({"jobs": [{"id": "bad id!"}]}, 400)  # invalid_update
        response = await client.post(sse_server.api + "updates", content=b"{not json")
        assert response.status_code == 400  # invalid_json
    # one subscriber reads the initial sync: one snapshot per job
    async with (
        httpx.AsyncClient(headers=sse_server.auth, timeout=10) as client,
        client.stream("GET", sse_server.api + "events") as stream,
    ):
        events = EventReader(stream)  # kept while the stream is to stay open: dropping it closes the response
        assert [event.event for event in await events.take(3)] == ["job"] * 3
        deadline = time.monotonic() + 10
        while http_sink.bodies == [] or sse_server.broker.metrics.notifications_sent < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        m = await scrape(sse_server)

    def value(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    assert {state: value("jupyter_sse_jobs", state=state) for state in ("running", "succeeded", "failed")} == {
        "running": 1,
        "succeeded": 1,
        "failed": 1,
    }
    assert value("jupyter_sse_jobs", state="pending") == value("jupyter_sse_jobs", state="lost") == 0
    assert value("jupyter_sse_updates_accepted_total") == 4
    assert {
        reason: value("jupyter_sse_updates_refused_total", reason=reason)
        for reason in ("job_finished", "not_found", "invalid_update", "invalid_json")
    } == {"job_finished": 1, "not_found": 1, "invalid_update": 1, "invalid_json": 1}
    assert value("jupyter_sse_events_delivered_total") == 3
    assert value("jupyter_sse_subscribers") == 1
    assert value("jupyter_sse_slow_subscribers_dropped_total") == 0
    # durations: a (2 s) succeeded, b (20 s) failed
    assert value("jupyter_sse_job_duration_seconds_bucket", state="succeeded", le="1.0") == 0
    assert value("jupyter_sse_job_duration_seconds_bucket", state="succeeded", le="5.0") == 1
    assert value("jupyter_sse_job_duration_seconds_bucket", state="succeeded", le="+Inf") == 1
    assert value("jupyter_sse_job_duration_seconds_count", state="succeeded") == 1
    assert value("jupyter_sse_job_duration_seconds_sum", state="succeeded") == 2.0
    assert value("jupyter_sse_job_duration_seconds_bucket", state="failed", le="15.0") == 0
    assert value("jupyter_sse_job_duration_seconds_bucket", state="failed", le="30.0") == 1
    assert value("jupyter_sse_job_duration_seconds_sum", state="failed") == 20.0
    # the store wrote once per accepted change (in memory: no time to speak of)
    assert value("jupyter_sse_store_write_seconds_count") == 4
    assert value("jupyter_sse_store_write_seconds_bucket", le="+Inf") == 4
    assert value("jupyter_sse_store_write_seconds_sum") < 0.1
    assert value("jupyter_sse_notifications_sent_total") == 1
    assert value("jupyter_sse_notifications_failed_total") == 0


async def test_metrics_need_the_servers_auth(sse_server: SSEServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(sse_server.url + "metrics")
    assert response.status_code == 403
    assert "jupyter_sse_" not in response.text


async def test_a_dropped_slow_subscriber_is_counted(sse_server: SSEServer) -> None:
    _reader, writer, _ = await open_raw_stream(sse_server, receive_buffer=4096)  # and never reads
    try:
        async with httpx.AsyncClient(headers=sse_server.publish_auth) as client:
            deadline = time.monotonic() + 20
            r = 0
            while sse_server.broker.subscriber_count:  # 4 KB messages fill its socket, then the send timeout
                assert time.monotonic() < deadline
                body = {"jobs": [{"id": f"big{j}", "n": r, "message": "x" * 4000} for j in range(40)]}
                assert (await client.post(sse_server.api + "updates", json=body)).status_code == 200
                r += 1
                await asyncio.sleep(0.05)
        m = await scrape(sse_server)
    finally:
        writer.close()
    assert m[("jupyter_sse_slow_subscribers_dropped_total", ())] == 1
    assert m[("jupyter_sse_subscribers", ())] == 0
