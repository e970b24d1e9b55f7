"""A real `jupyter server` process stopped and started again on the same SQLite file: finished jobs and their
logs are still there, and a script that was publishing through the restart ends in its true final state."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)

TOKEN = "restart-test-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    def __init__(self, tmp: Path, port: int) -> None:
        self.tmp = tmp
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.db = tmp / "jobs.sqlite3"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "JUPYTER_RUNTIME_DIR": str(self.tmp / "runtime"),
            "JUPYTER_DATA_DIR": str(self.tmp / "data"),
        }
        env.pop("JUPYTER_SSE_URL", None)
        args = [
            sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", f"--SSEExtension.db_path={self.db}",
            f"--ServerApp.root_dir={self.tmp}",
        ]  # fmt: skip
        if os.geteuid() == 0:
            args.append("--allow-root")
        log = open(self.tmp / "server.log", "ab")  # noqa: SIM115 - the child writes to it until it stops
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "api/status", headers=self.auth, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("jupyter server did not start:\n" + (self.tmp / "server.log").read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {TOKEN}"}

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + "jupyter-sse/api/" + path, headers=self.auth, timeout=5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path, _free_port())
    try:
        yield proc
    finally:
        proc.stop()


SCRIPT = """
import time
from jupyter_sse import job
with job("through-restart", total=80) as j:
    for i in range(80):
        time.sleep(0.15)
        j.log(f"step {i}")
        j.update()
"""


def test_jobs_survive_a_restart_and_a_publisher_rides_through_it(server: ServerProcess) -> None:
    server.start()
    with sqlite3.connect(server.db) as db:
        publish_token = db.execute("SELECT value FROM meta WHERE key = 'publish_token'").fetchone()[0]
    env = {**os.environ, "JUPYTER_SSE_URL": server.url, "JUPYTER_SSE_TOKEN": publish_token}
    before = subprocess.run(
        [sys.executable, "-c", "from jupyter_sse import job\nwith job('before') as j:\n    j.log('kept')\n"],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert before.returncode == 0, before.stderr
    script = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not [j for j in server.get("jobs").json()["jobs"] if j["name"] == "through-restart" and j["n"] >= 5]:
            assert time.monotonic() < deadline, "the script's job never showed progress"
            time.sleep(0.1)
        server.stop()
        time.sleep(1.0)  # the publisher meets a closed port and backs off
        server.start()
        _, stderr = script.communicate(timeout=60)
        assert script.returncode == 0, stderr
    finally:
        if script.poll() is None:
            script.kill()
    jobs = {j["name"]: j for j in server.get("jobs").json()["jobs"]}
    assert jobs["before"]["state"] == "succeeded"
    # The publisher kept its pending state through the restart, and the final flush reached the new server.
    final = jobs["through-restart"]
    deadline = time.monotonic() + 10
    while final["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        final = server.get(f"jobs/{final['id']}").json()
    assert (final["state"], final["n"], final["total"]) == ("succeeded", 80, 80)
    # Log lines from before the restart were kept; the events stream resends them.
    with httpx.stream(
        "GET", server.url + f"jupyter-sse/api/jobs/{jobs['before']['id']}/events", headers=server.auth, timeout=10
    ) as response:
        body = b"".join(response.iter_bytes())
    assert b'"lines":["kept"]' in body
