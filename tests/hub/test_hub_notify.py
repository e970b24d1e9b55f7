"""The hub's notifications: one set of Apprise targets for the hub, the extension's rules, a job's own notify;
to a ``json://`` endpoint and a real SMTP server on loopback."""

from __future__ import annotations

import httpx
import pytest

from jupyter_sse.hub import BackgroundHub
from tests._notify_targets import HTTPSink, SMTPSink, _wait

pytestmark = pytest.mark.timeout(60)

TOKEN = "hub-notify-token"


def test_the_hub_notifies_its_targets_and_a_jobs_own(http_sink: HTTPSink, smtp_sink: SMTPSink) -> None:
    with BackgroundHub(TOKEN, notify_urls=[http_sink.url("hub")], notify_window=0.0) as hub:
        api = hub.url + "jupyter-sse/api/"
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            jobs = [{"id": "long", "name": "long"}, {"id": "short", "name": "short"}]
            jobs.append({"id": "mine", "name": "mine", "metadata": {"notify": smtp_sink.url()}})
            assert client.post(api + "updates", json={"jobs": jobs}).status_code == 200
            ends = [
                {"id": "long", "state": "failed", "elapsed": 90, "error": {"type": "OSError", "message": "disk"}},
                {"id": "short", "state": "succeeded", "elapsed": 2},  # under the minute: no message
                {"id": "mine", "state": "succeeded", "elapsed": 1},
            ]
            assert client.post(api + "updates", json={"jobs": ends}).status_code == 200
            (hook,) = http_sink.wait_for(1)
            (mail,) = smtp_sink.wait_for(1)
            _wait(lambda: hub.broker.metrics.notifications_sent == 2, 10, "both counted")
            metrics = client.get(hub.url + "metrics").text
    assert (hook["title"], hook["type"]) == ("long failed after 1 min 30 s", "failure")
    assert hook["message"].splitlines() == ["long: failed after 1 min 30 s (0 it)", "  error: OSError: disk"]
    assert mail.subject == "mine succeeded after 1.0 s"
    assert "jupyter_sse_notifications_sent_total 2.0" in metrics.splitlines()
    assert http_sink.paths == ["/hub"]


def test_bad_rules_are_refused_when_the_app_is_made() -> None:
    from jupyter_sse.hub import create_app

    with pytest.raises(ValueError, match="window"):
        create_app(TOKEN, notify_window=-1.0)
