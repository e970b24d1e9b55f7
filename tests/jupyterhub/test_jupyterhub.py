"""jupyter-sse under a real JupyterHub: per-user isolation, streams through the proxy, idle culling.

The hub (conftest.py) runs configurable-http-proxy in front of alice's and bob's single-user servers; every
request here goes through that proxy unless it says otherwise. Tokens come from the hub's API with the scope a
user's own browser session has (``access:servers!user=NAME``); admin's token has all of the admin role.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_sse.client import Client
from jupyter_sse.server.app import _ACTIVITY_PERIOD as ACTIVITY_REFRESH
from tests.jupyterhub._hub import ACTIVITY_INTERVAL, HEARTBEAT, Hub

pytestmark = [pytest.mark.jupyterhub, pytest.mark.timeout(180)]

API = "jupyter-sse/api/"


# ---- helpers ---------------------------------------------------------------------------------------------------
def publish(url: str, token: str, *jobs: dict[str, Any]) -> httpx.Response:
    """What a kernel's publisher sends: ``POST updates`` with the publish token."""
    return httpx.post(
        url + API + "updates", json={"jobs": list(jobs)}, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_in_kernel(hub: Hub, user: str, kernel_id: str, code: str, timeout: float = 60) -> str:
    """Execute ``code`` in a kernel of ``user``'s server over its websocket, through the proxy; its stdout."""

    async def run() -> str:
        ws_url = hub.user_url(user).replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
        conn = await websocket_connect(HTTPRequest(ws_url, headers=hub.auth(user)))
        msg_id = uuid.uuid4().hex
        conn.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": user,
                        "session": uuid.uuid4().hex,
                        "version": "5.3",
                        "date": "",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "buffers": [],
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                }
            )
        )
        out: list[str] = []
        try:
            while True:
                raw = await asyncio.wait_for(conn.read_message(), timeout)
                assert raw is not None, "the kernel's websocket closed"
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                if kind == "stream" and msg["content"]["name"] == "stdout":
                    out.append(msg["content"]["text"])
                elif kind == "error":
                    raise AssertionError("\n".join(msg["content"]["traceback"]))
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    # Not execute_reply: it comes on the shell channel and can overtake the output on iopub;
                    # idle is sent on iopub after all of the cell's output.
                    return "".join(out)
        finally:
            conn.close()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def alice_kernel(hub: Hub) -> Iterator[str]:
    url = hub.user_url("alice") + "api/kernels"
    response = httpx.post(url, json={"name": "python3"}, headers=hub.auth("alice"), timeout=60)
    assert response.status_code == 201, response.text
    kernel_id = str(response.json()["id"])
    yield kernel_id
    httpx.delete(f"{url}/{kernel_id}", headers=hub.auth("alice"), timeout=30)


@pytest.fixture(scope="module")
def alice_env(hub: Hub, alice_kernel: str) -> dict[str, str]:
    """JUPYTER_SSE_URL and JUPYTER_SSE_TOKEN as alice's kernels see them."""
    code = (
        "import json, os; print(json.dumps({k: os.environ.get(k) for k in ('JUPYTER_SSE_URL', 'JUPYTER_SSE_TOKEN')}))"
    )
    return dict(json.loads(run_in_kernel(hub, "alice", alice_kernel, code)))


@pytest.fixture(scope="module")
def bob_env(hub: Hub) -> dict[str, str]:
    url = hub.user_url("bob") + "api/kernels"
    response = httpx.post(url, json={"name": "python3"}, headers=hub.auth("bob"), timeout=60)
    assert response.status_code == 201, response.text
    kernel_id = str(response.json()["id"])
    try:
        code = (
            "import json, os; print(json.dumps({k: os.environ[k] for k in ('JUPYTER_SSE_URL', 'JUPYTER_SSE_TOKEN')}))"
        )
        return dict(json.loads(run_in_kernel(hub, "bob", kernel_id, code)))
    finally:
        httpx.delete(f"{url}/{kernel_id}", headers=hub.auth("bob"), timeout=30)


