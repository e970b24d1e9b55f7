"""The Apprise sender against real targets on loopback: mail through an SMTP server (aiosmtpd), ``json://`` to an
HTTP server, one that hangs, and ones that refuse. Sending never blocks the caller."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from jupyter_sse.core.apprise_sender import AppriseSender, RateLimitedLog, apprise_config_paths
from jupyter_sse.core.metrics import BrokerMetrics
from jupyter_sse.core.notify import Message
from tests._notify_targets import HTTPSink, SMTPSink, _wait

pytestmark = pytest.mark.timeout(60)


def _message(title: str = "train succeeded after 2 min 5 s", targets: tuple[str, ...] = ()) -> Message:
    return Message(targets, title, "train: succeeded after 2 min 5 s (100/100 it)", "success", 1, ())


def test_mail_and_webhook_get_the_message(smtp_sink: SMTPSink, http_sink: HTTPSink) -> None:
    metrics = BrokerMetrics()
    sender = AppriseSender([smtp_sink.url(), http_sink.url()], timeout=5, metrics=metrics)
    try:
        assert sender.has_default_targets
        sender(_message())
        (mail,) = smtp_sink.wait_for(1)
        (hook,) = http_sink.wait_for(1)
    finally:
        sender.close()
    assert mail.subject == "train succeeded after 2 min 5 s"
    assert (mail.sender, mail.to) == ("jobs@example.org", "me@example.org")
    assert mail.text.strip() == "train: succeeded after 2 min 5 s (100/100 it)"
    assert hook["title"] == "train succeeded after 2 min 5 s"
    assert hook["message"] == "train: succeeded after 2 min 5 s (100/100 it)"
    assert hook["type"] == "success"
    _wait(lambda: metrics.notifications_sent == 1, 5, "the count")
    assert metrics.notifications_failed == 0


def test_a_message_with_its_own_targets_goes_only_there(smtp_sink: SMTPSink, http_sink: HTTPSink) -> None:
    sender = AppriseSender([http_sink.url()], timeout=5)
    try:
        sender(_message("own", targets=(smtp_sink.url("owner@example.org"),)))
        (mail,) = smtp_sink.wait_for(1)
        sender(_message("default"))
        http_sink.wait_for(1)
    finally:
        sender.close()
    assert (mail.subject, mail.to) == ("own", "owner@example.org")
    assert [body["title"] for body in http_sink.bodies] == ["default"]


def test_a_hanging_target_times_out_in_its_thread_and_is_counted(hanging_sink: HTTPSink) -> None:
    metrics = BrokerMetrics()
    sender = AppriseSender([hanging_sink.url()], timeout=0.5, metrics=metrics)
    try:
        started = time.perf_counter()
        sender(_message())
        queued_in = time.perf_counter() - started
        _wait(lambda: metrics.notifications_failed == 1, 10, "the timeout")
    finally:
        sender.close()
    assert queued_in < 0.05
    assert hanging_sink.requests == 1 and metrics.notifications_sent == 0


def test_a_dead_target_holds_one_worker_and_the_others_targets_go_out(
    hanging_sink: HTTPSink, http_sink: HTTPSink
) -> None:
    metrics = BrokerMetrics()
    sender = AppriseSender(timeout=5, workers=2, metrics=metrics)
    try:
        for i in range(3):  # enough to hold both workers, were messages to one target sent side by side
            sender(_message(f"stuck {i}", targets=(hanging_sink.url(),)))
        _wait(lambda: hanging_sink.requests == 1, 10, "the dead target to be called")
        started = time.perf_counter()
        sender(_message("other", targets=(http_sink.url(),)))
        (body,) = http_sink.wait_for(1, timeout=4)  # well before the dead target's 5 s timeout
        took = time.perf_counter() - started
        assert hanging_sink.requests == 1  # the next one to it waits its turn
    finally:
        hanging_sink.release.set()
        sender.close(timeout=10)
    assert body["title"] == "other" and took < 2
    assert metrics.notifications_sent == 1


def test_a_full_queue_drops_and_counts(hanging_sink: HTTPSink) -> None:
    metrics = BrokerMetrics()
    sender = AppriseSender([hanging_sink.url()], timeout=0.5, workers=1, queue_size=2, metrics=metrics)
    try:
        for i in range(10):
            sender(_message(f"m{i}"))
        # one is with the worker (or about to be), two wait in the queue, the rest were dropped at once
        assert metrics.notifications_failed >= 7
    finally:
        sender.close(timeout=10)  # the worker times out on each one left, within the bound
    assert metrics.notifications_failed == 10
    assert not any(thread.is_alive() for thread in sender._threads)


def test_failures_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    closed = HTTPSink()  # never started: connections are refused
    closed.stop()
    metrics = BrokerMetrics()
    sender = AppriseSender([closed.url()], timeout=1, metrics=metrics, log_period=60)
    with caplog.at_level(logging.WARNING):
        try:
            for i in range(8):
                sender(_message(f"m{i}"))
            _wait(lambda: metrics.notifications_failed == 8, 20, "8 failures")
        finally:
            sender.close()
    ours = [r for r in caplog.records if r.name == "jupyter_sse"]
    theirs = [r for r in caplog.records if r.name.startswith("apprise")]
    assert len(ours) == 1 and "not delivered" in ours[0].getMessage()
    assert len(theirs) <= 1


def test_rate_limited_log_says_how_many_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("jupyter_sse"), period=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="jupyter_sse"):
        assert log.warning("failed %s", 1)
        assert not log.warning("failed %s", 2)
        assert not log.warning("failed %s", 3)
        now[0] = 11.0
        assert log.warning("failed %s", 4)
    assert [r.getMessage() for r in caplog.records] == ["failed 1", "failed 4 (2 more since the last report)"]


def test_a_url_apprise_cannot_use_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="scheme 'nosuch'") as info:
        AppriseSender(["nosuch://secret-password@host"])
    assert "secret-password" not in str(info.value)


def test_a_bad_job_target_fails_that_message_only(http_sink: HTTPSink) -> None:
    metrics = BrokerMetrics()
    sender = AppriseSender([http_sink.url()], timeout=5, metrics=metrics)
    try:
        sender(_message("bad", targets=("nosuch://x",)))
        sender(_message("good"))
        http_sink.wait_for(1)
        _wait(lambda: metrics.notifications_failed == 1 and metrics.notifications_sent == 1, 5, "the counts")
    finally:
        sender.close()


def test_targets_from_an_apprise_config_file(tmp_path: Path, http_sink: HTTPSink) -> None:
    config = tmp_path / "apprise.yml"
    config.write_text(f"urls:\n  - {http_sink.url('from-file')}\n")
    sender = AppriseSender([], [str(config)], timeout=5)
    try:
        assert sender.has_default_targets
        sender(_message("configured by file"))
        (body,) = http_sink.wait_for(1)
    finally:
        sender.close()
    assert body["title"] == "configured by file" and http_sink.paths == ["/from-file"]


def test_config_paths_follow_apprise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine.yml"
    assert apprise_config_paths([str(mine)]) == [str(mine)]
    monkeypatch.setenv("APPRISE_CONFIG_PATH", f"{tmp_path}/a.yml;{tmp_path}/b.conf")
    assert apprise_config_paths(None) == [f"{tmp_path}/a.yml", f"{tmp_path}/b.conf"]
    monkeypatch.delenv("APPRISE_CONFIG_PATH")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert apprise_config_paths(None) == []  # Apprise's default paths: none exists under this home
    (tmp_path / ".config" / "apprise").mkdir(parents=True)
    (tmp_path / ".config" / "apprise" / "apprise.yml").write_text("urls: []\n")
    assert apprise_config_paths(None) == [f"{tmp_path}/.config/apprise/apprise.yml"]
