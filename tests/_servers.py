"""A real `jupyter server` process with jupyter-sse, started and stopped by a test (for restarts, RSS, load)."""

from __future__ import annotations

from pathlib import Path

import httpx

from jupyter_sse._procs import JupyterServer, free_port

__all__ = ["TOKEN", "ServerProcess", "free_port"]

TOKEN = "restart-test-token"


class ServerProcess(JupyterServer):
    """The server with ``tmp`` as its root, its SQLite store at ``db`` (which a test may move before ``start``)."""

    def __init__(self, tmp: Path, port: int) -> None:
        super().__init__(tmp, token=TOKEN, port=port)
        self.tmp = tmp
        self.db = tmp / "jobs.sqlite3"

    def start(self, *extra_args: str) -> ServerProcess:  # type: ignore[override]
        super().start(f"--SSEExtension.db_path={self.db}", *extra_args)
        return self

    def get(self, path: str) -> httpx.Response:
        verify = self.verify if self.verify is not None else True
        return httpx.get(self.url + "jupyter-sse/api/" + path, headers=self.auth, timeout=5, verify=verify)