def direct_url(hub: Hub, user: str) -> str:
    """The single-user server itself, bypassing the proxy (so that polling it is no traffic the proxy sees)."""
    target = hub.proxy_routes()[f"/user/{user}"]["target"]
    return f"{target}/user/{user}/"


# ---- base_url: the kernel, the server, the clients -------------------------------------------------------------
def test_kernel_environment_carries_the_user_prefix(hub: Hub, alice_env: dict[str, str]) -> None:
    url = alice_env["JUPYTER_SSE_URL"]
    assert url.endswith("/user/alice/"), url
    # The kernel talks to its own server on loopback, not through the proxy: no hop, no proxy auth.
    assert url == direct_url(hub, "alice")
    assert alice_env["JUPYTER_SSE_TOKEN"]


def test_a_job_from_alices_kernel_reaches_her_server(hub: Hub, alice_kernel: str) -> None:
    name = new_id("kernel-loop")
    code = (
        "import time\nfrom jupyter_sse import progress\n"
        f"for _ in progress(range(5), desc={name!r}):\n    time.sleep(0.05)\n"
    )
    run_in_kernel(hub, "alice", alice_kernel, code)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        jobs = httpx.get(hub.user_url("alice") + API + "jobs", headers=hub.auth("alice"), timeout=10).json()["jobs"]
        mine = [job for job in jobs if job["name"] == name]
        if mine and mine[0]["state"] == "succeeded":
            break
        time.sleep(0.2)
    assert mine and mine[0]["state"] == "succeeded", jobs
    assert mine[0]["n"] == 5 and mine[0]["kernel_id"] == alice_kernel
    assert mine[0]["owner"] == "alice"
    jobs = httpx.get(hub.user_url("bob") + API + "jobs", headers=hub.auth("bob"), timeout=10).json()["jobs"]
    assert not [job for job in jobs if job["name"] == name], "alice's job shows on bob's server"


def test_python_client_with_a_hub_url(hub: Hub, alice_env: dict[str, str]) -> None:
    job_id = new_id("client")
    assert publish(alice_env["JUPYTER_SSE_URL"], alice_env["JUPYTER_SSE_TOKEN"], {"id": job_id, "total": 3}).is_success

    def finish() -> None:
        for n in (1, 2, 3):
            time.sleep(0.2)
            update = {"id": job_id, "n": n, **({"state": "succeeded"} if n == 3 else {})}
            publish(alice_env["JUPYTER_SSE_URL"], alice_env["JUPYTER_SSE_TOKEN"], update)

    with Client(hub.user_url("alice"), hub.tokens["alice"]) as client:
        assert job_id in [job["id"] for job in client.list()]
        thread = threading.Thread(target=finish)
        thread.start()
        states = [event.data["n"] for event in client.follow(job_id) if event.event == "job"]
        thread.join()
        assert client.get(job_id)["state"] == "succeeded"
    assert states[-1] == 3


