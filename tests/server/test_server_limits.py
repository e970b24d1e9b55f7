"""Caps on event streams, and a server at its open-file limit: beyond the caps a stream is answered 503 with
Retry-After; 2,000 clients against a server limited to 1,024 open files leave /api/status answering and the log
small."""

from __future__ import annotations

import asyncio
import json
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests._servers import TOKEN, ServerProcess
from tests.conftest import SSEServer, open_raw_stream

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    jp_server_config["SSEExtension"]["max_event_streams"] = 3
    jp_server_config["SSEExtension"]["max_event_streams_per_user"] = 2
    return jp_server_config


async def test_streams_beyond_the_per_user_cap_get_503_with_retry_after(sse_server: SSEServer) -> None:
    first = await open_raw_stream(sse_server)
    second = await open_raw_stream(sse_server)
    async with httpx.AsyncClient(headers=sse_server.auth, timeout=10) as client:
        refused = await client.get(sse_server.api + "events")
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "2"  # retry_ms 2000
        assert refused.headers["Connection"] == "close"
        assert refused.json()["error"] == "too_many_streams"
        refused_job = await client.get(sse_server.api + "jobs/some-job/events")
        assert refused_job.status_code == 503
        # Closing a stream frees its place.
        first[1].close()
        deadline = time.monotonic() + 10
        while sse_server.broker.subscriber_count > 1 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        third = await open_raw_stream(sse_server)
        # The rest of the API is not capped.
        assert (await client.get(sse_server.api + "jobs")).status_code == 200
    for _, writer, _ in (second, third):
        writer.close()


@contextmanager
def _open_file_limit(limit: int) -> Iterator[None]:
    """The soft open-file limit of this process, for the children it starts meanwhile (they inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _try_stream(port: int, results: dict[str, int], retry_after: set[str]) -> asyncio.StreamWriter | None:
    """One client: ``GET events``; returns its writer while the stream stays open."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 60)
    except (OSError, TimeoutError):
        results["connect_failed"] += 1
        return None
    head = f"GET /jupyter-sse/api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: token {TOKEN}\r\n\r\n"
    writer.write(head.encode())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        results["no_answer"] += 1
        writer.close()
        return None
    status = head.split(b" ", 2)[1].decode()
    results[status] = results.get(status, 0) + 1
    if status == "503":
        for line in head.decode().split("\r\n"):
            if line.lower().startswith("retry-after:"):
                retry_after.add(line.split(":", 1)[1].strip())
        writer.close()
        return None
    return writer


def test_at_1024_open_files_2000_clients_leave_the_server_answering(server_process: ServerProcess) -> None:
    with _open_file_limit(1024):
        # jupyter_server raises a soft limit below 4096 by itself; a user whose hard limit is 1,024 gets no more.
        server_process.start("--ServerApp.min_open_files_limit=0")
    assert server_process.proc is not None
    latencies: list[float] = []
    stop = threading.Event()

    def probe_status() -> None:
        # A fresh connection each time, as a new browser tab or a health check would open.
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = httpx.get(server_process.url + "api/status", headers=server_process.auth, timeout=30)
                assert response.status_code == 200
                latencies.append(time.monotonic() - started)
            except httpx.TransportError:
                latencies.append(float("inf"))
            stop.wait(0.2)

    async def flood() -> dict[str, int]:
        results = {"connect_failed": 0, "no_answer": 0}
        retry_after: set[str] = set()
        writers = await asyncio.gather(*(_try_stream(server_process.port, results, retry_after) for _ in range(2000)))
        kernel_list = await asyncio.to_thread(
            httpx.get, server_process.url + "api/kernels", headers=server_process.auth, timeout=30
        )
        assert kernel_list.status_code == 200
        for writer in writers:
            if writer is not None:
                writer.close()
        results["retry_after_values"] = len(retry_after)
        assert retry_after <= {"2"}, retry_after
        return results

    prober = threading.Thread(target=probe_status)
    prober.start()
    try:
        results = asyncio.run(flood())
    finally:
        stop.set()
        prober.join()
    log_size = (server_process.tmp / "server.log").stat().st_size
    print(json.dumps({**results, "status_max_s": max(latencies), "status_probes": len(latencies), "log": log_size}))
    # The default cap: the open-file limit less a quarter, kept for everything else.
    assert results.get("200", 0) == 768, results
    assert results.get("503", 0) >= 2000 - 768 - results["connect_failed"] - results["no_answer"] - 50, results
    assert results["retry_after_values"] == 1
    assert latencies and max(latencies) < 10.0, latencies
    assert log_size < 100_000, f"{log_size} bytes of log"
    # And the server still serves once they are gone.
    assert server_process.get("jobs").status_code == 200
