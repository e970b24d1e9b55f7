"""Notification rules, coalescing and message text (core.notify), state changes (core.transitions), and the
kernel side's ``notify=`` argument. Real jobs through a real broker; timers on a real asyncio loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jupyter_sse.core import Broker, Job, parse_update_batch
from jupyter_sse.core.notify import (
    Message,
    Notifier,
    NotifyRules,
    format_duration,
    job_duration,
    notify_choice,
)
from jupyter_sse.core.transitions import StateTracker, watch_state_changes
from jupyter_sse.kernel._notify import with_notify


def _ended(job_id: str, state: str = "succeeded", elapsed: float = 120.0, **fields: Any) -> Job:
    job = Job(id=job_id, created=1000.0, updated=1000.0 + elapsed, name=fields.pop("name", job_id), state=state)
    job.elapsed = elapsed
    job.finished = 1000.0 + elapsed
    for key, value in fields.items():
        setattr(job, key, value)
    return job


def _notifier(rules: NotifyRules | None = None, defaults: bool = True, **kwargs: Any) -> tuple[Notifier, list[Message]]:
    sent: list[Message] = []
    return Notifier(rules or NotifyRules(window=0), sent.append, has_default_targets=defaults, **kwargs), sent


def test_default_rules_need_a_long_top_level_job_in_a_listed_state() -> None:
    notifier, sent = _notifier(NotifyRules(window=0, min_duration=60, states=frozenset({"failed", "succeeded"})))
    notifier.job_changed(_ended("short", elapsed=59.0), "running")
    notifier.job_changed(_ended("nested", elapsed=600.0, parent="outer"), "running")
    notifier.job_changed(_ended("cancelled", state="cancelled", elapsed=600.0), "running")
    notifier.job_changed(_ended("still", state="running", elapsed=600.0), None)
    assert sent == []
    notifier.job_changed(_ended("long", elapsed=60.0), "running")
    notifier.job_changed(_ended("long", elapsed=60.0), "succeeded")  # no change of state: nothing new
    assert [m.jobs[0].id for m in sent] == ["long"]


def test_a_jobs_own_choice_wins_over_the_rules() -> None:
    notifier, sent = _notifier(NotifyRules(window=0, min_duration=60, states=frozenset({"failed"})))
    notifier.job_changed(_ended("off", state="failed", elapsed=600.0, metadata={"notify": False}), "running")
    notifier.job_changed(_ended("on", elapsed=0.5, parent="p", metadata={"notify": True}), "running")
    notifier.job_changed(_ended("url", elapsed=0.5, metadata={"notify": "json://127.0.0.1:9/x"}), "running")
    notifier.job_changed(_ended("urls", elapsed=0.5, metadata={"notify": ["json://a/b", "mailto://c"]}), "running")
    assert [(m.targets, m.jobs[0].id) for m in sent] == [
        ((), "on"),
        (("json://127.0.0.1:9/x",), "url"),
        (("json://a/b", "mailto://c"), "urls"),
    ]


def test_without_configured_targets_only_jobs_naming_their_own_notify() -> None:
    notifier, sent = _notifier(defaults=False)
    notifier.job_changed(_ended("a", elapsed=600.0), "running")
    notifier.job_changed(_ended("b", metadata={"notify": True}), "running")
    notifier.job_changed(_ended("c", metadata={"notify": "json://h/p"}), "running")
    assert [m.jobs[0].id for m in sent] == ["c"]


def test_job_targets_can_be_turned_off_by_the_operator() -> None:
    notifier, sent = _notifier(NotifyRules(window=0, allow_job_targets=False))
    notifier.job_changed(_ended("c", elapsed=1.0, metadata={"notify": "json://h/p"}), "running")
    assert [(m.targets, m.jobs[0].id) for m in sent] == [((), "c")]  # told, but on the configured targets


def test_a_malformed_choice_from_a_raw_post_is_ignored() -> None:
    notifier, sent = _notifier()
    notifier.job_changed(_ended("x", elapsed=600.0, metadata={"notify": 42}), "running")
    notifier.job_changed(_ended("y", elapsed=1.0, metadata={"notify": ["not a url"]}), "running")
    assert [m.jobs[0].id for m in sent] == ["x"]  # the rules decide, as if it had said nothing


async def test_jobs_ending_within_the_window_make_one_message() -> None:
    sent: list[Message] = []
    two_sent = asyncio.Event()

    def send(message: Message) -> None:
        sent.append(message)
        if len(sent) == 2:
            two_sent.set()

    notifier = Notifier(NotifyRules(window=0.3, min_duration=0), send, has_default_targets=True)
    notifier.job_changed(_ended("a"), "running")
    notifier.job_changed(_ended("b", state="failed", error={"type": "ValueError", "message": "bad"}), "running")
    notifier.job_changed(_ended("c", metadata={"notify": "json://h/p"}), "running")  # another target: its own
    await asyncio.sleep(0.1)
    notifier.job_changed(_ended("d"), "running")
    assert sent == [] and notifier.pending == 2
    await asyncio.wait_for(two_sent.wait(), 5)
    by_target = {m.targets: m for m in sent}
    assert by_target[()].count == 3
    assert [j.id for j in by_target[()].jobs] == ["a", "b", "d"]
    assert by_target[()].kind == "failure"
    assert by_target[()].title == "3 jobs ended: 2 succeeded, 1 failed"
    assert by_target[("json://h/p",)].count == 1
    # the next job after the window starts a new message
    notifier.job_changed(_ended("e"), "running")
    assert notifier.pending == 1
    notifier.flush()
    assert len(sent) == 3 and sent[2].count == 1


async def test_a_message_lists_a_bounded_number_of_jobs_and_counts_the_rest() -> None:
    notifier, sent = _notifier(NotifyRules(window=10, min_duration=0, max_jobs_listed=3))
    for i in range(50):
        notifier.job_changed(_ended(f"j{i}"), "running")
    notifier.flush()
    (message,) = sent
    assert message.count == 50 and len(message.jobs) == 3
    assert message.body.endswith("... and 47 more")


async def test_pending_messages_are_bounded() -> None:
    notifier, sent = _notifier(NotifyRules(window=10, min_duration=0, max_pending_messages=2))
    for i in range(5):
        notifier.job_changed(_ended(f"j{i}", metadata={"notify": f"json://h/{i}"}), "running")
    assert notifier.pending == 2
    assert [m.targets for m in sent] == [("json://h/0",), ("json://h/1",), ("json://h/2",)]  # oldest went early
    notifier.flush()


def test_the_message_says_what_a_person_needs() -> None:
    notifier, sent = _notifier(NotifyRules(window=0, min_duration=0), link_base="http://127.0.0.1:8888/user/al/")
    job = _ended(
        "j1",
        name="train",
        state="failed",
        elapsed=125.0,
        n=40,
        total=100,
        unit="batch",
        error={"type": "RuntimeError", "message": "CUDA out of memory"},
        path="work/My Notebook.ipynb",
        cell_id="c-7",
    )
    notifier.job_changed(job, "running")
    (message,) = sent
    assert message.title == "train failed after 2 min 5 s"
    assert message.kind == "failure"
    assert message.body.splitlines() == [
        "train: failed after 2 min 5 s (40/100 batch)",
        "  error: RuntimeError: CUDA out of memory",
        "  notebook: work/My Notebook.ipynb, cell c-7",
        "  open: http://127.0.0.1:8888/user/al/lab/tree/work/My%20Notebook.ipynb",
    ]


def test_lost_jobs_say_why_and_cancelled_ones_warn() -> None:
    notifier, sent = _notifier(NotifyRules(window=0, min_duration=0))
    notifier.job_changed(_ended("l", state="lost", message="its kernel died"), "running")
    notifier.job_changed(_ended("c", state="cancelled"), "running")
    assert "  error: its kernel died" in sent[0].body.splitlines()
    assert (sent[0].kind, sent[1].kind) == ("failure", "warning")


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.25, 9.94, 59, 61, 3600, 3725, 90000)] == [
        "0.2 s",
        "9.9 s",
        "59 s",
        "1 min 1 s",
        "1 h 0 min",
        "1 h 2 min",
        "1 d 1 h",
    ]


def test_duration_falls_back_to_the_servers_clock() -> None:
    job = Job(id="a", created=100.0, updated=130.0, state="succeeded")
    job.finished = 125.0
    assert job_duration(job) == 25.0


@pytest.mark.parametrize("bad", [0, "me@example.org", [], ["json://a"] * 11, [1], {"url": "json://a"}], ids=repr)
def test_bad_notify_values_are_refused_with_the_reason(bad: Any) -> None:
    with pytest.raises(ValueError, match="notify"):
        notify_choice({"notify": bad})
    with pytest.raises(ValueError, match="notify= takes True, False, an Apprise URL"):
        with_notify(None, bad)


def test_with_notify_carries_the_choice_in_metadata() -> None:
    assert with_notify(None, None) is None
    assert with_notify({"a": 1}, True) == {"a": 1, "notify": True}
    assert with_notify(None, ("json://x", "mailto://y")) == {"notify": ["json://x", "mailto://y"]}
    assert notify_choice(with_notify(None, "mailto://me") or {}) == ("mailto://me",)


def test_rules_refuse_bad_settings() -> None:
    with pytest.raises(ValueError, match="running"):
        NotifyRules(states=frozenset({"running"}))
    with pytest.raises(ValueError, match="minimum duration"):
        NotifyRules(min_duration=float("nan"))
    with pytest.raises(ValueError, match="window"):
        NotifyRules(window=-1)


def test_state_tracker_reports_changes_only_and_is_bounded() -> None:
    tracker = StateTracker(limit=3)
    a = Job(id="a", created=0, updated=0)
    assert tracker.changes([a]) == [(a, None)]
    assert tracker.changes([a]) == []
    a.state = "succeeded"
    assert tracker.changes([a]) == [(a, "running")]
    for name in "bcd":
        tracker.changes([Job(id=name, created=0, updated=0)])
    assert len(tracker) == 3
    assert tracker.changes([a]) == [(a, None)]  # forgotten: seen as new, never an unbounded table


def test_broker_listener_sees_state_changes_and_a_failing_callback_harms_nothing() -> None:
    broker = Broker()
    seen: list[tuple[str, str | None, str]] = []

    def boom(job: Job, previous: str | None) -> None:
        raise RuntimeError("a broken observer")

    watch_state_changes(broker, [boom, lambda job, prev: seen.append((job.id, prev, job.state))])
    broker.apply(parse_update_batch(b'{"jobs": [{"id": "a", "name": "x"}]}'))
    for n in range(5):
        broker.apply(parse_update_batch(b'{"jobs": [{"id": "a", "n": %d}]}' % n))
    broker.apply(parse_update_batch(b'{"jobs": [{"id": "a", "state": "succeeded"}]}'))
    assert seen == [("a", None, "running"), ("a", "running", "succeeded")]
    assert broker.get("a").state == "succeeded"
    assert broker.metrics.updates_accepted == 7
