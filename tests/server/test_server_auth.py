"""Auth on every route of the extension, through a real Jupyter server with unauthenticated access disabled.

- no or wrong credentials: 403 with the protocol's JSON error;
- the kernels' publish token: ``POST updates`` and nothing else, here or in the rest of the Jupyter API;
- the server's own token: everything.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from jupyter_sse.server.handlers import handlers
from tests.conftest import SSEServer

pytestmark = pytest.mark.timeout(60)

# (method, path under jupyter-sse/api/): every route and method of protocol v1.
ROUTES = [
    ("GET", "jobs"),
    ("GET", "jobs/known"),
    ("POST", "updates"),
    ("POST", "jobs/known/cancel"),
    ("DELETE", "jobs/known"),
    ("GET", "events"),
    ("GET", "jobs/known/events"),
]

GOOD_UPDATE = {"jobs": [{"id": "fresh", "n": 1}]}


async def _setup(server: SSEServer) -> None:
    """A finished job "known", so that every route has something to act on (and job streams end)."""
    async with httpx.AsyncClient(headers=server.publish_auth) as client:
        response = await client.post(server.api + "updates", json={"jobs": [{"id": "known", "state": "succeeded"}]})
    assert response.status_code == 200


async def _call(client: httpx.AsyncClient, server: SSEServer, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """Status and JSON body (None for a stream or an empty body); streams are not read to their end."""
    json_body = GOOD_UPDATE if path == "updates" else None
    async with client.stream(method, server.api + path, json=json_body, **kwargs) as response:
        if response.headers.get("content-type", "").startswith("application/json"):
            await response.aread()
            return response.status_code, response.json()
        return response.status_code, None


async def _jobs(server: SSEServer) -> Any:
    async with httpx.AsyncClient(headers=server.auth) as client:
        response = await client.get(server.api + "jobs")
    assert response.status_code == 200
    return response.json()


def _assert_forbidden(results: dict[tuple[str, str], tuple[int, Any]]) -> None:
    wrong = {route: result for route, result in results.items() if result[0] != 403}
    assert not wrong, wrong
    for route, (_, body) in results.items():
        assert isinstance(body, dict) and body.get("error") == "forbidden", (route, body)
        assert "detail" in body, (route, body)


async def test_no_credentials_are_forbidden_on_every_route(sse_server: SSEServer) -> None:
    await _setup(sse_server)
    before = await _jobs(sse_server)
    async with httpx.AsyncClient(timeout=10) as client:
        results = {(m, p): await _call(client, sse_server, m, p) for m, p in ROUTES}
    _assert_forbidden(results)
    assert await _jobs(sse_server) == before


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "token wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["token", "bearer", "bearer-without-token", "basic"],
)
async def test_a_wrong_token_is_forbidden_on_every_route(sse_server: SSEServer, headers: dict[str, str]) -> None:
    await _setup(sse_server)
    before = await _jobs(sse_server)
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        results = {(m, p): await _call(client, sse_server, m, p) for m, p in ROUTES}
    _assert_forbidden(results)
    assert await _jobs(sse_server) == before


async def test_a_near_miss_of_the_publish_token_is_forbidden(sse_server: SSEServer) -> None:
    token = sse_server.publish_token
    before = await _jobs(sse_server)
    for value in (token[:-1], token + "x", token.upper() if token.upper() != token else token.lower()):
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {value}"}) as client:
            status, body = await _call(client, sse_server, "POST", "updates")
        assert (status, body["error"]) == (403, "forbidden")
    assert await _jobs(sse_server) == before


async def test_the_publish_token_opens_post_updates_and_nothing_else(sse_server: SSEServer) -> None:
    await _setup(sse_server)
    before = await _jobs(sse_server)
    async with httpx.AsyncClient(headers=sse_server.publish_auth, timeout=10) as client:
        results = {(m, p): await _call(client, sse_server, m, p) for m, p in ROUTES if p != "updates"}
        _assert_forbidden(results)
        # Nothing was cancelled or deleted by the refused calls.
        assert await _jobs(sse_server) == before
        status, body = await _call(client, sse_server, "POST", "updates")
    assert (status, body) == (200, {"cancel": []})
    assert "fresh" in [job["id"] for job in (await _jobs(sse_server))["jobs"]]


async def test_the_server_token_opens_every_route(sse_server: SSEServer) -> None:
    await _setup(sse_server)
    async with httpx.AsyncClient(headers=sse_server.auth, timeout=10) as client:
        results = {(m, p): await _call(client, sse_server, m, p) for m, p in ROUTES}
    assert results[("GET", "jobs")][0] == 200
    assert results[("GET", "jobs/known")][0] == 200
    assert results[("POST", "updates")] == (200, {"cancel": []})
    assert results[("POST", "jobs/known/cancel")][0] == 200  # finished: returned unchanged
    assert results[("DELETE", "jobs/known")][0] == 204
    assert results[("GET", "events")] == (200, None)
    # "known" was deleted just before: its stream is a 404 now, which is still not an auth refusal.
    assert results[("GET", "jobs/known/events")][0] == 404


async def test_the_server_token_opens_a_job_stream(sse_server: SSEServer) -> None:
    await _setup(sse_server)
    async with httpx.AsyncClient(headers=sse_server.auth, timeout=10) as client:
        status, body = await _call(client, sse_server, "GET", "jobs/known/events")
    assert (status, body) == (200, None)


async def test_the_server_token_as_bearer_or_in_the_query_works(sse_server: SSEServer) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        bearer = await client.get(sse_server.api + "jobs", headers={"Authorization": f"Bearer {sse_server.token}"})
        # jupyter_server accepts its token in the URL, also on a POST (no XSRF check for token auth).
        posted = await client.post(sse_server.api + "updates", params={"token": sse_server.token}, json=GOOD_UPDATE)
    assert bearer.status_code == 200
    assert (posted.status_code, posted.json()) == (200, {"cancel": []})


async def test_the_publish_token_is_not_accepted_in_the_query(sse_server: SSEServer) -> None:
    before = await _jobs(sse_server)
    async with httpx.AsyncClient(timeout=10) as client:
        posted = await client.post(
            sse_server.api + "updates", params={"token": sse_server.publish_token}, json=GOOD_UPDATE
        )
        listed = await client.get(sse_server.api + "jobs", params={"token": sse_server.publish_token})
    assert (posted.status_code, posted.json()["error"]) == (403, "forbidden")
    assert (listed.status_code, listed.json()["error"]) == (403, "forbidden")
    assert await _jobs(sse_server) == before


async def test_the_publish_token_still_checks_the_host_header(sse_server: SSEServer) -> None:
    """DNS rebinding: a page on evil.example that learned the token must not publish through the browser."""
    before = await _jobs(sse_server)
    port = httpx.URL(sse_server.url).port
    async with httpx.AsyncClient(headers={**sse_server.publish_auth, "Host": f"evil.example:{port}"}) as client:
        response = await client.post(sse_server.api + "updates", json=GOOD_UPDATE)
    assert response.status_code == 403
    assert await _jobs(sse_server) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "api/contents"),
        ("GET", "api/kernels"),
        ("POST", "api/kernels"),
        ("GET", "api/sessions"),
        ("POST", "api/sessions"),
        ("GET", "api/kernelspecs"),
        ("GET", "api/me"),
        ("PUT", "api/contents/stolen.txt"),
    ],
)
async def test_the_publish_token_does_not_open_the_jupyter_api(sse_server: SSEServer, method: str, path: str) -> None:
    body = {"type": "file", "format": "text", "content": "x"} if method == "PUT" else {}
    async with httpx.AsyncClient(headers=sse_server.publish_auth, timeout=10) as client:
        response = await client.request(method, sse_server.url + path, json=body)
        kernels = await client.get(sse_server.url + "api/kernels", headers=sse_server.auth)
        stolen = await client.get(sse_server.url + "api/contents/stolen.txt", headers=sse_server.auth)
    assert response.status_code == 403, (method, path, response.status_code, response.text[:200])
    # ... and the refused calls did not start a kernel or write a file.
    assert kernels.json() == []
    assert stolen.status_code == 404


async def test_the_server_token_does_open_the_jupyter_api(sse_server: SSEServer) -> None:
    """The control for the test above: the same calls with the server's token are not refused."""
    async with httpx.AsyncClient(headers=sse_server.auth, timeout=10) as client:
        for path in ("api/contents", "api/kernels", "api/sessions", "api/me"):
            response = await client.get(sse_server.url + path)
            assert response.status_code == 200, path


