"""Each hub user's own notification targets and rules: set with `jupyter sse users notify` (the users file) or
with `PUT jupyter-sse/api/notify` (a user the hub knows another way), delivered to a real SMTP server (aiosmtpd)
and a real `json://` endpoint on loopback; nobody is told of another user's jobs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Scope

from jupyter_sse.cli import main
from jupyter_sse.hub import BackgroundHub, UsersFile, create_app
from jupyter_sse.hub._identity import Identity
from tests._notify_targets import HTTPSink, SMTPSink, _wait

pytestmark = pytest.mark.timeout(60)

API = "jupyter-sse/api/"


async def _carol(scope: Scope, token: str | None) -> Identity | None:
    # a user the hub knows without a users file, as a JupyterHub service knows its users
    return Identity("carol") if token == "carol-token" else None


def _client(token: str) -> httpx.Client:
    return httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _end(client: httpx.Client, hub: BackgroundHub, *jobs: dict[str, Any]) -> None:
    starts = [{"id": job["id"], "name": job["id"], "metadata": job.get("metadata", {})} for job in jobs]
    assert client.post(hub.url + API + "updates", json={"jobs": starts}).status_code == 200
    ends = [{"id": job["id"], "state": job.get("state", "succeeded"), "elapsed": job.get("elapsed", 5)} for job in jobs]
    assert client.post(hub.url + API + "updates", json={"jobs": ends}).status_code == 200


def test_each_user_is_told_of_their_own_jobs_only(tmp_path: Path, smtp_sink: SMTPSink, http_sink: HTTPSink) -> None:
    users = UsersFile(tmp_path / "users.json")
    tokens = {name: users.add(name) for name in ("alice", "bob", "dave")}
    # alice from the command line: mail, every end however short, each at once
    argv = ["users", "notify", "alice", smtp_sink.url("alice@example.org"), "--file", str(users.path)]
    assert main([*argv, "--min-duration", "0", "--window", "0"]) == 0
    with (
        BackgroundHub(
            users=users.path, identify=[_carol], notify_urls=[http_sink.url("team")], notify_window=0.0
        ) as hub,
        _client(tokens["bob"]) as bob,
        _client("carol-token") as carol,
        _client(tokens["dave"]) as dave,
    ):
        # bob and carol through the route: webhooks of their own; bob only hears of failures
        put = bob.put(hub.url + API + "notify", json={"urls": [http_sink.url("bob")], "states": ["failed"]})
        assert put.status_code == 200, put.text
        assert put.json()["targets"] == "own" and put.json()["states"] == ["failed"]
        put = carol.put(hub.url + API + "notify", json={"urls": [http_sink.url("carol")], "min_duration": 0})
        assert put.status_code == 200, put.text
        with _client(tokens["alice"]) as alice:
            got = alice.get(hub.url + API + "notify").json()
            assert got["settings"]["urls"] == [smtp_sink.url("alice@example.org")]
            assert (got["targets"], got["min_duration"], got["window"]) == ("own", 0.0, 0.0)
            # the same job ids for everyone: ids are per user, and so are messages
            _end(alice, hub, {"id": "train"}, {"id": "quiet", "metadata": {"notify": False}})
        _end(bob, hub, {"id": "train", "elapsed": 90})  # succeeded: not a state bob asked for
        _end(bob, hub, {"id": "eval", "state": "failed", "elapsed": 90})
        _end(carol, hub, {"id": "train"})
        _end(dave, hub, {"id": "train", "elapsed": 75})  # no settings of his own: the hub's targets
        # a job's own notify= works through the hub as through the extension, whatever its user's settings
        _end(bob, hub, {"id": "mine", "metadata": {"notify": smtp_sink.url("bob@example.org")}})
        _end(bob, hub, {"id": "asked", "metadata": {"notify": True}, "elapsed": 1})  # his targets, any end
        (alice_mail, bob_mail) = smtp_sink.wait_for(2)
        http_sink.wait_for(4)
        _wait(lambda: hub.broker.metrics.notifications_sent == 6, 10, "six messages sent")
    assert sorted((path, body["title"]) for path, body in zip(http_sink.paths, http_sink.bodies, strict=True)) == [
        ("/bob", "asked succeeded after 1.0 s"),
        ("/bob", "eval failed after 1 min 30 s"),
        ("/carol", "train succeeded after 5.0 s"),
        ("/team", "train succeeded after 1 min 15 s"),
    ]
    mails = {mail.to: mail for mail in (alice_mail, bob_mail)}
    assert mails["alice@example.org"].subject == "train succeeded after 5.0 s"
    assert mails["bob@example.org"].subject == "mine succeeded after 5.0 s"
    assert len(smtp_sink.messages) == 2 and len(http_sink.bodies) == 4


def test_a_users_jobs_ending_together_make_one_message(tmp_path: Path, http_sink: HTTPSink) -> None:
    users = UsersFile(tmp_path / "users.json")
    token = users.add("alice")
    with BackgroundHub(users=users.path, notify_urls=[http_sink.url("team")]) as hub, _client(token) as alice:
        settings = {"urls": [http_sink.url("alice")], "min_duration": 0, "window": 0.5}
        assert alice.put(hub.url + API + "notify", json=settings).status_code == 200
        _end(alice, hub, {"id": "a"}, {"id": "b", "state": "failed"}, {"id": "c", "state": "cancelled"})
        (message,) = http_sink.wait_for(1)
        _wait(lambda: hub.broker.metrics.notifications_sent == 1, 10, "the message counted")
    assert message["title"] == "3 jobs ended: 1 succeeded, 1 failed, 1 cancelled"
    assert message["type"] == "failure"
    assert http_sink.paths == ["/alice"]
    # the route wrote the users file: the hub and the command line read the same settings
    stored = json.loads(users.path.read_text())["users"]["alice"]["notify"]
    assert stored == {"urls": [http_sink.url("alice")], "min_duration": 0.0, "window": 0.5}


def test_bad_settings_are_refused_and_change_nothing(tmp_path: Path, http_sink: HTTPSink) -> None:
    users = UsersFile(tmp_path / "users.json")
    tokens = {"alice": users.add("alice"), "bob": users.add("bob"), "root": users.add("root", admin=True)}
    with BackgroundHub(users=users.path) as hub, _client(tokens["alice"]) as alice:
        url = hub.url + API + "notify"
        good = {"urls": [http_sink.url("alice")], "window": 5}
        assert alice.put(url, json=good).status_code == 200
        before = users.path.read_bytes()
        bad: list[tuple[Any, str]] = [
            ({"urls": ["nosuchscheme://x"]}, "scheme 'nosuchscheme'"),
            ({"urls": "json://127.0.0.1/"}, "urls must be a list"),
            ({"urls": [http_sink.url(str(i)) for i in range(11)]}, "at most 10"),
            ({"states": ["running"]}, "notify states must be among"),
            ({"states": []}, "non-empty list"),
            ({"window": -1}, "window must be a number"),
            ({"min_duration": True}, "min_duration must be a number"),
            ({"colour": "red"}, "unknown notify setting"),
            ([1, 2], "must be a JSON object"),
        ]
        for body, reason in bad:
            response = alice.put(url, json=body)
            assert response.status_code == 400, body
            assert response.json()["error"] == "invalid_settings" and reason in response.json()["detail"], body
        response = alice.put(url, content=b"{not json", headers={"Content-Type": "application/json"})
        assert (response.status_code, response.json()["error"]) == (400, "invalid_settings")
        assert alice.put(url, content=b"x" * (65 * 1024)).status_code == 413
        # nobody else's settings: the same answer as for a user who does not exist
        assert alice.put(url, params={"owner": "bob"}, json=good).status_code == 404
        assert alice.get(url, params={"owner": "bob"}).status_code == 404
        assert users.path.read_bytes() == before
        assert alice.get(url).json()["settings"] == {"urls": [http_sink.url("alice")], "window": 5.0}
        # an admin may set a user's, and {} gives back the hub's
        with _client(tokens["root"]) as root:
            assert root.put(url, params={"owner": "bob"}, json={"urls": []}).json()["targets"] == "none"
            assert root.put(url, json={}).json()["settings"] == {}
        assert UsersFile(users.path).notify_settings("bob") == {"urls": []}
        assert alice.put(url, json={}).json() == {
            "owner": "alice",
            "settings": {},
            "targets": "none",  # this hub has no targets of its own
            "states": ["cancelled", "failed", "lost", "succeeded"],
            "min_duration": 60.0,
            "window": 30.0,
            "available": True,
        }
        assert "notify" not in json.loads(users.path.read_text())["users"]["alice"]


def test_users_notify_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    users = UsersFile(tmp_path / "users.json")
    users.add("alice")
    file = ["--file", str(users.path)]
    assert main(["users", "notify", "alice", "json://127.0.0.1:9/a", "--states", "failed", *file]) == 0
    assert main(["users", "notify", "alice", "--window", "10", *file]) == 0  # what is not given stays
    assert users.notify_settings("alice") == {"urls": ["json://127.0.0.1:9/a"], "states": ["failed"], "window": 10.0}
    token = users.add("alice")  # a new token keeps the settings
    assert users.verify(token) is not None and users.notify_settings("alice") is not None
    capsys.readouterr()
    before = users.path.read_bytes()
    assert main(["users", "notify", "alice", "--states", "running", *file]) == 2
    assert main(["users", "notify", "alice", "nosuchscheme://x", *file]) == 2
    assert main(["users", "notify", "alice", "json://127.0.0.1:9/a", "--no-targets", *file]) == 2
    assert main(["users", "notify", "nobody", "json://127.0.0.1:9/a", *file]) == 2
    err = capsys.readouterr().err
    assert "notify states must be among" in err and "scheme 'nosuchscheme'" in err and "no user 'nobody'" in err
    assert users.path.read_bytes() == before
    assert main(["users", "notify", "alice", "--hub-targets", *file]) == 0
    assert users.notify_settings("alice") == {"states": ["failed"], "window": 10.0}
    assert main(["users", "notify", "alice", "--reset", *file]) == 0
    assert users.notify_settings("alice") is None
    capsys.readouterr()
    assert main(["users", "notify", "alice", *file]) == 0
    assert json.loads(capsys.readouterr().out) == {"user": "alice", "notify": {}}


def test_a_hanging_target_slows_no_update_and_no_other_user(
    tmp_path: Path, hanging_sink: HTTPSink, http_sink: HTTPSink
) -> None:
    users = UsersFile(tmp_path / "users.json")
    tokens = {"alice": users.add("alice"), "bob": users.add("bob")}
    hub = BackgroundHub(users=users.path, notify_window=0.0)
    with hub, _client(tokens["alice"]) as alice, _client(tokens["bob"]) as bob:
        rules = {"min_duration": 0, "window": 0}
        assert bob.put(hub.url + API + "notify", json={"urls": [hanging_sink.url("bob")], **rules}).is_success
        assert alice.put(hub.url + API + "notify", json={"urls": [http_sink.url("alice")], **rules}).is_success
        for i in range(3):  # more messages to his dead target than the hub has workers
            _end(bob, hub, {"id": f"stuck-{i}"})
        _wait(lambda: hanging_sink.requests == 1, 10, "the hanging target to be called")
        # 1,000 updates of bob's, his target hanging all along
        took = []
        for i in range(1000):
            started = time.perf_counter()
            response = bob.post(hub.url + API + "updates", json={"jobs": [{"id": "loop", "n": i}]})
            took.append(time.perf_counter() - started)
            assert response.status_code == 200
        # and alice is still told at once, long before bob's target times out (10 s)
        _end(alice, hub, {"id": "train"})
        (message,) = http_sink.wait_for(1, timeout=4)
        assert hanging_sink.requests == 1 and not hanging_sink.bodies
    took.sort()
    print(f"1,000 updates with a hanging target: median {took[500] * 1e3:.2f} ms, p99 {took[990] * 1e3:.2f} ms")
    assert took[990] < 0.25
    assert message["title"] == "train succeeded after 5.0 s"


def test_settings_set_through_the_route_outlive_the_hub_in_its_settings_file(
    tmp_path: Path, http_sink: HTTPSink
) -> None:
    settings_file = tmp_path / "notify.json"
    first = BackgroundHub(identify=[_carol], notify_settings=settings_file)
    with first, _client("carol-token") as carol:
        settings = {"urls": [http_sink.url("carol")], "min_duration": 0, "window": 0}
        assert carol.put(first.url + API + "notify", json=settings).status_code == 200
    assert settings_file.stat().st_mode & 0o777 == 0o600  # the URLs can hold passwords
    second = BackgroundHub(identify=[_carol], notify_settings=settings_file)
    with second, _client("carol-token") as carol:
        assert carol.get(second.url + API + "notify").json()["targets"] == "own"
        _end(carol, second, {"id": "train"})
        (message,) = http_sink.wait_for(1)
    assert message["title"] == "train succeeded after 5.0 s"
    # a file it cannot read: the hub refuses to start, saying why
    settings_file.write_text('{"version": 1, "users": {"carol": {"window": -1}}}')
    with pytest.raises(ValueError, match="window must be a number"):
        create_app("token", notify_settings=settings_file)
