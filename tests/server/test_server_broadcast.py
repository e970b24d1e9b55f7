"""The broadcast path of the event streams (``EventsHandler._write_now``): the broker's frames written straight to
each waiting stream's socket arrive intact, framed as tornado frames the response, on raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from jupyter_sse.server.handlers import EventsHandler
from tests._servers import ServerProcess
from tests._wait import until
from tests.conftest import SSEServer, open_raw_stream
from tests.core.test_sse import spec_parse

pytestmark = pytest.mark.timeout(60)


@dataclass
class Broadcasts:
    """What the broadcast path did: frames it took, how many of them the socket did not take whole (the rest
    queued in tornado's buffer), and how often a busy stream refused one."""

    taken: list[bytes] = field(default_factory=list)
    queued: int = 0
    refused: int = 0
    send_buffer: int | None = None  # set it to shrink the server side's socket buffer before the first write


@pytest.fixture
def broadcasts(monkeypatch: pytest.MonkeyPatch) -> Broadcasts:
    """Records every call of the broadcast path; the real method still does the writing."""
    seen = Broadcasts()
    real = EventsHandler._write_now

    def recording(self: EventsHandler, frame: bytes) -> bool:
        stream = self.request.connection.stream  # type: ignore[attr-defined]
        if seen.send_buffer is not None and not stream.closed():
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, seen.send_buffer)
        took = real(self, frame)
        if took:
            seen.taken.append(frame)
            seen.queued += stream.writing()
        else:
            seen.refused += 1
        return took

    monkeypatch.setattr(EventsHandler, "_write_now", recording)
    return seen


@contextlib.asynccontextmanager
async def _open(
    server: SSEServer, version: str, receive_buffer: int | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, bytes]]:
    reader, writer, head = await open_raw_stream(server, version, receive_buffer)
    try:
        yield reader, head
    finally:
        writer.close()
        await writer.wait_closed()


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 chunk, read strictly: a wrong size or a missing CRLF fails the test."""
    size_line = await reader.readuntil(b"\r\n")
    size = int(size_line[:-2], 16)
    assert size > 0, "the stream ended"
    data = await reader.readexactly(size)
    assert await reader.readexactly(2) == b"\r\n", "a chunk's data did not end where its size said"
    return data


def _jobs_in(body: bytes) -> list[tuple[int, dict[str, Any]]]:
    """(id, job) of each ``job`` event in ``body``, read by the spec-following parser of test_sse."""
    events = spec_parse(body).events
    return [(int(e.last_event_id.rpartition(".")[2]), json.loads(e.data)) for e in events if e.type == "job"]


async def _parked(server: SSEServer) -> None:
    """Until every stream waits for changes again (then a change takes the broadcast path)."""
    subscriptions = server.broker._all_subscribers
    await until(lambda: all(sub._waiter is not None for sub in subscriptions), what="the streams to wait")


async def _publish(server: SSEServer, n: int) -> None:
    async with httpx.AsyncClient(headers=server.publish_auth) as client:
        response = await client.post(server.api + "updates", json={"jobs": [{"id": "bc", "n": n, "total": 9}]})
        assert response.status_code == 200


async def test_http11_streams_get_broadcast_frames_as_whole_chunks(
    sse_server: SSEServer, broadcasts: Broadcasts
) -> None:
    async with _open(sse_server, "HTTP/1.1") as (reader, head):
        assert b"transfer-encoding: chunked" in head.lower()
        await _read_chunk(reader)  # retry + comment
        await _read_chunk(reader)  # the initial snapshot: a ping when there are no jobs yet
        for n in range(1, 4):
            await _parked(sse_server)  # so the next change takes the broadcast path
            await _publish(sse_server, n)
            body = await asyncio.wait_for(_read_chunk(reader), 5)
            assert [job["n"] for _, job in _jobs_in(body)] == [n]
    assert len(broadcasts.taken) == 3


async def test_http10_streams_get_broadcast_frames_unchunked(sse_server: SSEServer, broadcasts: Broadcasts) -> None:
    async with _open(sse_server, "HTTP/1.0") as (reader, head):
        assert b"transfer-encoding" not in head.lower()
        opening = await asyncio.wait_for(reader.readuntil(b": ping\n\n"), 5)  # the initial snapshot: no jobs
        assert opening.startswith(b"retry:"), opening
        for n in range(1, 4):
            await _parked(sse_server)
            await _publish(sse_server, n)
            body = await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
            assert body.startswith(b"id: "), body  # the event itself, with no chunk size before it
            assert [job["n"] for _, job in _jobs_in(body)] == [n], body
    assert len(broadcasts.taken) == 3


async def test_a_stream_whose_socket_is_full_gets_every_byte_in_order_once_it_reads(
    sse_server: SSEServer, broadcasts: Broadcasts
) -> None:
    broadcasts.send_buffer = 4096
    # 4 KB socket buffers on both sides and 40 KB frames: the first frame is only partly taken by the socket and the
    # rest waits in tornado's buffer; the stream's own loop takes over (with its send timeout) and sends what
    # changed since. Nothing may be lost, repeated, reordered or cut mid-chunk.
    async with _open(sse_server, "HTTP/1.1", receive_buffer=4096) as (reader, _):
        await _read_chunk(reader)  # retry + comment
        await _read_chunk(reader)  # the initial snapshot (a ping: no jobs yet)
        await _parked(sse_server)
        async with httpx.AsyncClient(headers=sse_server.publish_auth) as client:
            for n in range(1, 6):
                body = {"jobs": [{"id": f"full{j}", "n": n, "message": "x" * 4000} for j in range(10)]}
                assert (await client.post(sse_server.api + "updates", json=body)).status_code == 200
                await asyncio.sleep(0.05)
        assert broadcasts.taken, "the broadcast path never ran"
        assert broadcasts.queued, "the socket never filled: the test did not test a full socket"
        ids: list[int] = []
        last_n: dict[str, int] = {}
        while len(last_n) < 10 or min(last_n.values()) < 5:
            body = await asyncio.wait_for(_read_chunk(reader), 10)
            for event_id, job in _jobs_in(body):
                ids.append(event_id)
                last_n[job["id"]] = job["n"]
    assert ids == sorted(set(ids)), "events repeated or out of order"
    assert last_n == {f"full{j}": 5 for j in range(10)}


def test_tls_streams_get_every_event(server_process: ServerProcess, tmp_path: Path) -> None:
    # Over TLS the socket is not written directly (TLS frames its own records): tornado's write path is used.
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server_process.url = server_process.url.replace("http://", "https://")
    server_process.verify = context = ssl.create_default_context(cafile=str(cert))
    # a heartbeat comes only from a stream that waits for changes: what the test waits on
    server_process.start(
        f"--ServerApp.certfile={cert}", f"--ServerApp.keyfile={key}", "--SSEExtension.heartbeat_interval=0.2"
    )
    api = server_process.url + "jupyter-sse/api/"
    seen: list[int] = []
    with (
        httpx.Client(headers=server_process.auth, verify=context, timeout=10) as client,
        client.stream("GET", api + "events") as stream,
    ):
        lines = stream.iter_lines()
        for n in range(1, 4):
            next(line for line in lines if line == ": ping")  # the stream waits: the change takes the broadcast path
            response = client.post(api + "updates", json={"jobs": [{"id": "tls", "n": n}]})
            assert response.status_code == 200
            for line in lines:
                if line.startswith("data: ") and '"id":"tls"' in line:
                    seen.append(json.loads(line[len("data: ") :])["n"])
                    break
    assert seen == [1, 2, 3]
