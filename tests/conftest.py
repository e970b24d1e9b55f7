"""Shared fixtures: a real Jupyter server with the extension, on a real socket, with auth required."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests._servers import ServerProcess, free_port

pytest_plugins = ("pytest_jupyter.jupyter_server", "tests._scripted_server", "tests._notify_targets")

_ENV = ("JUPYTER_SSE_URL", "JUPYTER_SSE_TOKEN", "JUPYTER_SSE_CAPTURE")


@pytest.fixture(autouse=True)
def _restore_sse_environment() -> Iterator[None]:
    """The extension exports its URL and publish token into os.environ (for kernels): undo that per test."""
    saved = {name: os.environ.get(name) for name in _ENV}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_sse": True, "jupyter_server_terminals": False},
            "allow_unauthenticated_access": False,
        },
        "SSEExtension": {
            "heartbeat_interval": 1.0,
            "log_lines_kept": 50,
            "cancel_grace": 1.0,
            "kernel_check_interval": 0.2,
        },
    }


@pytest.fixture
def jp_serverapp(jp_serverapp: Any, jp_asyncio_loop: asyncio.AbstractEventLoop) -> Any:
    """pytest-jupyter's server, with its extensions started as ``jupyter server`` starts them once its loop runs
    (``ServerApp._post_start``): the harness initializes the server but never calls that."""
    jp_asyncio_loop.run_until_complete(jp_serverapp.extension_manager.start_all_extensions())
    return jp_serverapp


@dataclass
class SSEServer:
    """A running Jupyter server with jupyter-sse, as a client sees it."""

    url: str  # the server's base URL, ending with "/"
    token: str  # the server's own token
    publish_token: str  # the kernels' publish token
    app: Any  # the ServerApp, for assertions on its state

    @property
    def api(self) -> str:
        return f"{self.url}jupyter-sse/api/"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    @property
    def publish_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.publish_token}"}

    @property
    def broker(self) -> Any:
        return self.app.web_app.settings["jupyter_sse_broker"]


async def open_raw_stream(
    server: SSEServer, version: str = "HTTP/1.1", receive_buffer: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """``GET events`` on a bare socket (``receive_buffer``: a small one backs up as soon as the test stops
    reading); returns the reader, the writer and the response head, checked to be a 200."""
    port = int(server.url.split(":")[2].split("/")[0])
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    path = server.api.split(f":{port}", 1)[1] + "events"
    writer.write(
        f"GET {path} {version}\r\nHost: 127.0.0.1:{port}\r\nAuthorization: token {server.token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    try:
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    except BaseException:
        writer.close()
        raise
    assert head.startswith(b"HTTP/1.1 200"), head  # tornado answers in 1.1 whatever the request's version
    return reader, writer, head


@pytest.fixture
def sse_server(jp_serverapp: Any, http_server: Any, jp_http_port: int, jp_base_url: str) -> SSEServer:
    settings = jp_serverapp.web_app.settings
    return SSEServer(
        url=f"http://127.0.0.1:{jp_http_port}{jp_base_url}",
        token=jp_serverapp.identity_provider.token,
        publish_token=settings["jupyter_sse_publish_token"],
        app=jp_serverapp,
    )


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    """A `jupyter server` subprocess with jupyter-sse (started by the test with ``.start()``), stopped after."""
    proc = ServerProcess(tmp_path, free_port())
    try:
        yield proc
    finally:
        proc.stop()
