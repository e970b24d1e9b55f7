"""The jupyter-sse hub as a JupyterHub service, behind the real JupyterHub and configurable-http-proxy of
conftest.py: JupyterHub's tokens and scopes decide, each user sees their own jobs, the admin scope sees all, a
kernel publishes with its server's token, and a browser logs in through JupyterHub's OAuth."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent

from jupyter_sse.protocol import WRITE_HEADER
from tests._sse import read_until
from tests.jupyterhub._hub import HARNESS_TOKEN, SERVICE, Hub
from tests.jupyterhub.test_jupyterhub import run_in_kernel

pytestmark = [pytest.mark.jupyterhub, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def service(hub: Hub) -> Iterator[tuple[str, dict[str, str]]]:
    """The service's API URL through the proxy, and tokens: alice's, bob's (the service's access scope only),
    admin's (with the admin scope too), and a token of alice's with no access to the service."""
    tokens: dict[str, str] = {}
    for name, scopes in [
        ("alice", [f"access:services!service={SERVICE}"]),
        ("bob", [f"access:services!service={SERVICE}"]),
        ("admin", [f"access:services!service={SERVICE}", "custom:jupyter-sse:admin"]),
    ]:
        response = hub.hub_api("POST", f"users/{name}/tokens", json={"scopes": scopes, "note": "jupyter-sse service"})
        assert response.status_code == 201, response.text
        tokens[name] = response.json()["token"]
    tokens["no-access"] = hub.tokens["alice"]  # access:servers!user=alice: her server, not the service
    tokens["harness"] = HARNESS_TOKEN  # a service's token with admin scopes on JupyterHub, but not this one's
    api = f"{hub.url}services/{SERVICE}/jupyter-sse/api/"
    deadline = time.monotonic() + 60
    while True:  # JupyterHub starts the service with itself; it may still be starting
        try:
            if httpx.get(api + "jobs", headers=_auth(tokens["alice"]), timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"the jupyter-sse service did not answer\n{hub.log_tail()}"
        time.sleep(0.3)
    yield api, tokens


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"token {token}"}


def _client(api: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=api, headers=_auth(token), timeout=httpx.Timeout(15, read=10))


def _publish(client: httpx.Client, *jobs: dict[str, Any]) -> list[str]:
    response = client.post("updates", json={"jobs": list(jobs)})
    assert response.status_code == 200, response.text
    cancel: list[str] = response.json()["cancel"]
    return cancel


def _stream_until(client: httpx.Client, path: str, name: str, **kw: Any) -> list[dict[str, Any]]:
    """The jobs of the stream's `job` events, read until one named ``name``."""

    def named(seen: list[ServerSentEvent]) -> bool:
        return seen[-1].event == "job" and seen[-1].json().get("name") == name

    events = read_until(client, path, named, **kw)
    return [sse.json() for sse in events if sse.event == "job"]


def test_isolation_over_every_route_as_a_jupyterhub_service(service: tuple[str, dict[str, str]]) -> None:
    api, tokens = service
    with (
        _client(api, tokens["alice"]) as alice,
        _client(api, tokens["bob"]) as bob,
        _client(api, tokens["admin"]) as admin,
    ):
        assert _publish(alice, {"id": "s1", "name": "alice-s1"}) == []
        assert _publish(bob, {"id": "s1", "name": "bob-s1"}) == []
        assert _publish(alice, {"id": "s-done", "name": "alice-done", "state": "succeeded"}) == []

        mine = {(j["id"], j["owner"]) for j in alice.get("jobs").json()["jobs"]}
        assert ("s1", "alice") in mine and all(owner == "alice" for _, owner in mine)
        assert {j["owner"] for j in bob.get("jobs").json()["jobs"]} == {"bob"}
        everyone = {(j["id"], j["owner"]) for j in admin.get("jobs").json()["jobs"]}
        assert {("s1", "alice"), ("s1", "bob"), ("s-done", "alice")} <= everyone

        assert bob.get("jobs/s1").json()["name"] == "bob-s1"
        assert bob.get("jobs/s-done").status_code == 404
        assert bob.get("jobs/s1", params={"owner": "alice"}).status_code == 404
        assert admin.get("jobs/s1").status_code == 409
        assert admin.get("jobs/s1", params={"owner": "alice"}).json()["name"] == "alice-s1"

        assert bob.post("jobs/s1/cancel").status_code == 202
        assert _publish(alice, {"id": "s1", "n": 1}) == []
        assert _publish(bob, {"id": "s1", "n": 1}) == ["s1"]
        assert bob.delete("jobs/s-done").status_code == 404
        assert admin.delete("jobs/s-done", params={"owner": "alice"}).status_code == 204

        # bob's stream: alice's change (published first) never reaches it
        _publish(alice, {"id": "s1", "name": "alice-mark"})
        _publish(bob, {"id": "s1", "name": "bob-mark"})
        seen = _stream_until(bob, "events", "bob-mark")
        assert {j["owner"] for j in seen} == {"bob"}
        seen = _stream_until(alice, "jobs/s1/events", "alice-mark")
        assert {j["owner"] for j in seen} == {"alice"}
        seen = _stream_until(admin, "events", "bob-mark")
        assert {"alice", "bob"} <= {j["owner"] for j in seen}


