"""The hub's event streams on a real uvicorn server over real sockets: the caps on open streams (the extension's
rules, from the core), the broadcast path (the broker writing to many streams in one pass), a client that stops
reading, and a hub run by a user with no passwd entry."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jupyter_sse.hub import BackgroundHub, UsersFile
from tests._replicas import wait_for
from tests._servers import free_port

pytestmark = pytest.mark.timeout(90)

TOKEN = "streams-token"


def _client(hub: BackgroundHub, token: str = TOKEN) -> httpx.Client:
    return httpx.Client(
        base_url=hub.url + "jupyter-sse/api/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(10, read=5),
    )


def _raw_stream(
    hub: BackgroundHub, token: str, path: str = "events", receive_buffer: int | None = None
) -> socket.socket:
    """A GET of a stream on a bare socket, its head read (so the server counts it open); ``receive_buffer``
    small and never read: a client that stops reading."""
    host, port = hub.url.split("//")[1].rstrip("/").rsplit(":", 1)
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /jupyter-sse/api/{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    sock.settimeout(5)
    head = b""
    while b"jupyter-sse v1" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def _refused(hub: BackgroundHub, token: str, path: str = "events") -> httpx.Response:
    with _client(hub, token) as client:
        response = client.get(path)
    return response


def _open_streams(hub: BackgroundHub) -> int:
    """The streams the hub counts against its caps (a stream is let go once its response is over)."""
    assert hub.app is not None
    return int(hub.app.state.stream_limits.open)


@pytest.fixture
def team(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    path = tmp_path / "users.json"
    users = UsersFile(path)
    tokens = {name: users.add(name) for name in ("alice", "bob")}
    yield path, tokens


def test_streams_beyond_the_per_user_cap_get_503_with_retry_after(team: tuple[Path, dict[str, str]]) -> None:
    path, tokens = team
    with BackgroundHub(users=path, max_event_streams_per_user=2, retry_ms=2000) as hub:
        held = [_raw_stream(hub, tokens["alice"]), _raw_stream(hub, tokens["alice"], "events?job=a")]
        try:
            refused = _refused(hub, tokens["alice"])
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "2"  # retry_ms 2000, as the extension rounds it
            assert refused.headers["Connection"] == "close"  # a refused client must not keep its descriptor
            assert refused.json()["error"] == "too_many_streams"
            assert "alice" in refused.json()["detail"]
            # A job's stream counts too; bob has streams of his own.
            with _client(hub, tokens["alice"]) as client:
                client.post("updates", json={"jobs": [{"id": "a", "name": "a"}]}).raise_for_status()
            assert _refused(hub, tokens["alice"], "jobs/a/events").status_code == 503
            bob = _raw_stream(hub, tokens["bob"])
            bob.close()
            # Closing one of alice's frees its place once the server has seen it go.
            held.pop().close()
            wait_for(lambda: _open_streams(hub) == 1, what="the closed stream to be let go")
            held.append(_raw_stream(hub, tokens["alice"]))
        finally:
            for sock in held:
                sock.close()


def test_streams_beyond_the_total_cap_are_refused_for_everyone(team: tuple[Path, dict[str, str]]) -> None:
    path, tokens = team
    with BackgroundHub(users=path, max_event_streams=2) as hub:
        held = [_raw_stream(hub, tokens["alice"]), _raw_stream(hub, tokens["bob"])]
        try:
            for name in ("alice", "bob"):
                refused = _refused(hub, tokens[name])
                assert refused.status_code == 503
                assert "most event streams" in refused.json()["detail"]
            # A refused request changed nothing: both streams still count, and still deliver.
            assert hub.app is not None
            assert hub.app.state.tenants.get("alice").subscriber_count == 1
            with _client(hub, tokens["bob"]) as client:
                client.post("updates", json={"jobs": [{"id": "b1", "name": "bob's"}]}).raise_for_status()
            held[1].settimeout(5)
            got = b""
            while b"bob's" not in got:
                chunk = held[1].recv(65536)
                assert chunk
                got += chunk
        finally:
            for sock in held:
                sock.close()


def test_bad_stream_caps_are_refused() -> None:
    from jupyter_sse.hub import create_app

    with pytest.raises(ValueError, match="max_event_streams"):
        create_app(TOKEN, max_event_streams=-1)


def _read_events(sock: socket.socket, until: Callable[[list[dict[str, str]]], bool]) -> list[dict[str, str]]:
    """Parse SSE events off a raw chunked response until ``until(events)``."""
    sock.settimeout(10)
    buffer = b""
    events: list[dict[str, str]] = []
    while not until(events):
        chunk = sock.recv(65536)
        assert chunk, "the stream ended"
        buffer += chunk
        # Chunk framing lines hold only hex digits; SSE fields always hold a colon: skip the former.
        *blocks, buffer = buffer.split(b"\n\n")
        for block in blocks:
            event: dict[str, str] = {}
            for line in block.decode().splitlines():
                field, sep, value = line.partition(": ")
                if sep and field in ("id", "event", "data"):
                    event[field] = value
            if "data" in event:
                events.append(event)
    return events


def test_many_streams_get_every_update_in_order_and_a_large_frame_whole() -> None:
    with BackgroundHub(TOKEN, heartbeat=1.0) as hub, _client(hub) as client:
        socks = [_raw_stream(hub, TOKEN) for _ in range(30)]
        try:
            for n in range(1, 21):
                body = {"jobs": [{"id": "fan", "name": "fan", "n": n, "total": 20}]}
                client.post("updates", json=body).raise_for_status()
            # Over 64 KiB in one change: the frame goes through the stream's own loop, not the broadcast path.
            lines = [f"{i:05d}" + "y" * 200 for i in range(400)]
            client.post("updates", json={"logs": [{"job": "fan", "lines": lines}]}).raise_for_status()
            for sock in socks:
                events = _read_events(sock, lambda seen: any(e.get("event") == "log" for e in seen))
                ns = [json.loads(e["data"])["n"] for e in events if e.get("event") == "job"]
                assert ns[-1] == 20 and ns == sorted(ns), ns  # conflated maybe, never out of order
                ids = [int(e["id"].rsplit(".", 1)[1]) for e in events]
                assert ids == sorted(ids) and len(set(ids)) == len(ids)
                logs = [json.loads(e["data"]) for e in events if e.get("event") == "log"]
                assert [line for log in logs for line in log["lines"]] == lines
        finally:
            for sock in socks:
                sock.close()


def test_a_client_that_stops_reading_is_dropped_and_the_others_keep_up() -> None:
    with BackgroundHub(TOKEN, heartbeat=1.0, send_timeout=2.0) as hub, _client(hub) as client:
        stuck = _raw_stream(hub, TOKEN, receive_buffer=4096)
        reader = _raw_stream(hub, TOKEN)
        try:
            started = time.monotonic()
            for r in range(60):
                body = {"jobs": [{"id": f"big{j}", "n": r, "message": f"{r:04d}" + "x" * 4000} for j in range(20)]}
                client.post("updates", json=body).raise_for_status()
                events = _read_events(reader, lambda seen, r=r: any(f'"n":{r},' in e["data"] for e in seen))
                assert events
            assert hub.app is not None
            metrics = hub.broker.metrics
            wait_for(lambda: metrics.slow_subscribers_dropped >= 1, timeout=15, what="the stuck client to be dropped")
            assert time.monotonic() - started >= 2.0  # not before the send timeout
            wait_for(lambda: _open_streams(hub) == 1, what="the dropped stream to be let go")
        finally:
            stuck.close()
            reader.close()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare for a user namespace")
def test_the_hub_runs_as_a_user_with_no_passwd_entry(tmp_path: Path) -> None:
    """In a container whose user has no passwd entry and no $USER, getpass.getuser() raises: the hub must start
    and name its jobs' owner by uid."""
    probe = subprocess.run(["unshare", "--user", "--map-user=54321", "--map-group=54321", "true"], check=False)
    if probe.returncode != 0:
        pytest.fail("unshare cannot make a user namespace here")
    env = {k: v for k, v in os.environ.items() if k not in ("USER", "LOGNAME", "LNAME", "USERNAME")}
    port = free_port()
    cmd = ["unshare", "--user", "--map-user=54321", "--map-group=54321"]
    cmd += [sys.executable, "-m", "jupyter_sse.cli", "hub", "--no-auth", "--port", str(port)]
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}/jupyter-sse/api/"

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(base + "jobs", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=30, what="the hub to start")
        answer: Any = httpx.post(base + "updates", json={"jobs": [{"id": "c1", "name": "in a container"}]})
        answer.raise_for_status()
        assert httpx.get(base + "jobs/c1").json()["owner"] == "uid-54321"
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_admin_stream_keeps_one_order_when_a_second_user_appears(tmp_path: Path) -> None:
    """An admin's stream over one user's jobs takes the broadcast path; once a second user publishes it reads both
    brokers in one id order instead (two brokers would write in their own orders)."""
    path = tmp_path / "users.json"
    users = UsersFile(path)
    tokens = {"root": users.add("root", admin=True), "alice": users.add("alice"), "bob": users.add("bob")}
    with BackgroundHub(users=path, heartbeat=1.0) as hub:
        with _client(hub, tokens["alice"]) as alice:
            alice.post("updates", json={"jobs": [{"id": "a", "name": "alice's", "n": 0}]}).raise_for_status()
        admin = _raw_stream(hub, tokens["root"])
        try:
            with _client(hub, tokens["alice"]) as alice, _client(hub, tokens["bob"]) as bob:
                for n in range(1, 11):
                    alice.post("updates", json={"jobs": [{"id": "a", "name": "alice's", "n": n}]}).raise_for_status()
                    bob.post("updates", json={"jobs": [{"id": "b", "name": "bob's", "n": n}]}).raise_for_status()

            def finished(seen: list[dict[str, str]]) -> bool:
                last = {
                    json.loads(e["data"])["id"]: json.loads(e["data"])["n"] for e in seen if e.get("event") == "job"
                }
                return last.get("a") == 10 and last.get("b") == 10

            events = _read_events(admin, finished)
            ids = [int(e["id"].rsplit(".", 1)[1]) for e in events]
            assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
            owners = {json.loads(e["data"])["owner"] for e in events if e.get("event") == "job"}
            assert owners == {"alice", "bob"}
        finally:
            admin.close()


