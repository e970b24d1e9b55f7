"""Real `jupyter server` processes under real faults: two servers of one user, SIGKILL right after an answer, a
file system that fills up, a corrupt file, a read-only file system, SIGTERM.

The file systems are tmpfs mounts made by the test (it runs as root, as CI does here); they are unmounted after.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jupyter_client import BlockingKernelClient

from tests._servers import ServerProcess, free_port

pytestmark = pytest.mark.timeout(180)


def _publish_token(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return str(conn.execute("SELECT value FROM meta WHERE key = 'publish_token'").fetchone()[0])


def _post(server: ServerProcess, token: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        server.url + "jupyter-sse/api/updates", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def _api(server: ServerProcess, method: str, path: str) -> httpx.Response:
    return httpx.request(method, server.url + "jupyter-sse/api/" + path, headers=server.auth, timeout=10)


def _wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _sigterm_seconds(server: ServerProcess) -> float:
    proc = server.proc
    assert proc is not None
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    server.proc = None
    return time.monotonic() - started


def _run_in_kernel(server: ServerProcess, code: str) -> list[str]:
    """Start a kernel through the server's API and run ``code`` in it; its stream output and errors."""
    kernel_id = httpx.post(server.url + "api/kernels", json={"name": "python3"}, headers=server.auth, timeout=60)
    kernel_id.raise_for_status()
    kid = kernel_id.json()["id"]
    client = BlockingKernelClient(connection_file=str(server.tmp / "runtime" / f"kernel-{kid}.json"))
    client.load_connection_file()
    client.start_channels()
    outputs: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            outputs.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            outputs.append(f"ERROR {msg['content']['ename']}: {msg['content']['evalue']}")

    try:
        client.wait_for_ready(timeout=60)
        client.execute_interactive(code, timeout=60, output_hook=hook)
    finally:
        client.stop_channels()
        httpx.delete(server.url + f"api/kernels/{kid}", headers=server.auth, timeout=30)
    return outputs


KERNEL_CODE = """
import os
from jupyter_sse import job
with job("from-a-kernel") as j:
    j.update(3)
    j.log("a line")
print("URL", os.environ.get("JUPYTER_SSE_URL"))
"""


def _kernels_still_work(server: ServerProcess) -> None:
    outputs = _run_in_kernel(server, KERNEL_CODE)
    assert f"URL {server.url}" in "".join(outputs)
    assert not [o for o in outputs if "ERROR" in o or "HTTP" in o], outputs

    def finished() -> bool:
        jobs = _api(server, "GET", "jobs").json()["jobs"]
        return any(j["name"] == "from-a-kernel" and j["state"] == "succeeded" and j["n"] == 3 for j in jobs)

    _wait(finished, 20, "the kernel's job did not reach the server")


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(filler: Path) -> None:
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()


# ---- two servers of one user ----------------------------------------------------------------------------------


def test_two_servers_of_one_user_keep_their_own_jobs_and_tokens(tmp_path: Path) -> None:
    # One data dir, the default file in it: as two `jupyter lab` of the same user would be started.
    a = ServerProcess(tmp_path, free_port())
    b = ServerProcess(tmp_path, free_port())
    store_dir = tmp_path / "data" / "jupyter_sse"
    try:
        a.start("--SSEExtension.db_path=")
        token_a = _publish_token(store_dir / "jobs.sqlite3")
        assert _post(a, token_a, {"jobs": [{"id": "a-job", "n": 1}]}).status_code == 200
        b.start("--SSEExtension.db_path=", "--SSEExtension.publisher_lease=1")
        # A's job ends on A; B, whose lease is 1 s, must not mark it lost over A's end.
        assert _post(a, token_a, {"jobs": [{"id": "a-job", "n": 9, "state": "succeeded"}]}).status_code == 200
        time.sleep(3)  # B's lease expiry runs a few times (every 0.5 s), and its flush every second
        assert _api(a, "GET", "jobs/a-job").json()["state"] == "succeeded"
        # A restarts while B runs: it takes the first free file, its own, and finds its job as it ended.
        a.stop()
        a.start("--SSEExtension.db_path=")
        job = _api(a, "GET", "jobs/a-job").json()
        assert (job["state"], job["n"]) == ("succeeded", 9)
        assert _api(b, "GET", "jobs/a-job").status_code == 404  # B never had it
        # Each has its own publish token: A's does not open B.
        assert _post(b, token_a, {"jobs": [{"id": "intruder"}]}).status_code == 403
        token_b = _publish_token(store_dir / "jobs-1.sqlite3")
        assert token_b != token_a
        assert _post(b, token_b, {"jobs": [{"id": "b-job"}]}).status_code == 200
        assert _api(a, "GET", "jobs/b-job").status_code == 404
        assert _publish_token(store_dir / "jobs.sqlite3") == token_a
        assert _post(a, token_a, {"jobs": [{"id": "again"}]}).status_code == 200
        assert _api(b, "GET", "status").json()["store"]["path"] == str(store_dir / "jobs-1.sqlite3")
    finally:
        a.stop()
        b.stop()