@pytest.mark.parametrize("who", [None, "no-access", "harness", "garbage"])
def test_every_route_refuses_without_access_to_the_service(
    service: tuple[str, dict[str, str]], who: str | None
) -> None:
    api, tokens = service
    headers = {} if who is None else _auth(tokens.get(who, "not-a-jupyterhub-token"))
    with httpx.Client(base_url=api, headers=headers, timeout=15) as client:
        for method, path in [
            ("GET", "jobs"),
            ("GET", "jobs/s1"),
            ("DELETE", "jobs/s1"),
            ("POST", "jobs/s1/cancel"),
            ("POST", "updates"),
            ("GET", "events"),
            ("GET", "jobs/s1/events"),
            ("GET", "openapi.json"),
        ]:
            response = client.request(method, path, json={"jobs": [{"id": "x"}]})
            assert response.status_code == 403, (who, method, path, response.text)


def test_a_kernel_publishes_with_its_servers_token(hub: Hub, service: tuple[str, dict[str, str]]) -> None:
    api, tokens = service
    url = hub.user_url("alice") + "api/kernels"
    response = httpx.post(url, json={"name": "python3"}, headers=hub.auth("alice"), timeout=60)
    assert response.status_code == 201, response.text
    kernel_id = str(response.json()["id"])
    try:
        code = (
            "import json, os, urllib.request\n"
            f"req = urllib.request.Request({api + 'updates'!r}, method='POST', "
            "data=json.dumps({'jobs': [{'id': 'from-kernel', 'name': 'kernel-job'}]}).encode(), "
            "headers={'Authorization': 'token ' + os.environ['JUPYTERHUB_API_TOKEN'], "
            "'Content-Type': 'application/json'})\n"
            "print(urllib.request.urlopen(req, timeout=20).status)"
        )
        assert run_in_kernel(hub, "alice", kernel_id, code).strip() == "200"
        # progress() itself, pointed at the service by JUPYTER_SSE_URL, with the server's token
        code = (
            "import os\n"
            f"os.environ['JUPYTER_SSE_URL'] = {api.removesuffix('jupyter-sse/api/')!r}\n"
            "os.environ['JUPYTER_SSE_TOKEN'] = os.environ['JUPYTERHUB_API_TOKEN']\n"
            "from jupyter_sse import progress\n"
            "for _ in progress(range(3), desc='kernel-progress'): pass\n"
            "print('done')"
        )
        assert run_in_kernel(hub, "alice", kernel_id, code).strip().endswith("done")
    finally:
        httpx.delete(f"{url}/{kernel_id}", headers=hub.auth("alice"), timeout=30)
    with _client(api, tokens["alice"]) as alice, _client(api, tokens["bob"]) as bob:
        assert alice.get("jobs/from-kernel").json()["owner"] == "alice"
        assert bob.get("jobs/from-kernel").status_code == 404
        deadline = time.monotonic() + 20
        while not [j for j in alice.get("jobs").json()["jobs"] if j["name"] == "kernel-progress"]:
            assert time.monotonic() < deadline, "the kernel's progress() did not reach the service"
            time.sleep(0.2)
        (job,) = [j for j in alice.get("jobs").json()["jobs"] if j["name"] == "kernel-progress"]
        assert (job["owner"], job["n"]) == ("alice", 3)


def test_a_browser_logs_in_through_jupyterhubs_oauth(hub: Hub, service: tuple[str, dict[str, str]]) -> None:
    api, tokens = service
    with _client(api, tokens["bob"]) as bob:
        assert bob.post("updates", json={"jobs": [{"id": "bobs-run", "n": 1}]}).status_code == 200
    with httpx.Client(timeout=30, headers={"Accept": "text/html"}) as browser:
        response = browser.get(api + "jobs")
        assert response.status_code == 302
        assert "/hub/api/oauth2/authorize" in response.headers["location"]
        # log in to JupyterHub (DummyAuthenticator), as a browser does: its form carries the _xsrf token
        form = browser.get(hub.url + "hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
        assert xsrf is not None, form.text[:500]
        response = browser.post(
            hub.url + "hub/login",
            data={"username": "bob", "password": "jupyter-sse-test", "_xsrf": xsrf.group(1)},
        )
        assert response.status_code in (200, 302), response.text[:500]
        # now the service's login: JupyterHub's authorize, our callback, back to the page asked for
        response = browser.get(api + "jobs", follow_redirects=True)
        assert response.status_code == 200, (response.url, response.text[:500])
        jobs = response.json()["jobs"]
        assert {j["owner"] for j in jobs} <= {"bob"}
        # the login cookie reads, but does not write: a page elsewhere could make the browser send it
        assert browser.post(api + "updates", json={"jobs": [{"id": "csrf"}]}).status_code == 403
        # ... unless the page sends the header only a page of this origin can (the Jobs panel's cancel and remove)
        origin = hub.url.rstrip("/")
        cancel = api + "jobs/bobs-run/cancel"
        assert browser.post(cancel, headers={WRITE_HEADER: "1", "Origin": "http://elsewhere.test"}).status_code == 403
        assert browser.post(cancel, headers={WRITE_HEADER: "1", "Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert browser.get(api + "jobs/bobs-run").json()["cancel_requested"] is False  # refused: nothing changed
        response = browser.post(cancel, headers={WRITE_HEADER: "1", "Origin": origin, "Sec-Fetch-Site": "same-origin"})
        assert response.status_code == 202, response.text
        assert browser.get(api + "jobs/bobs-run").json()["cancel_requested"] is True
