"""find_server: explicit arguments, then the environment, then the Jupyter runtime dir's live servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jupyter_sse.client import ClientError, ServerInfo, find_server


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    for name in ("JUPYTER_SSE_URL", "JUPYTER_TOKEN", "JUPYTER_SSE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def dead_pid():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(proc.stdout)


def write_server(directory, name, *, url, token, pid, age, **extra):
    path = directory / f"jpserver-{name}.json"
    info = {"url": url, "token": token, "pid": pid, "base_url": "/", "sock": "", **extra}
    path.write_text(json.dumps(info))
    mtime = 1_700_000_000 - age
    os.utime(path, (mtime, mtime))
    return path


def test_newest_live_server_wins(runtime_dir, dead_pid):
    write_server(runtime_dir, "old", url="http://localhost:8888/", token="t-old", pid=os.getpid(), age=300)
    write_server(runtime_dir, "new", url="http://localhost:8889/lab/", token="t-new", pid=os.getpid(), age=100)
    write_server(runtime_dir, "dead", url="http://localhost:8890/", token="t-dead", pid=dead_pid, age=0)
    assert find_server() == ServerInfo("http://localhost:8889/lab/", "t-new")


def test_unusable_files_are_skipped(runtime_dir):
    write_server(runtime_dir, "live", url="http://localhost:8888/", token="t", pid=os.getpid(), age=100)
    write_server(runtime_dir, "sock", url="http+unix://%2Ftmp%2Fj.sock/", token="s", pid=os.getpid(), age=0,
                 sock="/tmp/j.sock")  # fmt: skip
    (runtime_dir / "jpserver-partial.json").write_text('{"url": "http://loc')
    (runtime_dir / "jpserver-1-open.html").write_text("<html>")
    assert find_server() == ServerInfo("http://localhost:8888/", "t")


def test_explicit_arguments_come_first(runtime_dir, monkeypatch):
    monkeypatch.setenv("JUPYTER_SSE_URL", "http://env:1/")
    write_server(runtime_dir, "live", url="http://localhost:8888/", token="t", pid=os.getpid(), age=0)
    assert find_server("http://h:2/base", "tok") == ServerInfo("http://h:2/base/", "tok")


def test_url_without_token_takes_the_matching_servers_token(runtime_dir):
    write_server(runtime_dir, "a", url="http://localhost:8888/", token="ta", pid=os.getpid(), age=0)
    write_server(runtime_dir, "b", url="http://localhost:8890/user/x/", token="tb", pid=os.getpid(), age=10)
    # 127.0.0.1 and localhost are the same server.
    assert find_server("http://127.0.0.1:8890/user/x") == ServerInfo("http://127.0.0.1:8890/user/x/", "tb")
    assert find_server("http://127.0.0.1:9999/") == ServerInfo("http://127.0.0.1:9999/", None)


def test_environment_url_and_token(runtime_dir, monkeypatch):
    write_server(runtime_dir, "a", url="http://localhost:8888/", token="runtime", pid=os.getpid(), age=0)
    monkeypatch.setenv("JUPYTER_SSE_URL", "http://127.0.0.1:8888/")
    monkeypatch.setenv("JUPYTER_SSE_TOKEN", "publish-only")  # never used to read
    assert find_server() == ServerInfo("http://127.0.0.1:8888/", "runtime")
    monkeypatch.setenv("JUPYTER_TOKEN", "env-token")
    assert find_server() == ServerInfo("http://127.0.0.1:8888/", "env-token")
    assert find_server(token="explicit") == ServerInfo("http://127.0.0.1:8888/", "explicit")


def test_nothing_found(runtime_dir, dead_pid):
    write_server(runtime_dir, "dead", url="http://localhost:8890/", token="t", pid=dead_pid, age=0)
    with pytest.raises(ClientError) as info:
        find_server()
    assert (info.value.status, info.value.error) == (0, "no_server")


def test_missing_runtime_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "nope"))
    monkeypatch.delenv("JUPYTER_SSE_URL", raising=False)
    with pytest.raises(ClientError):
        find_server()
