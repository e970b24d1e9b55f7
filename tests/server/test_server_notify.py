"""Notifications from a real Jupyter server to real targets on loopback: mail through an SMTP server (aiosmtpd)
and ``json://`` to an HTTP server. Jobs are reported as a kernel reports them (``POST updates`` with the publish
token); no browser or subscriber is connected: the server sends on its own."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx
import pytest

from tests._notify_targets import HTTPSink, SMTPSink
from tests.conftest import SSEServer

pytestmark = pytest.mark.timeout(90)

WINDOW = 0.6


@pytest.fixture
def jp_server_config(smtp_sink: SMTPSink, http_sink: HTTPSink) -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_sse": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
        },
        "SSEExtension": {
            "store_kind": "memory",
            "notify_urls": [smtp_sink.url(), http_sink.url("all")],
            "notify_window": WINDOW,
            "notify_min_duration": 60.0,
            "notify_timeout": 5.0,
        },
    }


async def _post(client: httpx.AsyncClient, server: SSEServer, *jobs: dict[str, Any]) -> None:
    response = await client.post(server.api + "updates", json={"jobs": list(jobs)}, headers=server.publish_auth)
    assert response.status_code == 200, response.text


async def _wait_for(sink: SMTPSink | HTTPSink, count: int) -> None:
    # the sinks fill from their own threads; poll without blocking the server's loop (it runs in this process)
    items = sink.messages if isinstance(sink, SMTPSink) else sink.bodies
    deadline = time.monotonic() + 15
    while len(items) < count:
        assert time.monotonic() < deadline, f"timed out waiting for {count} message(s), got {len(items)}"
        await asyncio.sleep(0.02)


async def test_a_long_job_ending_sends_mail_and_webhook_with_no_browser(
    sse_server: SSEServer, smtp_sink: SMTPSink, http_sink: HTTPSink
) -> None:
    async with httpx.AsyncClient() as client:
        await _post(
            client,
            sse_server,
            {
                "id": "train1",
                "name": "train",
                "total": 100,
                "unit": "batch",
                "path": "work/model.ipynb",
                "cell_id": "c3",
            },
        )
        await _post(client, sse_server, {"id": "train1", "n": 100, "state": "succeeded", "elapsed": 125.0})
        assert sse_server.broker.subscriber_count == 0
        await _wait_for(smtp_sink, 1)
        await _wait_for(http_sink, 1)
    (mail,) = smtp_sink.messages
    assert mail.subject == "train succeeded after 2 min 5 s"
    assert mail.text.strip().splitlines() == [
        "train: succeeded after 2 min 5 s (100/100 batch)",
        "  notebook: work/model.ipynb, cell c3",
        f"  open: {sse_server.app.connection_url}lab/tree/work/model.ipynb",
    ]
    (hook,) = http_sink.bodies
    assert (hook["title"], hook["type"]) == (mail.subject, "success")
    assert hook["message"].strip().splitlines() == mail.text.strip().splitlines()
    assert sse_server.token not in hook["message"]  # the link never carries the server's token
    metrics = sse_server.broker.metrics
    deadline = time.monotonic() + 10
    while metrics.notifications_sent < 1:  # counted by the sender's thread once both targets answered
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert metrics.notifications_failed == 0


async def test_jobs_ending_within_the_window_make_one_message_and_short_ones_none(
    sse_server: SSEServer, smtp_sink: SMTPSink, http_sink: HTTPSink
) -> None:
    async with httpx.AsyncClient() as client:
        await _post(client, sse_server, *({"id": f"j{i}", "name": f"part {i}"} for i in range(4)))
        await _post(client, sse_server, {"id": "quick", "name": "quick"})
        await _post(client, sse_server, {"id": "quick", "state": "succeeded", "elapsed": 3.0})  # under a minute
        await _post(client, sse_server, {"id": "j0", "state": "succeeded", "n": 10, "elapsed": 61.0})
        await _post(client, sse_server, {"id": "j1", "state": "succeeded", "n": 20, "elapsed": 700.0})
        await _post(
            client,
            sse_server,
            {
                "id": "j2",
                "state": "failed",
                "elapsed": 3700.0,
                "error": {"type": "ValueError", "message": "loss is NaN"},
            },
        )
        await _wait_for(smtp_sink, 1)
        # j3 ends after the window: a second message
        await _post(client, sse_server, {"id": "j3", "state": "cancelled", "elapsed": 90.0})
        await _wait_for(smtp_sink, 2)
        await _wait_for(http_sink, 2)
    first, second = smtp_sink.messages
    assert first.subject == "3 jobs ended: 2 succeeded, 1 failed"
    lines = first.text.strip().splitlines()
    assert lines == [
        "part 0: succeeded after 1 min 1 s (10 it)",
        "part 1: succeeded after 11 min 40 s (20 it)",
        "part 2: failed after 1 h 1 min (0 it)",
        "  error: ValueError: loss is NaN",
    ]
    assert second.subject == "part 3 cancelled after 1 min 30 s"
    assert [b["type"] for b in http_sink.bodies] == ["failure", "warning"]
    assert not any("quick" in m.text for m in smtp_sink.messages)


async def test_a_jobs_own_notify_overrides_the_rules(
    sse_server: SSEServer, smtp_sink: SMTPSink, http_sink: HTTPSink
) -> None:
    own = http_sink.url("own")
    async with httpx.AsyncClient() as client:
        await _post(
            client,
            sse_server,
            {"id": "silent", "name": "silent", "metadata": {"notify": False}},
            {"id": "asked", "name": "asked", "metadata": {"notify": True}},
            {"id": "mine", "name": "mine", "metadata": {"notify": own}},
        )
        await _post(
            client,
            sse_server,
            {"id": "silent", "state": "failed", "elapsed": 5000.0},  # long and failed, but it said no
            {"id": "asked", "state": "succeeded", "elapsed": 0.2},  # short, but it asked
            {"id": "mine", "state": "succeeded", "elapsed": 0.1},  # short, to its own target only
        )
        await _wait_for(smtp_sink, 1)
        await _wait_for(http_sink, 2)
    (mail,) = smtp_sink.messages
    assert mail.subject == "asked succeeded after 0.2 s"
    paths = sorted((body["title"], "own" if "mine" in body["title"] else "all") for body in http_sink.bodies)
    assert paths == [("asked succeeded after 0.2 s", "all"), ("mine succeeded after 0.1 s", "own")]
    assert len(http_sink.bodies) == 2 and len(smtp_sink.messages) == 1


async def test_a_hanging_target_does_not_slow_a_1000_update_job(
    sse_server: SSEServer, hanging_sink: HTTPSink, capsys: pytest.CaptureFixture[str]
) -> None:
    """Measured: the same 1,000 updates, once with no notification in flight and once while 60 notifications
    are stuck on a target that never answers (each job its own target, so nothing coalesces)."""

    async def run_job(job_id: str) -> list[float]:
        latencies = []
        async with httpx.AsyncClient() as client:
            await _post(client, sse_server, {"id": job_id, "name": job_id, "total": 1000})
            for n in range(1, 1001):
                started = time.perf_counter()
                await _post(client, sse_server, {"id": job_id, "n": n})
                latencies.append(time.perf_counter() - started)
            await _post(client, sse_server, {"id": job_id, "state": "succeeded"})
        return latencies

    baseline = await run_job("base")
    async with httpx.AsyncClient() as client:
        doomed = [
            {"id": f"hang{i}", "name": f"hang {i}", "metadata": {"notify": hanging_sink.url(f"h{i}")}}
            for i in range(60)
        ]
        await _post(client, sse_server, *doomed)
        await _post(client, sse_server, *({"id": d["id"], "state": "succeeded"} for d in doomed))
        deadline = time.monotonic() + WINDOW + 10
        while hanging_sink.requests < 2:  # both sender threads are stuck on the target
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    stuck = await run_job("busy")
    metrics = sse_server.broker.metrics

    def p99(values: list[float]) -> float:
        return statistics.quantiles(values, n=100)[98]

    with capsys.disabled():
        print(
            f"\n1,000 updates: {sum(baseline):.3f} s alone (p99 {p99(baseline) * 1000:.2f} ms); "
            f"{sum(stuck):.3f} s with notifications stuck on a hanging target (p99 {p99(stuck) * 1000:.2f} ms, "
            f"max {max(stuck) * 1000:.2f} ms); notifications failed so far: {metrics.notifications_failed}"
        )
    assert sse_server.broker.get("busy").state == "succeeded"
    # No update waited on the target: one that had would have taken its 5 s timeout. Sender threads blocked on a
    # socket use no CPU, so the job keeps its pace (bounds generous for a shared, noisy CI machine).
    assert max(stuck) < 1.0
    assert sum(stuck) < 3 * sum(baseline) + 2.0


@pytest.mark.parametrize(
    ("trait", "value", "reason"),
    [
        ("notify_states", ["running"], "notify states must be among"),
        ("notify_window", -1.0, "notify_window must be a finite number"),
        ("notify_min_duration", float("nan"), "notify_min_duration must be a finite number"),
        ("notify_timeout", 0.0, "notify_timeout must be"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(trait: str, value: Any, reason: str) -> None:
    from traitlets import TraitError

    from jupyter_sse.server.app import SSEExtension

    with pytest.raises((TraitError, ValueError), match=reason):
        SSEExtension(**{trait: value})
