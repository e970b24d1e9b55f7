"""A real `jupyter server` process with jupyter-sse, started and stopped by a test (for restarts, RSS, load)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOKEN = "restart-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    def __init__(self, tmp: Path, port: int) -> None:
        self.tmp = tmp
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.db = tmp / "jobs.sqlite3"
        self.verify: ssl.SSLContext | bool = True  # the test's own CA when it serves over TLS
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra_args: str) -> None:
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
        args.extend(extra_args)
        with open(self.tmp / "server.log", "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                status = httpx.get(self.url + "api/status", headers=self.auth, timeout=1, verify=self.verify)
                if status.status_code == 200:
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
        return httpx.get(self.url + "jupyter-sse/api/" + path, headers=self.auth, timeout=5, verify=self.verify)
