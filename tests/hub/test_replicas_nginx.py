"""Three hub processes on one Redis behind nginx, as a team would run them: a replica killed mid-stream and Redis
stopped and started again lose nothing that was acknowledged. Real redis-server, hubs, nginx; SIGKILL."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests._replicas import AUTH, HubProcess, Nginx, RedisServer, StreamReader, wait_for

pytestmark = pytest.mark.timeout(180)


class Cluster:
    def __init__(self, root: Path) -> None:
        self.redis = RedisServer(root / "redis")
        self.redis.start()
        self.hubs = [HubProcess(root / "hubs", self.redis.url, f"hub{i}") for i in range(3)]
        for hub in self.hubs:
            hub.start()
        self.nginx = Nginx(root / "nginx", [hub.port for hub in self.hubs])
        self.nginx.start()

    def stop(self) -> None:
        self.nginx.stop()
        for hub in self.hubs:
            hub.stop()
        self.redis.stop()

    def subscribers(self, hub: HubProcess) -> int:
        text = httpx.get(hub.url + "metrics", headers=AUTH, timeout=5).text
        found = re.search(r"^jupyter_sse_subscribers (\S+)$", text, re.MULTILINE)
        return int(float(found.group(1))) if found else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield running
    finally:
        running.stop()


class Publisher:
    """Posts one log line per update through nginx, and sends each again until a 2xx acknowledges it, as the
    kernel's publisher does: ``acked`` holds the lines the hubs acknowledged, ``refused`` counts the 5xx."""

    def __init__(self, url: str, job: str) -> None:
        self.url = url + "jupyter-sse/api/updates"
        self.job = job
        self.acked: list[str] = []
        self.refused = 0
        self.failed_at: list[float] = []
        self._client = httpx.Client(headers=AUTH, timeout=5)

    def send(self, n: int, state: str | None = None) -> None:
        update: dict[str, object] = {"id": self.job, "n": n}
        if state is not None:
            update["state"] = state
        line = f"line {n}"
        while True:
            try:
                response = self._client.post(
                    self.url, json={"jobs": [update], "logs": [{"job": self.job, "lines": [line]}]}
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                self.acked.append(line)
                return
            assert response is None or response.status_code >= 500, response.text
            self.refused += 1
            self.failed_at.append(time.monotonic())
            time.sleep(0.05)

    def close(self) -> None:
        self._client.close()


def _lines(reader: StreamReader, job: str) -> list[str]:
    return [
        line for _, name, data, _ in reader.events if name == "log" and data["job"] == job for line in data["lines"]
    ]


def test_a_replica_killed_mid_stream_loses_nothing(cluster: Cluster) -> None:
    reader = StreamReader(cluster.nginx.url, reconnect=True)
    publisher = Publisher(cluster.nginx.url, "killed")
    try:
        assert reader.connected.wait(10)
        for n in range(20):
            publisher.send(n)
        wait_for(lambda: "line 19" in _lines(reader, "killed"), what="the first lines")
        serving = wait_for(
            lambda: next((hub for hub in cluster.hubs if cluster.subscribers(hub) > 0), None), what="the stream's hub"
        )
        killed_at = time.monotonic()
        assert serving.proc is not None
        serving.proc.send_signal(signal.SIGKILL)
        serving.proc.wait(10)
        for n in range(20, 60):
            publisher.send(n)
        publisher.send(60, state="succeeded")
        wait_for(lambda: any(job["state"] == "succeeded" for job in reader.jobs("killed")), 20, what="the end")
        back = next(t for _, name, data, t in reader.events if name == "log" and "line 20" in data["lines"])
        lines = _lines(reader, "killed")
        assert lines == publisher.acked  # every acknowledged line, once, in order: nothing lost, nothing twice
        assert reader.connections >= 2
        print(
            f"replica killed: {reader.connections} connections, {publisher.refused} publisher retries, "
            f"first line after the kill reached the reader {time.time() - back:.2f} s ago; "
            f"kill to end {time.monotonic() - killed_at:.2f} s"
        )
    finally:
        reader.close()
        publisher.close()
        for hub in cluster.hubs:
            if hub.proc is None or hub.proc.poll() is not None:
                hub.start()


def test_redis_stopped_and_started_again_loses_nothing_acknowledged(cluster: Cluster) -> None:
    readers = [StreamReader(hub.url, reconnect=True) for hub in cluster.hubs]  # one on every replica
    publisher = Publisher(cluster.nginx.url, "outage")
    try:
        for reader in readers:
            assert reader.connected.wait(10)
        for n in range(10):
            publisher.send(n)
        sender = threading.Thread(target=lambda: [publisher.send(n) for n in range(10, 40)])
        cluster.redis.stop()
        stopped = time.monotonic()
        sender.start()
        wait_for(lambda: publisher.refused >= 20, what="503s while Redis is away")
        cluster.redis.start()
        restarted = time.monotonic()
        sender.join(60)
        assert not sender.is_alive()
        publisher.send(40, state="succeeded")
        for reader in readers:
            wait_for(lambda r=reader: any(j["state"] == "succeeded" for j in r.jobs("outage")), 20, what="the end")
            assert _lines(reader, "outage") == publisher.acked
        job = httpx.get(cluster.nginx.url + "jupyter-sse/api/jobs/outage", headers=AUTH, timeout=5).json()
        assert job["n"] == 40 and job["state"] == "succeeded"
        print(
            f"Redis away {restarted - stopped:.2f} s: {publisher.refused} publishes refused (503) and sent again; "
            f"{len(publisher.acked)} acknowledged lines, all on each of the 3 replicas' streams"
        )
    finally:
        for reader in readers:
            reader.close()
        publisher.close()
        if cluster.redis.proc is None:
            cluster.redis.start()