async def test_the_extension_is_enabled_loaded_and_its_routes_are_registered(sse_server: SSEServer) -> None:
    manager = sse_server.app.extension_manager
    package = manager.extensions["jupyter_sse"]
    assert package.enabled
    assert manager.linked_extensions.get("jupyter_sse") is True
    (app,) = manager.extension_apps["jupyter_sse"]
    assert type(app).__name__ == "SSEExtension"
    assert sse_server.app.web_app.settings["jupyter_sse_broker"] is app.broker

    registered: set[tuple[str, type]] = set()

    def walk(router: Any) -> None:
        for rule in getattr(router, "rules", []):
            regex = getattr(rule.matcher, "regex", None)
            if regex is not None and isinstance(rule.target, type):
                registered.add((regex.pattern, rule.target))
            walk(rule.target)

    walk(sse_server.app.web_app.default_router)
    base = sse_server.app.base_url.rstrip("/")
    for pattern, handler in handlers():
        assert (f"{base}{pattern}$", handler) in registered, pattern


def test_every_handler_method_requires_authentication() -> None:
    """What jupyter_server checks when it adds extension handlers: it would warn (an error in these tests)
    about any method lacking @web.authenticated, which would make loading fail with only a log line."""
    from jupyter_server.serverapp import ServerWebApplication

    for pattern, handler in handlers():
        assert ServerWebApplication._check_handler_auth(None, pattern, handler) == [], handler  # type: ignore[arg-type]
        implemented = [
            m for m in handler.SUPPORTED_METHODS if getattr(handler, m.lower()) is not handler._unimplemented_method
        ]
        assert implemented, handler