# ---- SIGKILL right after a 2xx ----------------------------------------------------------------------------------


def test_every_2xx_survives_a_sigkill_right_after_it_and_orphans_are_lost_at_once(
    server_process: ServerProcess,
) -> None:
    server = server_process
    server.start()
    token = _publish_token(server.db)
    setup = {"jobs": [{"id": "gone", "state": "succeeded"}, {"id": "cancel-me", "kernel_id": "dead-kernel"}]}
    assert _post(server, token, setup).status_code == 200
    assert _api(server, "DELETE", "jobs/gone").status_code == 204
    assert _api(server, "POST", "jobs/cancel-me/cancel").status_code == 202
    body = {
        "jobs": [{"id": "new", "name": "made", "n": 1}, {"id": "ended", "state": "failed", "n": 4}],
        "logs": [{"job": "new", "lines": [f"line {i}" for i in range(29)]}],
    }
    assert _post(server, token, body).status_code == 200
    assert server.proc is not None
    server.proc.kill()  # within a millisecond of the last answer: no flush could have run since
    server.proc.wait()
    server.proc = None
    server.start()
    assert _api(server, "GET", "jobs/gone").status_code == 404
    ended = _api(server, "GET", "jobs/ended").json()
    assert (ended["state"], ended["n"]) == ("failed", 4)
    new = _api(server, "GET", "jobs/new").json()
    assert new["name"] == "made"
    with contextlib.closing(sqlite3.connect(server.db)) as conn:
        lines = [row[0] for row in conn.execute("SELECT line FROM logs WHERE job = 'new' ORDER BY seq")]
    assert lines == [f"line {i}" for i in range(29)]
    # Their kernels died with the server: lost at once, not after the 60 s lease ...
    assert _api(server, "GET", "jobs/cancel-me").json()["state"] == "lost"
    assert new["state"] == "lost"
    # ... and back to running when their publisher reports again, which hears the cancel answered 202 before.
    reply = _post(server, token, {"jobs": [{"id": "cancel-me", "n": 2}]})
    assert reply.json() == {"cancel": ["cancel-me"]}
    assert _api(server, "GET", "jobs/cancel-me").json()["state"] == "running"


# ---- a file system that fills up -------------------------------------------------------------------------------