def test_the_hub_and_the_extension_default_to_the_same_settings() -> None:
    """Both take their defaults from the core's StreamSettings: a default changed there changes both."""
    import inspect

    from jupyter_sse.core.adapter import StreamSettings
    from jupyter_sse.hub import create_app
    from jupyter_sse.server.app import SSEExtension

    core = StreamSettings()
    hub = inspect.signature(create_app).parameters
    assert {name: hub[name].default for name in ("heartbeat", "retry_ms", "send_timeout", "publisher_lease")} == {
        "heartbeat": core.heartbeat,
        "retry_ms": core.retry_ms,
        "send_timeout": core.send_timeout,
        "publisher_lease": core.publisher_lease,
    }
    assert hub["wake_delay"].default == core.wake_delay
    extension = SSEExtension.class_traits()
    assert extension["heartbeat_interval"].default_value == core.heartbeat
    assert extension["retry_ms"].default_value == core.retry_ms
    assert extension["send_timeout"].default_value == core.send_timeout
    assert extension["publisher_lease"].default_value == core.publisher_lease
    assert extension["wake_delay"].default_value == core.wake_delay


def test_the_cli_hub_takes_the_stream_caps(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "jupyter_sse.cli", "hub", "--token", TOKEN, "--port", str(port)]
    bad = subprocess.run([*cmd, "--max-event-streams", "-1"], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode != 0 and "max_event_streams" in bad.stderr
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*cmd, "--max-event-streams-per-user", "1"], stdout=out, stderr=subprocess.STDOUT)
    held: socket.socket | None = None
    try:
        base = f"http://127.0.0.1:{port}/jupyter-sse/api/"
        headers = {"Authorization": f"Bearer {TOKEN}"}

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(base + "jobs", headers=headers, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=30, what="the hub to start")
        held = socket.create_connection(("127.0.0.1", port))
        held.sendall(
            f"GET /jupyter-sse/api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        held.settimeout(10)
        assert held.recv(4096).startswith(b"HTTP/1.1 200")
        refused = httpx.get(base + "events", headers=headers, timeout=5)
        assert refused.status_code == 503 and refused.json()["error"] == "too_many_streams"
    finally:
        if held is not None:
            held.close()
        proc.terminate()
        proc.wait(10)
