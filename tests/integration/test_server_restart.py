"""A real `jupyter server` process stopped and started again on the same SQLite file: finished jobs and their
logs are still there, and a script that was publishing through the restart ends in its true final state."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from tests._servers import ServerProcess

pytestmark = pytest.mark.timeout(120)

# Runs until the test says the server is back (a marker file), then ten more steps: how long a server takes to
# start on a loaded 2-core machine varies, and the publisher must ride through however long it is.
SCRIPT = """
import os, sys, time
from jupyter_sse import job
with job("through-restart") as j:
    n = 0
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.1)
        j.log(f"step {n}")
        j.update()
        n += 1
    for _ in range(10):
        time.sleep(0.1)
        j.update()
        n += 1
print(n)
"""


def test_jobs_survive_a_restart_and_a_publisher_rides_through_it(server_process: ServerProcess) -> None:
    server = server_process
    server.start()
    with sqlite3.connect(server.db) as db:
        publish_token = db.execute("SELECT value FROM meta WHERE key = 'publish_token'").fetchone()[0]
    env = {**os.environ, "JUPYTER_SSE_URL": server.url, "JUPYTER_SSE_TOKEN": publish_token}
    before = subprocess.run(
        [sys.executable, "-c", "from jupyter_sse import job\nwith job('before') as j:\n    j.log('kept')\n"],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert before.returncode == 0, before.stderr
    marker = server.tmp / "server-is-back"
    script = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(marker)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while not [j for j in server.get("jobs").json()["jobs"] if j["name"] == "through-restart" and j["n"] >= 5]:
            assert time.monotonic() < deadline, "the script's job never showed progress"
            time.sleep(0.1)
        server.stop()
        time.sleep(1.0)  # the publisher meets a closed port and backs off
        server.start()
        marker.touch()
        stdout, stderr = script.communicate(timeout=60)
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
    assert (final["state"], final["n"]) == ("succeeded", int(stdout))
    # Log lines from before the restart were kept; the events stream resends them.
    with httpx.stream(
        "GET", server.url + f"jupyter-sse/api/jobs/{jobs['before']['id']}/events", headers=server.auth, timeout=10
    ) as response:
        body = b"".join(response.iter_bytes())
    assert b'"lines":["kept"]' in body
