"""Notification targets of the jupyter-sse hub's JupyterHub users, who have no users file: each sets their own
with `PUT jupyter-sse/api/notify` and a JupyterHub token, through the real proxy, and is told of their own jobs
only, at a real `json://` endpoint on loopback."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests._notify_targets import HTTPSink
from tests._replicas import wait_for
from tests.jupyterhub._hub import SERVICE, Hub

pytestmark = [pytest.mark.jupyterhub, pytest.mark.timeout(180)]


@pytest.fixture
def clients(hub: Hub) -> Iterator[dict[str, httpx.Client]]:
    api = f"{hub.url}services/{SERVICE}/jupyter-sse/api/"
    made: dict[str, httpx.Client] = {}
    for name in ("alice", "bob"):
        scopes = [f"access:services!service={SERVICE}"]
        response = hub.hub_api("POST", f"users/{name}/tokens", json={"scopes": scopes, "note": "jupyter-sse notify"})
        assert response.status_code == 201, response.text
        headers = {"Authorization": f"token {response.json()['token']}"}
        made[name] = httpx.Client(base_url=api, headers=headers, timeout=15)

    def up() -> bool:
        try:
            return made["alice"].get("jobs").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=60, what="the jupyter-sse service to answer")  # JupyterHub starts it with itself
    try:
        yield made
    finally:
        for client in made.values():
            client.put("notify", json={})  # the service outlives this test: back to the hub's settings
            client.close()


def test_jupyterhub_users_set_their_own_targets(clients: dict[str, httpx.Client], http_sink: HTTPSink) -> None:
    job = f"train-{secrets.token_hex(4)}"
    for name, client in clients.items():
        response = client.put("notify", json={"urls": [http_sink.url(name)], "min_duration": 0, "window": 0})
        assert response.status_code == 200, response.text
        assert response.json()["owner"] == name and response.json()["targets"] == "own"
    for name, client in clients.items():
        start = {"id": job, "name": f"{name}'s {job}"}
        assert client.post("updates", json={"jobs": [start]}).status_code == 200
        assert client.post("updates", json={"jobs": [{"id": job, "state": "succeeded", "elapsed": 2}]}).is_success
    http_sink.wait_for(2)
    told = {path: body["title"] for path, body in zip(http_sink.paths, http_sink.bodies, strict=True)}
    assert told == {"/alice": f"alice's {job} succeeded after 2.0 s", "/bob": f"bob's {job} succeeded after 2.0 s"}
    # one's settings are not another's to read or change
    assert clients["alice"].get("notify", params={"owner": "bob"}).status_code == 404
    assert clients["alice"].get("notify").json()["settings"]["urls"] == [http_sink.url("alice")]
