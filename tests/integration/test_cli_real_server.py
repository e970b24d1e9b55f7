"""`jupyter sse` against a real `jupyter server` process: follow through a restart, and a stalled job in list."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import jupyter_sse
from jupyter_sse import cli
from tests._servers import TOKEN, ServerProcess

pytestmark = pytest.mark.timeout(120)


def _publish(server: ServerProcess, *jobs: dict[str, Any]) -> None:
    """POST updates as a kernel's publisher does, with the server's publish token."""
    with sqlite3.connect(server.db) as db:
        token = db.execute("SELECT value FROM meta WHERE key = 'publish_token'").fetchone()[0]
    response = httpx.post(
        server.url + "jupyter-sse/api/updates",
        json={"jobs": list(jobs)},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_follow_rides_through_a_restart_of_a_server_it_reached(server_process: ServerProcess, tmp_path: Path) -> None:
    server = server_process
    server.start()
    _publish(server, {"id": "restarted", "name": "through a restart", "state": "running", "n": 1, "total": 3})
    out_path = tmp_path / "follow.out"
    root = Path(jupyter_sse.__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    give_up = 1.0  # far shorter than the restart: only a server never reached may be given up on
    with open(out_path, "wb") as out:
        follow = subprocess.Popen(
            [sys.executable, "-m", "jupyter_sse.cli", "--url", server.url, "--token", TOKEN,
             "follow", "restarted", "--json", "--give-up-after", str(give_up)],
            stdout=out, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
    try:
        _wait_for(lambda: b'"restarted"' in out_path.read_bytes(), 30, "follow never printed the first event")
        server.stop()
        stopped = time.monotonic()
        _wait_for(lambda: time.monotonic() - stopped > 2 * give_up, 10, "")  # the client meets a closed port
        assert follow.poll() is None, follow.stderr.read() if follow.stderr else b""
        server.start()
        _publish(server, {"id": "restarted", "state": "succeeded", "n": 3})
        _, err = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 0, err
    events = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert events[0]["data"]["state"] == "running"
    assert events[-1]["data"]["state"] == "succeeded"
    assert b"job restarted (through a restart) succeeded: 3/3 it" in err


def test_list_shows_a_stalled_job_instead_of_its_old_rate(
    server_process: ServerProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = server_process
    server.start()
    _publish(server, {"id": "quiet", "name": "stalls", "state": "running", "n": 5, "total": 100, "rate": 50.0})

    def rate() -> str:
        assert cli.main(["--url", server.url, "--token", TOKEN, "list"]) == 0
        rows = capsys.readouterr().out.splitlines()[1:]
        return " ".join(next(r for r in rows if r.startswith("quiet ")).split()[5:])

    first = rate()
    assert first == "50 it/s" or float(first.split()[0]) < 50  # read at once, or already quiet on a busy machine
    # Nothing more is published: once the server has not heard of the job for a few seconds, the rate shown is
    # what one more unit would give since its last report, then `stalled`.
    updated = server.get("jobs/quiet").json()["updated"]
    _wait_for(lambda: time.time() - updated > 3.5, 10, "")
    decayed = rate()
    assert decayed.endswith(" it/s") and float(decayed.split()[0]) < 1.0, decayed
    monkeypatch.setattr(cli, "_STALLED", 4.0)
    _wait_for(lambda: time.time() - updated > 4.5, 10, "")
    assert rate().startswith("stalled 00:0")
