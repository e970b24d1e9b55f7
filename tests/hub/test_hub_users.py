"""The hub with a users file: the CLI that writes it, and the isolation table over every route for two users and
an admin, on a real uvicorn server over real HTTP."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent

from jupyter_sse.cli import main
from jupyter_sse.hub import BackgroundHub, HubConfigError, UsersFile, UsersFileError, check_auth
from tests._sse import read_until

pytestmark = pytest.mark.timeout(90)


def _add(path: Path, name: str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["users", "add", name, "--file", str(path), *extra]) == 0
    token = capsys.readouterr().out.strip()
    assert "." in token and len(token) > 40
    return token


@pytest.fixture
def team(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[BackgroundHub, dict[str, str]]]:
    path = tmp_path / "users.json"
    tokens = {name: _add(path, name, capsys) for name in ("alice", "bob")}
    tokens["root"] = _add(path, "root", capsys, "--admin")
    with BackgroundHub(users=path, heartbeat=0.5) as hub:
        yield hub, tokens


def _client(hub: BackgroundHub, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=hub.url + "jupyter-sse/api/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(10, read=5),
    )


def _events(
    client: httpx.Client, path: str, until: Callable[[list[tuple[str, Any, str]]], bool], **kw: Any
) -> list[tuple[str, Any, str]]:
    """The (event, data, id) read from a stream until ``until(seen)``; a read timeout fails the test."""

    def as_tuples(events: list[ServerSentEvent]) -> list[tuple[str, Any, str]]:
        return [(sse.event, sse.json(), sse.id) for sse in events]

    return as_tuples(read_until(client, path, lambda seen: until(as_tuples(seen)), **kw))


def _publish(client: httpx.Client, *jobs: dict[str, Any]) -> list[str]:
    response = client.post("updates", json={"jobs": list(jobs)})
    assert response.status_code == 200, response.text
    cancel: list[str] = response.json()["cancel"]
    return cancel


def _jobs_named(seen: list[tuple[str, Any, str]], name: str) -> list[dict[str, Any]]:
    return [data for event, data, _ in seen if event == "job" and data.get("name") == name]


# ---- the users file and its CLI ----------------------------------------------------------------------------


def test_users_cli_keeps_only_a_salted_hash_in_a_private_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.json"
    alice = _add(path, "alice", capsys)
    _add(path, "root", capsys, "--admin")
    text = path.read_text()
    assert alice not in text and alice.split(".", 1)[1] not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.json", "users.json.lock"]  # no temporary file
    assert main(["users", "list", "--file", str(path)]) == 0
    assert capsys.readouterr().out.split("\n") == ["alice", "root  admin", ""]
    users = UsersFile(path)
    assert users.verify(alice) is not None and users.verify(alice).name == "alice"  # type: ignore[union-attr]
    assert users.verify(alice + "x") is None
    assert users.verify(alice.split(".")[0] + ".wrong") is None
    # a new token for alice: the old one stops working
    again = _add(path, "alice", capsys)
    assert UsersFile(path).verify(alice) is None and UsersFile(path).verify(again) is not None
    assert main(["users", "remove", "alice", "--file", str(path)]) == 0
    assert main(["users", "remove", "alice", "--file", str(path)]) == 2
    assert "no user 'alice'" in capsys.readouterr().err
    assert main(["users", "add", "bad name", "--file", str(path)]) == 2
    assert "not a valid user name" in capsys.readouterr().err
    assert [u.name for u in UsersFile(path).users()] == ["root"]


def test_a_broken_users_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    path.write_text('{"version": 1, "users": {"alice": {"admin": "yes"}}}')
    with pytest.raises(UsersFileError, match="alice"):
        UsersFile(path).check()
    with pytest.raises(UsersFileError, match="no users file"):
        UsersFile(tmp_path / "missing.json").check()
    assert main(["hub", "--users", str(tmp_path / "missing.json"), "--port", "1"]) == 2


def test_the_hub_refuses_to_start_with_no_way_to_authenticate(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(HubConfigError, match="no way to authenticate"):
        check_auth("127.0.0.1", None)
    check_auth("127.0.0.1", None, no_auth=True)
    check_auth("0.0.0.0", None, users="users.json")
    with pytest.raises(HubConfigError, match="refusing to serve"):
        check_auth("0.0.0.0", None, no_auth=True)
    assert main(["hub", "--port", "1"]) == 2
    assert "no way to authenticate" in capsys.readouterr().err


def test_a_removed_user_is_refused_by_the_running_hub(
    team: tuple[BackgroundHub, dict[str, str]], tmp_path: Path
) -> None:
    hub, tokens = team
    with _client(hub, tokens["alice"]) as alice:
        assert alice.get("jobs").status_code == 200
        assert main(["users", "remove", "alice", "--file", str(tmp_path / "users.json")]) == 0
        assert alice.get("jobs").status_code == 403


# ---- isolation ----------------------------------------------------------------------------------------------


def test_isolation_over_every_route(team: tuple[BackgroundHub, dict[str, str]]) -> None:
    hub, tokens = team
    with (
        _client(hub, tokens["alice"]) as alice,
        _client(hub, tokens["bob"]) as bob,
        _client(hub, tokens["root"]) as root,
    ):
        # the same id for both: each makes their own job
        assert _publish(alice, {"id": "j1", "name": "alice-job", "total": 10}) == []
        assert _publish(bob, {"id": "j1", "name": "bob-job", "total": 20}) == []
        assert _publish(alice, {"id": "done", "name": "alice-done", "state": "succeeded"}) == []

        # GET jobs: one's own; the admin's: everyone's, with the owner
        assert [(j["id"], j["owner"]) for j in alice.get("jobs").json()["jobs"]] == [("done", "alice"), ("j1", "alice")]
        assert [(j["id"], j["owner"], j["name"]) for j in bob.get("jobs").json()["jobs"]] == [("j1", "bob", "bob-job")]
        assert sorted((j["id"], j["owner"]) for j in root.get("jobs").json()["jobs"]) == [
            ("done", "alice"),
            ("j1", "alice"),
            ("j1", "bob"),
        ]
        assert [j["owner"] for j in root.get("jobs", params={"owner": "bob"}).json()["jobs"]] == ["bob"]
        assert bob.get("jobs", params={"owner": "alice"}).json()["jobs"] == []
        # the admin's pages go over everyone's jobs
        paged: list[tuple[str, str]] = []
        cursor = None
        while True:
            page = root.get("jobs", params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
            assert page["total"] == 3 and len(page["jobs"]) == 1
            paged += [(j["id"], j["owner"]) for j in page["jobs"]]
            cursor = page["next"]
            if cursor is None:
                break
        assert paged == [(j["id"], j["owner"]) for j in root.get("jobs").json()["jobs"]] and len(paged) == 3

        # /metrics: for admins, over every user's jobs
        assert alice.get(hub.url + "metrics").status_code == 403
        scraped = root.get(hub.url + "metrics").text
        assert 'jupyter_sse_jobs{state="running"} 2.0' in scraped, scraped
        assert 'jupyter_sse_jobs{state="succeeded"} 1.0' in scraped

        # GET jobs/{id}
        assert bob.get("jobs/j1").json()["name"] == "bob-job"
        assert alice.get("jobs/j1").json()["name"] == "alice-job"
        assert bob.get("jobs/done").status_code == 404
        assert bob.get("jobs/j1", params={"owner": "alice"}).status_code == 404
        assert root.get("jobs/j1").status_code == 409  # two users' j1: the admin says whose
        assert root.get("jobs/j1", params={"owner": "alice"}).json()["name"] == "alice-job"
        assert root.get("jobs/done").json()["owner"] == "alice"

        # POST updates: bob cannot move alice's job, even naming her id
        assert _publish(bob, {"id": "j1", "n": 5, "message": "bob was here"}) == []
        assert alice.get("jobs/j1").json()["n"] == 0 and alice.get("jobs/j1").json()["message"] == ""

        # POST jobs/{id}/cancel: bob's cancel reaches his j1 only
        assert bob.post("jobs/j1/cancel").status_code == 202
        assert bob.post("jobs/done/cancel").status_code == 404
        assert _publish(alice, {"id": "j1", "n": 1}) == []  # alice's publisher is not told to stop
        assert _publish(bob, {"id": "j1", "n": 6}) == ["j1"]
        assert alice.get("jobs/j1").json()["cancel_requested"] is False
        assert root.post("jobs/j1/cancel", params={"owner": "alice"}).status_code == 202
        assert _publish(alice, {"id": "j1", "n": 2}) == ["j1"]  # the admin acts on anyone's

        # DELETE jobs/{id}
        assert bob.delete("jobs/done").status_code == 404
        assert bob.delete("jobs/done", params={"owner": "alice"}).status_code == 404
        assert alice.get("jobs/done").status_code == 200
        assert root.delete("jobs/done").status_code == 204
        assert alice.get("jobs/done").status_code == 404

        # GET events: bob's stream carries bob's jobs only. Alice publishes first, bob after: had her event
        # reached bob's stream, it would have come before his marker.
        seen_initial = _events(bob, "events", lambda seen: any(d.get("name") == "bob-job" for _, d, _ in seen))
        assert {d["owner"] for e, d, _ in seen_initial if e == "job"} == {"bob"}
        last = seen_initial[-1][2]
        _publish(alice, {"id": "j1", "name": "alice-marker"})
        _publish(bob, {"id": "j1", "name": "bob-marker"})
        seen = _events(bob, "events", lambda s: bool(_jobs_named(s, "bob-marker")), headers={"Last-Event-ID": last})
        assert _jobs_named(seen, "alice-marker") == [] and {d["owner"] for e, d, _ in seen if e == "job"} == {"bob"}
        # ?job= narrows within one's own jobs; jobs/{id}/events is one's own job
        seen = _events(alice, "events", lambda s: bool(_jobs_named(s, "alice-marker")), params={"job": "j1"})
        assert {d["owner"] for e, d, _ in seen if e == "job"} == {"alice"}
        seen = _events(bob, "jobs/j1/events", lambda s: bool(_jobs_named(s, "bob-marker")))
        assert {d["owner"] for e, d, _ in seen if e == "job"} == {"bob"}
        assert bob.get("jobs/nope/events").status_code == 404

        # the admin's stream merges everyone's, in one id order, and resumes from its Last-Event-ID
        seen = _events(
            root, "events", lambda s: bool(_jobs_named(s, "alice-marker")) and bool(_jobs_named(s, "bob-marker"))
        )
        assert len({i.split(".")[0] for _, _, i in seen}) == 1  # one epoch over every user's broker
        ids = [int(i.split(".")[1]) for _, _, i in seen]
        assert ids == sorted(ids)
        _publish(bob, {"id": "j1", "name": "bob-after"})
        _publish(alice, {"id": "j1", "name": "alice-after"})
        seen = _events(
            root,
            "events",
            lambda s: bool(_jobs_named(s, "alice-after")),
            headers={"Last-Event-ID": seen[-1][2]},
        )
        assert [d["name"] for e, d, _ in seen if e == "job"] == ["bob-after", "alice-after"]
        before_carol = seen[-1][2]
        _publish(bob, {"id": "j1", "name": "bob-between"})  # history moves on before carol appears
        # a user who publishes after the admin's stream opened is in it too
        carol_token = UsersFile(hub_users(hub)).add("carol")
        with _client(hub, carol_token) as carol:
            seen_root: list[Any] = []

            def carol_seen(s: list[tuple[str, Any, str]]) -> bool:
                if not seen_root:
                    seen_root.append(True)
                    _publish(carol, {"id": "c1", "name": "carol-job"})
                return bool(_jobs_named(s, "carol-job"))

            seen = _events(root, "events", carol_seen)  # the snapshot comes at once, then carol publishes
            assert _jobs_named(seen, "carol-job")[0]["owner"] == "carol"
        # resuming from before carol's first job: her job comes, and no reset (her history began with the rest)
        seen = _events(
            root, "events", lambda s: bool(_jobs_named(s, "carol-job")), headers={"Last-Event-ID": before_carol}
        )
        assert "reset" not in {event for event, _, _ in seen}
        assert [d["name"] for e, d, _ in seen if e == "job"] == ["bob-between", "carol-job"]
        seen = _events(root, "jobs/j1/events", lambda s: bool(_jobs_named(s, "bob-between")), params={"owner": "bob"})
        assert {d["owner"] for e, d, _ in seen if e == "job"} == {"bob"}


def hub_users(hub: BackgroundHub) -> Path:
    users = hub.app.state.users_file if hub.app is not None else None
    assert isinstance(users, UsersFile)
    return users.path


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Bearer 0123456789abcdef.wrong", "Basic x"])
def test_every_route_refuses_without_a_users_token(
    team: tuple[BackgroundHub, dict[str, str]], header: str | None
) -> None:
    hub, _ = team
    headers = {"Authorization": header} if header is not None else {}
    with httpx.Client(base_url=hub.url + "jupyter-sse/api/", headers=headers, timeout=10) as client:
        for method, path in [
            ("GET", "jobs"),
            ("GET", "jobs/a"),
            ("DELETE", "jobs/a"),
            ("POST", "jobs/a/cancel"),
            ("POST", "updates"),
            ("GET", "events"),
            ("GET", "jobs/a/events"),
            ("GET", "openapi.json"),
            ("GET", hub.url + "metrics"),
        ]:
            response = client.request(method, path, json={"jobs": [{"id": "a"}]})
            assert response.status_code == 403, (method, path)
    assert all(len(broker.store) == 0 for broker in hub.app.state.tenants)  # type: ignore[union-attr]


def test_concurrent_adds_all_count(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    procs = [
        subprocess.Popen([sys.executable, "-m", "jupyter_sse.cli", "users", "add", f"user{i}", "--file", str(path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(6)
    ]  # fmt: skip
    for proc in procs:
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    assert [u.name for u in UsersFile(path).users()] == [f"user{i}" for i in range(6)]


def test_the_hub_starts_for_a_user_with_no_passwd_entry(tmp_path: Path) -> None:
    # A container's user with no passwd entry and no $USER: the passwd lookup fails as it does there (running
    # as a real unknown uid would need an interpreter outside root's home).
    env = {k: v for k, v in os.environ.items() if k not in ("USER", "LOGNAME", "LNAME", "USERNAME")}
    code = (
        "import os, pwd\n"
        "def missing(uid): raise KeyError(f'getpwuid(): uid not found: {uid}')\n"
        "pwd.getpwuid = missing\n"
        "from jupyter_sse.hub import create_app\n"
        "print(create_app(None).state.broker.owner, os.getuid())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    owner, uid = out.stdout.split()
    assert owner == f"uid-{uid}"
