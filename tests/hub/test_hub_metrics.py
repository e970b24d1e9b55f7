"""The hub's ``/metrics``: behind its token, the ``jupyter_sse_*`` metrics of its broker after a known workload,
parsed with prometheus_client's parser."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jupyter_sse.hub import BackgroundHub

pytestmark = pytest.mark.timeout(60)

TOKEN = "hub-metrics-token"


@pytest.fixture
def hub() -> Iterator[BackgroundHub]:
    with BackgroundHub(TOKEN, heartbeat=1.0) as running:
        yield running


def test_metrics_need_the_token(hub: BackgroundHub) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.get(hub.url + "metrics", headers=headers)
        assert response.status_code == 403
        assert "jupyter_sse" not in response.text


def test_metrics_after_a_known_workload(hub: BackgroundHub) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    api = hub.url + "jupyter-sse/api/"
    with httpx.Client(headers=auth) as client:
        assert client.post(api + "updates", json={"jobs": [{"id": "a"}, {"id": "b"}]}).status_code == 200
        assert client.post(api + "updates", json={"jobs": [{"id": "a", "state": "succeeded", "elapsed": 3}]}).is_success
        assert client.post(api + "updates", json={"jobs": [{"id": "a", "state": "failed"}]}).status_code == 409
        assert client.post(api + "updates", content=b"[").status_code == 400
        response = client.get(hub.url + "metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("jupyter_sse_jobs", (("state", "running"),))] == 1
    assert samples[("jupyter_sse_jobs", (("state", "succeeded"),))] == 1
    assert samples[("jupyter_sse_updates_accepted_total", ())] == 2
    assert samples[("jupyter_sse_updates_refused_total", (("reason", "job_finished"),))] == 1
    assert samples[("jupyter_sse_updates_refused_total", (("reason", "invalid_json"),))] == 1
    assert samples[("jupyter_sse_job_duration_seconds_bucket", (("le", "5.0"), ("state", "succeeded")))] == 1
    assert samples[("jupyter_sse_job_duration_seconds_bucket", (("le", "1.0"), ("state", "succeeded")))] == 0
    assert samples[("jupyter_sse_job_duration_seconds_sum", (("state", "succeeded"),))] == 3
    assert samples[("jupyter_sse_subscribers", ())] == 0
    assert samples[("jupyter_sse_events_delivered_total", ())] == 0
    assert samples[("jupyter_sse_notifications_sent_total", ())] == 0
    assert samples[("jupyter_sse_store_write_seconds_count", ())] == 2
    assert samples[("process_open_fds", ())] > 0  # the hub process's own metrics come along
