"""The Jupyter server extension: configuration, the broker's lifetime, and what kernels inherit."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import secrets
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Int, Unicode, validate

from ..core import Broker, MemoryStore
from .handlers import handlers

__all__ = ["SSEExtension"]


class SSEExtension(ExtensionApp):
    """jupyter-sse: live progress of notebook jobs, streamed over Server-Sent Events."""

    name = "jupyter_sse"
    load_other_extensions = True

    heartbeat_interval = Float(
        15.0,
        config=True,
        help="Seconds between heartbeat comments on an idle event stream. Keeps proxies with idle timeouts "
        "from closing the stream, and is how the server notices clients that went away.",
    )
    log_lines_kept = Int(
        1000, config=True, help="Log lines kept per job; older lines are dropped and marked as dropped."
    )
    jobs_kept = Int(500, config=True, help="Finished jobs kept; beyond this the oldest finished ones are forgotten.")
    publisher_lease = Float(
        60.0,
        config=True,
        help="Seconds a running job may go without any report from its kernel before it is marked lost. "
        "Kernels report at least every 10 s while a job runs; a lost job becomes running again if its "
        "kernel reports again.",
    )
    send_timeout = Float(
        30.0,
        config=True,
        help="Seconds a subscriber may take to accept an event before the server drops its connection.",
    )
    retry_ms = Int(2000, config=True, help="The reconnection delay (ms) sent to clients in the stream.")
    owner = Unicode(
        config=True,
        help="The user recorded as the owner of jobs (default: the JupyterHub user or the OS user).",
    )

    @validate("log_lines_kept")
    def _check_log_lines(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise ValueError("log_lines_kept must be at least 1")
        return int(proposal["value"])

    @validate("jobs_kept")
    def _check_jobs_kept(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise ValueError("jobs_kept must be at least 0")
        return int(proposal["value"])

    def _default_owner(self) -> str:
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()

    def initialize_settings(self) -> None:
        owner = self.owner or self._default_owner()
        self.broker = Broker(MemoryStore(), log_lines_kept=self.log_lines_kept, jobs_kept=self.jobs_kept, owner=owner)
        self.publish_token = secrets.token_urlsafe(32)
        self.settings.update(
            {
                "jupyter_sse_broker": self.broker,
                "jupyter_sse_publish_token": self.publish_token,
                "jupyter_sse_config": {
                    "heartbeat_interval": self.heartbeat_interval,
                    "send_timeout": self.send_timeout,
                    "retry_ms": self.retry_ms,
                },
            }
        )
        self._lease_task: asyncio.Task[None] | None = None
        self._export_environment()

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers())

    def _export_environment(self) -> None:
        # Kernels are started with a copy of the server's environment: this is how they find us.
        os.environ["JUPYTER_SSE_URL"] = self.kernel_url()
        os.environ["JUPYTER_SSE_TOKEN"] = self.publish_token

    def kernel_url(self) -> str:
        """The base URL a kernel on this machine uses to reach the server (loopback when listening widely)."""
        app = self.serverapp
        assert app is not None
        ip = app.ip
        if not ip or ip in ("0.0.0.0", "*", "localhost"):
            ip = "127.0.0.1"
        elif ip in ("::", "[::]"):
            ip = "::1"
        host = f"[{ip}]" if ":" in ip else ip
        scheme = "https" if app.certfile else "http"
        base_url = app.base_url if app.base_url.endswith("/") else app.base_url + "/"
        return f"{scheme}://{host}:{app.port}{base_url}"

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        self._export_environment()  # the port is final now (port retries)
        self._lease_task = asyncio.ensure_future(self._expire_leases())

    async def _expire_leases(self) -> None:
        period = max(0.5, min(5.0, self.publisher_lease / 4))
        while True:
            await asyncio.sleep(period)
            self.broker.expire_leases(self.publisher_lease)

    async def stop_extension(self) -> None:
        self.broker.close()
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