def test_a_full_disk_answers_503_changes_nothing_and_recovers_by_itself(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "fs", "2m") as fs:
        server = ServerProcess(tmp_path, free_port())
        server.db = fs / "jobs.sqlite3"
        try:
            server.start()
            token = _publish_token(server.db)
            setup = {"jobs": [{"id": "run", "n": 1}, {"id": "done", "state": "succeeded"}]}
            assert _post(server, token, setup).status_code == 200
            filler = fs / "filler"
            _fill(filler)
            ending = {"jobs": [{"id": "run", "n": 7, "state": "failed"}], "logs": [{"job": "run", "lines": ["why"]}]}
            refused = _post(server, token, ending)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "storage_unavailable"
            assert _api(server, "DELETE", "jobs/done").status_code == 503
            assert _api(server, "POST", "jobs/run/cancel").status_code == 503
            run = _api(server, "GET", "jobs/run").json()
            assert (run["state"], run["n"], run["cancel_requested"]) == ("running", 1, False)
            assert _api(server, "GET", "jobs/done").status_code == 200
            store = _api(server, "GET", "status").json()["store"]
            assert store["durable"] is False and "full" in store["write_error"]
            # Progress alone is promised nothing before the answer: taken, and written once space is back. The
            # failing flushes behind it are logged once, not every second.
            assert _post(server, token, {"jobs": [{"id": "run", "n": 2}]}).status_code == 200
            log = server.tmp / "server.log"

            def flush_errors() -> int:
                lines = log.read_text().splitlines()
                return len([line for line in lines if line.startswith("[E") and "cannot be written" in line])

            _wait(flush_errors, 10, "no error logged for the failing flush")
            time.sleep(2.5)
            assert flush_errors() == 1
            # Space comes back: the very same requests go through, with nothing restarted.
            filler.unlink()
            assert _post(server, token, ending).status_code == 200
            assert _api(server, "DELETE", "jobs/done").status_code == 204
            assert _api(server, "GET", "status").json()["store"]["durable"] is True
            _wait(lambda: "can be written again" in log.read_text(), 10, "the recovery was not logged")
            assert server.proc is not None
            server.proc.kill()
            server.proc.wait()
            server.proc = None
            server.start()
            run = _api(server, "GET", "jobs/run").json()
            assert (run["state"], run["n"]) == ("failed", 7)
            assert _api(server, "GET", "jobs/done").status_code == 404
            # Full again, with progress that cannot be written: SIGTERM still stops the server within 5 s.
            assert _post(server, token, {"jobs": [{"id": "late", "n": 1}]}).status_code == 200
            _fill(filler)
            assert _post(server, token, {"jobs": [{"id": "late", "n": 2}]}).status_code == 200
            assert _sigterm_seconds(server) < 5
            assert "the last changes could not be written" in log.read_text()
            filler.unlink()
            server.start()
            late = _api(server, "GET", "jobs/late").json()
            assert (late["state"], late["n"]) == ("lost", 1)  # its creation was stored; its progress could not be
        finally:
            server.stop()


# ---- files that cannot be used ---------------------------------------------------------------------------------


def test_a_corrupt_file_is_moved_aside_and_the_server_serves_and_stops_in_time(server_process: ServerProcess) -> None:
    server = server_process
    garbage = b"not a database, whatever happened to it " * 200
    server.db.write_bytes(garbage)
    server.start()
    status = _api(server, "GET", "status").json()["store"]
    moved = [p for p in server.db.parent.iterdir() if p.name.startswith("jobs.sqlite3.corrupt-")]
    assert len(moved) == 1 and moved[0].read_bytes() == garbage
    assert str(moved[0]) in status["problem"]
    assert "was corrupt" in (server.tmp / "server.log").read_text()
    _kernels_still_work(server)
    assert _sigterm_seconds(server) < 5


def test_a_read_only_file_system_keeps_jobs_in_memory_says_so_and_stops_in_time(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "ro", "1m") as fs:
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        server = ServerProcess(tmp_path, free_port())
        server.db = fs / "jobs.sqlite3"
        try:
            server.start()
            status = _api(server, "GET", "status").json()["store"]
            assert (status["kind"], status["durable"]) == ("memory", False)
            assert str(server.db) in status["problem"]
            log = (server.tmp / "server.log").read_text()
            assert f"the job store {server.db} cannot be opened" in log
            _kernels_still_work(server)
            assert _sigterm_seconds(server) < 5
        finally:
            server.stop()


def test_status_needs_the_servers_auth(server_process: ServerProcess) -> None:
    server = server_process
    server.start()
    assert httpx.get(server.url + "jupyter-sse/api/status", timeout=10).status_code == 403
    status = _api(server, "GET", "status").json()
    assert status["store"] == {
        "kind": "sqlite",
        "durable": True,
        "path": str(server.db),
        "problem": None,
        "write_error": None,
    }


def test_sigterm_stops_a_server_with_a_stream_open_within_5_s(server_process: ServerProcess) -> None:
    server = server_process
    server.start()
    token = _publish_token(server.db)
    assert _post(server, token, {"jobs": [{"id": "run"}]}).status_code == 200
    with httpx.stream("GET", server.url + "jupyter-sse/api/events", headers=server.auth, timeout=10) as stream:
        next(stream.iter_bytes())
        assert _sigterm_seconds(server) < 5
    server.start()
    assert _api(server, "GET", "jobs/run").json()["state"] == "lost"  # its publisher is gone with the server
