"""`follow` (the client's and `jupyter sse follow`'s) waits as long as a server at its cap on event streams asks
(503 with `Retry-After`), against a real Jupyter server whose cap is one stream."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import threading
import time
from contextlib import aclosing
from typing import Any

import httpx
import pytest

from jupyter_sse.cli import main
from jupyter_sse.client import AsyncClient
from jupyter_sse.client._common import MAX_RETRY_AFTER, retry_after
from tests._servers import TOKEN, ServerProcess
from tests.conftest import SSEServer, open_raw_stream

pytestmark = pytest.mark.timeout(120)

# The server's Retry-After is its retry_ms in whole seconds; our backoff without it would start at 0.25 s.
ASKED = 1.0
# seconds a loaded 2-core machine may add: the upper bound only catches a wait far beyond what was asked
SLACK = 5.0


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    jp_server_config["SSEExtension"]["max_event_streams"] = 1
    jp_server_config["SSEExtension"]["retry_ms"] = int(ASKED * 1000)
    return jp_server_config


def _answer(value: str | None) -> httpx.Response:
    return httpx.Response(503, headers={} if value is None else {"Retry-After": value})


def test_retry_after_in_seconds_or_as_a_date_bounded_and_ignored_when_bad() -> None:
    assert retry_after(_answer("3")) == 3.0
    assert retry_after(_answer(" 0 ")) == 0.0
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    assert retry_after(_answer(past)) == 0.0  # not in the future: at once (the usual backoff still applies)
    ahead = email.utils.formatdate(time.time() + 30, usegmt=True)
    waited = retry_after(_answer(ahead))
    assert waited is not None and 28 <= waited <= 30
    assert retry_after(_answer("86400")) == MAX_RETRY_AFTER  # a day: a bad header must not park a client
    assert retry_after(_answer("9" * 40)) == MAX_RETRY_AFTER
    for bad in ("soon", "-1", "1.5", "", "Mon, 99 Foo 2026 00:00:00", "2026-12-01T00:00:00"):
        assert retry_after(_answer(bad)) is None, bad
    assert retry_after(_answer(None)) is None


async def test_async_follow_waits_what_a_capped_server_asks_before_trying_again(sse_server: SSEServer) -> None:
    async with httpx.AsyncClient(headers=sse_server.auth) as http:
        body = {"jobs": [{"id": "a", "n": 1, "total": 10}]}
        assert (await http.post(sse_server.api + "updates", json=body)).status_code == 200
    held = await open_raw_stream(sse_server)  # the one stream the cap allows

    async def free_the_place() -> None:
        await asyncio.sleep(0.2)
        held[1].close()

    freeing = asyncio.ensure_future(free_the_place())
    started = time.monotonic()
    async with AsyncClient(sse_server.url, sse_server.token) as client, aclosing(client.follow()) as events:
        first = await anext(events)
        took = time.monotonic() - started
    await freeing
    assert first.event == "job" and first.data["id"] == "a"
    # Refused at once (503, Retry-After: 1); the place was free after 0.2 s, but the client came back only when
    # asked: at 0.25-0.75 s it would have been without Retry-After. At most 20 % more, for the jitter.
    assert ASKED <= took < ASKED * 1.2 + SLACK, took


def _held_stream(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = (
        f"GET /jupyter-sse/api/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: token {TOKEN}\r\n\r\n"
    )
    sock.sendall(head.encode())
    assert sock.recv(12) == b"HTTP/1.1 200"
    return sock


def test_cli_follow_waits_what_a_capped_server_asks(
    server_process: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    server_process.start("--SSEExtension.max_event_streams=1", f"--SSEExtension.retry_ms={int(ASKED * 1000)}")
    api = server_process.url + "jupyter-sse/api/"
    with httpx.Client(headers=server_process.auth, timeout=30) as http:
        assert http.post(api + "updates", json={"jobs": [{"id": "j", "n": 1, "total": 2}]}).status_code == 200
        held = _held_stream(server_process)

        def later() -> None:
            time.sleep(0.2)
            held.close()
            time.sleep(0.1)
            done = {"jobs": [{"id": "j", "n": 2, "total": 2, "state": "succeeded"}]}
            assert http.post(api + "updates", json=done).status_code == 200

        thread = threading.Thread(target=later)
        started = time.monotonic()
        thread.start()
        try:
            code = main(["--url", server_process.url, "--token", TOKEN, "follow", "j", "--json"])
        finally:
            thread.join()
        took = time.monotonic() - started
    out = capsys.readouterr().out
    assert code == 0, out
    assert '"state": "succeeded"' in out
    assert ASKED <= took < ASKED * 1.2 + SLACK, took
