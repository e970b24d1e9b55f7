"""The child-process helpers that the tests and the benchmarks share: what a service that cannot start says, and a
child that ignores SIGTERM still stopped. Real child processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_sse._procs import HubProcess, RedisServer, history_batches, stop_process

pytestmark = pytest.mark.timeout(60)


def test_a_hub_that_exits_at_start_is_reported_with_the_end_of_its_log(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, "lonely")  # no token, no users file: the hub refuses to start
    with pytest.raises(RuntimeError, match=r"(?s)lonely exited:.*no way to authenticate"):
        hub.start()
    assert hub.proc is not None and hub.proc.returncode == 2
    hub.stop()
    assert hub.proc is None


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
    script += "time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    stop_process(proc, timeout=0.5)
    assert proc.returncode == -signal.SIGKILL
    proc.stdout.close()


def test_redis_comes_back_on_its_port_with_what_it_had_written(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path).start()
    try:
        assert redis.command("SET", "kept", "1").startswith(b"+OK")
        port = redis.port
        redis.stop(signal.SIGKILL)  # appendfsync always: the write is on disk before the reply
        assert not redis.answers()
        redis.start()
        assert redis.port == port and redis.command("GET", "kept") == b"$1\r\n1\r\n"
        redis.flush()
        assert redis.command("GET", "kept") == b"$-1\r\n"
    finally:
        redis.stop()


def test_history_batches_cover_every_job_once_with_the_last_ones_running() -> None:
    batches = list(history_batches(1050, 100, 250))
    assert [len(batch) for batch in batches] == [250, 250, 250, 250, 50]
    jobs = [job for batch in batches for job in batch]
    assert [job["id"] for job in jobs] == [f"j{i}" for i in range(1050)]
    assert [job.get("state") for job in jobs[949:951]] == ["succeeded", None]
    assert all("state" not in job for job in jobs[950:])
