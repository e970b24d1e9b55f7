"""Soak: subscribers connecting and disconnecting at random while jobs publish, against a real server process.

CI runs it for 10 s; `JUPYTER_SSE_SOAK_SECONDS=60 pytest -m soak` runs the full minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time

import httpx
import pytest

from tests import _wait
from tests._servers import ServerProcess

pytestmark = [pytest.mark.soak, pytest.mark.timeout(300)]

SECONDS = float(os.environ.get("JUPYTER_SSE_SOAK_SECONDS", "10"))
SUBSCRIBERS = 500
STAYERS = 100  # connected from start to end; the others come and go
JOBS = 50
PUBLISHERS = 5
RATE_HZ = 5


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Subscriber:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.finished: set[str] = set()  # jobs whose terminal state this subscriber saw
        self.errors: list[str] = []
        self.events = 0
        self.connected = False  # its stream answered 200 at least once

    async def run(self, until: float, *, stay: bool) -> None:
        while time.monotonic() < until:
            lifetime = until - time.monotonic() if stay else random.uniform(0.2, 3.0)
            await self._connect_once(min(lifetime, until - time.monotonic()) + (5.0 if stay else 0.0))
            if stay:
                return
            await asyncio.sleep(random.uniform(0, 0.5))

    async def _connect_once(self, lifetime: float) -> None:
        port = self.server.port
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            self.errors.append(f"connect: {exc}")
            return
        writer.write(
            f"GET /jupyter-sse/api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: token {self.server.auth['Authorization'].split()[1]}\r\n\r\n".encode()
        )
        buffer = b""
        deadline = time.monotonic() + lifetime
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                self.errors.append(head.split(b"\r\n", 1)[0].decode())
                return
            self.connected = True
            while (left := deadline - time.monotonic()) > 0:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), left)
                except TimeoutError:
                    break
                if not chunk:
                    if left > 1:  # the server closed on us before we meant to leave
                        self.errors.append("stream closed by the server")
                    break
                buffer += chunk
                *events, buffer = buffer.split(b"\n\n")
                self.events += len(events)
                for event in events:
                    if b'"state":"succeeded"' in event:
                        start = event.index(b'"id":"') + 6
                        self.finished.add(event[start : event.index(b'"', start)].decode())
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            writer.close()


async def _publish(server: ServerProcess, jobs: list[str], until: float, errors: list[str]) -> None:
    async with httpx.AsyncClient(headers=server.auth, timeout=10) as client:
        n = 0
        while time.monotonic() < until:
            n += 1
            body = {"jobs": [{"id": j, "n": n, "total": 100_000, "message": f"step {n}"} for j in jobs]}
            response = await client.post(server.url + "jupyter-sse/api/updates", json=body)
            if response.status_code != 200:
                errors.append(f"publish: {response.status_code}")
            await asyncio.sleep(1 / RATE_HZ)
        final = {"jobs": [{"id": j, "n": n, "state": "succeeded"} for j in jobs]}
        response = await client.post(server.url + "jupyter-sse/api/updates", json=final)
        if response.status_code != 200:
            errors.append(f"final publish: {response.status_code}")


def test_soak_subscribers_churn_while_jobs_publish(server_process: ServerProcess) -> None:
    server_process.start("--SSEExtension.heartbeat_interval=2")
    assert server_process.proc is not None
    pid = server_process.proc.pid
    job_ids = [f"soak{i:02d}" for i in range(JOBS)]
    rss: list[tuple[float, int]] = []

    async def main() -> tuple[list[Subscriber], list[Subscriber], list[str]]:
        start = time.monotonic()
        until = start + SECONDS
        publish_errors: list[str] = []
        stayers = [Subscriber(server_process) for _ in range(STAYERS)]
        churners = [Subscriber(server_process) for _ in range(SUBSCRIBERS - STAYERS)]
        tasks = [asyncio.ensure_future(s.run(until, stay=True)) for s in stayers]
        await _wait.until(lambda: all(s.connected for s in stayers), what="the stayers to connect")  # before any update
        tasks += [asyncio.ensure_future(s.run(until, stay=False)) for s in churners]
        share = JOBS // PUBLISHERS
        tasks += [
            asyncio.ensure_future(_publish(server_process, job_ids[i * share : (i + 1) * share], until, publish_errors))
            for i in range(PUBLISHERS)
        ]
        while time.monotonic() < until:
            rss.append((time.monotonic() - start, _rss(pid)))
            await asyncio.sleep(0.5)
        await asyncio.gather(*tasks)
        return stayers, churners, publish_errors

    stayers, churners, publish_errors = asyncio.run(main())
    errors = publish_errors + [e for s in stayers + churners for e in s.errors]
    assert errors == [], errors[:10]
    # Every job's final state reached every subscriber that stayed.
    missing = {i: sorted(set(job_ids) - s.finished) for i, s in enumerate(stayers) if s.finished != set(job_ids)}
    assert not missing, json.dumps(missing)[:500]
    assert sum(s.events for s in churners) > 0
    # RSS flat after warm-up: the last samples within 15 % (and 20 MB) of the samples at 40 % of the run.
    warm = [value for t, value in rss if t >= SECONDS * 0.4]
    assert max(warm) - warm[0] < max(0.15 * warm[0], 20 * 1024 * 1024), [v // 1024 // 1024 for _, v in rss]
