"""A browser's auth: the login cookie reads, but every write also needs the XSRF token."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import SSEServer

pytestmark = pytest.mark.timeout(60)


async def _logged_in_browser(server: SSEServer) -> tuple[httpx.AsyncClient, str]:
    client = httpx.AsyncClient(timeout=10)
    await client.get(server.url + "login")
    xsrf = client.cookies["_xsrf"]
    response = await client.post(server.url + "login", data={"password": server.token, "_xsrf": xsrf})
    assert response.status_code in (200, 302), response.text
    assert any(name.startswith("username-") for name in client.cookies), dict(client.cookies)
    return client, xsrf


async def test_cookie_reads_but_writes_need_the_xsrf_token(sse_server: SSEServer) -> None:
    async with httpx.AsyncClient(headers=sse_server.publish_auth) as publisher:
        await publisher.post(sse_server.api + "updates", json={"jobs": [{"id": "w1"}, {"id": "w2", "state": "failed"}]})
    browser, xsrf = await _logged_in_browser(sse_server)
    try:
        assert (await browser.get(sse_server.api + "jobs")).status_code == 200
        async with browser.stream("GET", sse_server.api + "jobs/w2/events") as stream:
            assert stream.status_code == 200
        refused = [
            await browser.post(sse_server.api + "jobs/w1/cancel"),
            await browser.delete(sse_server.api + "jobs/w2"),
            await browser.post(sse_server.api + "updates", json={"jobs": [{"id": "w1", "n": 5}]}),
        ]
        assert [r.status_code for r in refused] == [403, 403, 403]
        assert all(r.json()["error"] == "forbidden" for r in refused)
        unchanged = (await browser.get(sse_server.api + "jobs/w1")).json()
        assert (unchanged["n"], unchanged["cancel_requested"]) == (0, False)

        headers = {"X-XSRFToken": xsrf}
        assert (await browser.post(sse_server.api + "jobs/w1/cancel", headers=headers)).status_code == 202
        assert (await browser.delete(sse_server.api + "jobs/w2", headers=headers)).status_code == 204
        ok = await browser.post(sse_server.api + "updates", json={"jobs": [{"id": "w1", "n": 5}]}, headers=headers)
        assert ok.status_code == 200
    finally:
        await browser.aclose()