def test_cli_follow_against_the_hub(hub: Hub, alice_env: dict[str, str]) -> None:
    job_id = new_id("cli")
    assert publish(alice_env["JUPYTER_SSE_URL"], alice_env["JUPYTER_SSE_TOKEN"], {"id": job_id, "total": 4}).is_success
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_SSE_", "JUPYTER_TOKEN"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    jupyter = str(Path(sys.executable).with_name("jupyter"))
    proc = subprocess.Popen(
        [jupyter, "sse", "follow", job_id, "--url", hub.user_url("alice"), "--token", hub.tokens["alice"]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        for n in range(1, 5):
            time.sleep(0.3)
            update = {"id": job_id, "n": n, **({"state": "succeeded"} if n == 4 else {})}
            publish(alice_env["JUPYTER_SSE_URL"], alice_env["JUPYTER_SSE_TOKEN"], update)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (out, err)
    assert "succeeded" in out and "4/4" in out, (out, err)


# ---- isolation ---------------------------------------------------------------------------------------------------
# (method, path under the API, expected status for the owner); {job} is one of alice's jobs.
ROUTES = [
    ("GET", "jobs", 200),
    ("GET", "jobs/{job}", 200),
    ("GET", "jobs/{job}/events", 200),
    ("GET", "events", 200),
    ("POST", "jobs/{job}/cancel", 202),
    ("POST", "updates", 200),
    ("DELETE", "jobs/{job}", 204),  # last: it removes the job
]


def call(hub: Hub, method: str, path: str, headers: dict[str, str], user: str = "alice") -> int:
    """One request to ``user``'s server through the proxy; the status (a stream is closed as soon as it answers)."""
    url = hub.user_url(user) + API + path
    body = {"jobs": [{"id": new_id("upd")}]} if path == "updates" else None
    with httpx.stream(method, url, headers=headers, json=body, timeout=10) as response:
        if response.headers.get("content-type", "").startswith("application/json"):
            response.read()
        return response.status_code


@pytest.fixture
def alices_job(hub: Hub, alice_env: dict[str, str]) -> str:
    job_id = new_id("alice")
    # Finished, so DELETE may remove it; the routes do not care otherwise.
    response = publish(alice_env["JUPYTER_SSE_URL"], alice_env["JUPYTER_SSE_TOKEN"], {"id": job_id, "n": 1})
    assert response.is_success, response.text
    return job_id


@pytest.mark.parametrize(("method", "path", "owner_status"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_bob_is_refused_on_every_route_of_alices_server(
    hub: Hub, alices_job: str, method: str, path: str, owner_status: int
) -> None:
    path = path.format(job=alices_job)
    before = httpx.get(hub.user_url("alice") + API + f"jobs/{alices_job}", headers=hub.auth("alice")).json()
    assert call(hub, method, path, hub.auth("bob")) == 403
    assert call(hub, method, path, {}) == 403  # no credentials at all
    after = httpx.get(hub.user_url("alice") + API + f"jobs/{alices_job}", headers=hub.auth("alice")).json()
    assert after == before, "bob's request changed alice's job"
    if path.endswith("cancel"):
        # Still running: cancel answers 202.
        assert call(hub, method, path, hub.auth("alice")) == owner_status
    elif method == "DELETE":
        finish = {"id": alices_job, "state": "succeeded"}
        url = hub.user_url("alice")
        assert httpx.post(url + API + "updates", json={"jobs": [finish]}, headers=hub.auth("alice")).is_success
        assert call(hub, method, path, hub.auth("alice")) == owner_status
    else:
        assert call(hub, method, path, hub.auth("alice")) == owner_status


def test_admin_sees_what_the_admin_role_allows(hub: Hub, alices_job: str) -> None:
    # Observed with JupyterHub 5 and 6: the admin role includes `access:servers` (all servers), so an admin's
    # token reaches every route of alice's server, as it reaches the rest of her Jupyter API. A deployment that
    # does not want that gives its admins a custom role without `access:servers`.
    admin = hub.auth("admin")
    assert call(hub, "GET", "jobs", admin) == 200
    assert call(hub, "GET", f"jobs/{alices_job}", admin) == 200
    assert call(hub, "GET", "events", admin) == 200
    assert call(hub, "POST", f"jobs/{alices_job}/cancel", admin) == 202
    scopes = httpx.get(hub.api + "user", headers=admin, timeout=10).json()["scopes"]
    assert "access:servers" in scopes


def test_alices_publish_token_is_refused_by_bobs_server(
    hub: Hub, alice_env: dict[str, str], bob_env: dict[str, str]
) -> None:
    assert alice_env["JUPYTER_SSE_TOKEN"] != bob_env["JUPYTER_SSE_TOKEN"]
    job = {"id": new_id("cross")}
    assert publish(bob_env["JUPYTER_SSE_URL"], alice_env["JUPYTER_SSE_TOKEN"], job).status_code == 403
    # Through the proxy too: the token is simply not bob's server's.
    assert publish(hub.user_url("bob"), alice_env["JUPYTER_SSE_TOKEN"], job).status_code == 403
    # And a publish token reads nothing, even on its own server.
    headers = {"Authorization": f"Bearer {alice_env['JUPYTER_SSE_TOKEN']}"}
    assert httpx.get(hub.user_url("alice") + API + "jobs", headers=headers, timeout=10).status_code == 403


# ---- streams through the proxy -----------------------------------------------------------------------------------
class StreamReader(threading.Thread):
    """Reads an SSE stream through the proxy on a thread, recording when each line arrives."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.headers = headers
        self.lines: list[tuple[float, str]] = []
        self.opened = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=httpx.Timeout(10, read=30)) as response:
                assert response.status_code == 200
                self.opened.set()
                for line in response.iter_lines():
                    self.lines.append((time.monotonic(), line))
                    if self.stop.is_set():
                        return
        except BaseException as exc:
            self.error = exc
            self.opened.set()

    def job_events(self, job_id: str) -> list[tuple[float, dict[str, Any]]]:
        events = []
        for at, line in self.lines:
            if line.startswith("data: ") and f'"id":"{job_id}"' in line:
                events.append((at, json.loads(line[6:])))
        return events

    def pings(self, since: float = 0.0) -> int:
        return sum(1 for at, line in self.lines if line == ": ping" and at >= since)


def test_events_arrive_one_by_one_through_the_proxy(hub: Hub, alice_env: dict[str, str]) -> None:
    job_id = new_id("timing")
    reader = StreamReader(hub.user_url("alice") + API + f"events?job={job_id}", hub.auth("alice"))
    reader.start()
    assert reader.opened.wait(10) and reader.error is None, reader.error
    sent = []
    for n in range(8):
        sent.append(time.monotonic())
        update = {"id": job_id, "n": n, "total": 7, **({"state": "succeeded"} if n == 7 else {})}
        assert publish(alice_env["JUPYTER_SSE_URL"], alice_env["JUPYTER_SSE_TOKEN"], update).is_success
        time.sleep(max(0.0, sent[-1] + 0.3 - time.monotonic()))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(reader.job_events(job_id)) < 8:
        time.sleep(0.05)
    reader.stop.set()
    events = reader.job_events(job_id)
    assert [event["n"] for _, event in events] == list(range(8)), events
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(events)]
    latencies = [at - sent_at for (at, _), sent_at in zip(events, sent, strict=True)]
    print(f"\ninter-arrival through the proxy (s): {[round(g, 3) for g in gaps]}")
    print(f"publish-to-arrival latency (s): {[round(lat, 3) for lat in latencies]}")
    # Published 300 ms apart, they arrive about 300 ms apart: nothing on the way holds them back.
    assert all(0.15 < gap < 0.6 for gap in gaps), gaps
    assert max(latencies) < 0.25, latencies


def test_heartbeat_keeps_an_idle_stream_open_through_the_proxy(hub: Hub, alice_env: dict[str, str]) -> None:
    job_id = new_id("idle")
    reader = StreamReader(hub.user_url("alice") + API + f"events?job={job_id}", hub.auth("alice"))
    reader.start()
    assert reader.opened.wait(10) and reader.error is None, reader.error
    start = time.monotonic()
    time.sleep(4 * HEARTBEAT + 0.5)
    assert reader.pings(since=start) >= 3, reader.lines
    assert reader.is_alive() and reader.error is None
    # Still open, still live: an event after the idle period gets through.
    assert publish(alice_env["JUPYTER_SSE_URL"], alice_env["JUPYTER_SSE_TOKEN"], {"id": job_id}).is_success
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not reader.job_events(job_id):
        time.sleep(0.05)
    reader.stop.set()
    assert reader.job_events(job_id)


# ---- idle culling ------------------------------------------------------------------------------------------------
def server_last_activity(hub: Hub, user: str) -> float:
    """What the single-user server reports (``GET api/status``, itself no activity), asked directly, not
    through the proxy: a request through the proxy is activity in the proxy's eyes."""
    response = httpx.get(direct_url(hub, user) + "api/status", headers=hub.auth(user), timeout=10)
    return parse_time(response.json()["last_activity"])


def hub_last_activity(hub: Hub, user: str) -> float:
    """The hub's view of the server (what jupyterhub-idle-culler reads): the newest of what the single-user
    server reported and what the hub read from the proxy's routes."""
    return parse_time(hub.hub_api("GET", f"users/{user}").json()["servers"][""]["last_activity"])


def proxy_last_activity(hub: Hub, user: str) -> float:
    return parse_time(hub.proxy_routes()[f"/user/{user}"]["last_activity"])


def finish_unfinished_jobs(hub: Hub, env: dict[str, str]) -> None:
    jobs = httpx.get(env["JUPYTER_SSE_URL"] + API + "jobs", headers=hub.auth("alice"), timeout=10).json()["jobs"]
    updates = [{"id": job["id"], "state": "cancelled"} for job in jobs if job["state"] in ("pending", "running")]
    if updates:
        assert publish(env["JUPYTER_SSE_URL"], env["JUPYTER_SSE_TOKEN"], *updates).is_success


def test_an_idle_open_stream_is_not_activity_but_a_running_job_is(hub: Hub, alice_env: dict[str, str]) -> None:
    finish_unfinished_jobs(hub, alice_env)
    time.sleep(ACTIVITY_REFRESH + 0.5)  # the last refresh while jobs were unfinished is behind us
    server_before = server_last_activity(hub, "alice")

    # 1. A stream open through the proxy, heartbeats flowing, no job running.
    opened = time.time()
    reader = StreamReader(hub.user_url("alice") + API + "events?job=nothing-runs", hub.auth("alice"))
    reader.start()
    assert reader.opened.wait(10) and reader.error is None, reader.error
    time.sleep(2 * ACTIVITY_INTERVAL + 1.5)  # long enough for the server to report, and the hub to poll the proxy
    assert reader.pings() >= 3
    server_during = server_last_activity(hub, "alice")
    proxy_during = proxy_last_activity(hub, "alice")
    hub_during = hub_last_activity(hub, "alice")
    reader.stop.set()
    reader.join(5)
    print(
        f"\nidle stream open {time.time() - opened:.1f} s: server last_activity {server_during - opened:+.2f} s, "
        f"proxy route {proxy_during - opened:+.2f} s, hub {hub_during - opened:+.2f} s (relative to the open)"
    )
    time.sleep(0.5)
    # Observed: the client closing the stream is no `finish` of the proxied response, so no activity either.
    print(f"after the client closed it: proxy route {proxy_last_activity(hub, 'alice') - opened:+.2f} s")
    assert server_last_activity(hub, "alice") == server_before, "closing the stream made the server active"
    assert server_during == server_before, "an open stream made the server active"
    # configurable-http-proxy counts request bytes and *finished* responses, not response bytes: a stream's
    # heartbeats do not count while it is open (it counts once, when it ends with a 2xx).
    assert proxy_during < opened
    assert hub_during < opened

    # 2. A running job, reporting once, then silent (a long step): the server stays active on its own.
    job_id = new_id("long")
    reported = time.time()
    assert publish(alice_env["JUPYTER_SSE_URL"], alice_env["JUPYTER_SSE_TOKEN"], {"id": job_id}).is_success
    time.sleep(ACTIVITY_REFRESH + 1)
    first = server_last_activity(hub, "alice")
    time.sleep(ACTIVITY_REFRESH + 1)
    second = server_last_activity(hub, "alice")
    assert reported < first < second, (reported, first, second)  # refreshed, not just stamped by the report
    deadline = time.monotonic() + 3 * ACTIVITY_INTERVAL + 2
    while time.monotonic() < deadline and hub_last_activity(hub, "alice") < first:
        time.sleep(0.5)
    hub_view = hub_last_activity(hub, "alice")
    print(f"running job: server last_activity {second - reported:+.2f} s, hub {hub_view - reported:+.2f} s")
    assert hub_view >= first, "the hub did not hear of the running job's activity"

    # 3. The job ends: the activity stops with it.
    update = {"id": job_id, "state": "succeeded"}
    assert publish(alice_env["JUPYTER_SSE_URL"], alice_env["JUPYTER_SSE_TOKEN"], update).is_success
    time.sleep(ACTIVITY_REFRESH + 0.5)
    ended = server_last_activity(hub, "alice")
    time.sleep(ACTIVITY_REFRESH + 0.5)
    assert server_last_activity(hub, "alice") == ended
