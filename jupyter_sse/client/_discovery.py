"""Finding a Jupyter server to talk to, the way Jupyter's own tools do, without importing jupyter_server."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._common import ClientError

__all__ = ["ServerInfo", "find_server"]


@dataclass(frozen=True)
class ServerInfo:
    """A server's base URL (ending in `/`) and its token (None when none was found)."""

    url: str
    token: str | None


def find_server(url: str | None = None, token: str | None = None) -> ServerInfo:
    """The server to use: `url`/`token` if given; else `JUPYTER_SSE_URL` (with `JUPYTER_TOKEN`); else the
    newest running server of this user's Jupyter runtime directory.

    A URL without a token takes the token of the running server at that URL, if there is one. Raises
    `ClientError` (status 0, `no_server`) when there is nothing to connect to.
    """
    if url is None and os.environ.get("JUPYTER_SSE_URL"):
        url = os.environ["JUPYTER_SSE_URL"]
        # Not JUPYTER_SSE_TOKEN: that is the kernels' publish token, which can publish and do nothing else.
        token = token or os.environ.get("JUPYTER_TOKEN") or None
    servers = _running_servers()
    if url is None:
        if not servers:
            raise ClientError(0, "no_server", "no running Jupyter server found; give --url (or set JUPYTER_SSE_URL)")
        url, found = servers[0]
        return ServerInfo(url, token or found)
    url = _normalize(url)
    if token is None:
        key = _match_key(url)
        token = next((t for u, t in servers if _match_key(u) == key), None)
        token = token or os.environ.get("JUPYTER_TOKEN") or None
    return ServerInfo(url, token)


def _normalize(url: str) -> str:
    return url.rstrip("/") + "/"


def _match_key(url: str) -> tuple[str, str, int | None, str]:
    """What makes two URLs the same local server: `localhost`, `127.0.0.1` and this host's name are one."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host in {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", socket.gethostname().lower()}:
        host = "localhost"
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme, host, port, parts.path.rstrip("/") + "/"


def _running_servers() -> list[tuple[str, str | None]]:
    """(url, token) of each live server in the runtime dir, newest first."""
    # jupyter_core is light (jupyter_server is not); import it only when needed.
    from jupyter_core.paths import jupyter_runtime_dir

    found: list[tuple[float, str, str | None]] = []
    for path in Path(jupyter_runtime_dir()).glob("jpserver-*.json"):
        try:
            info: Any = json.loads(path.read_text(encoding="utf-8"))
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            continue  # being written, or removed, as we read it
        if not isinstance(info, dict) or not isinstance(info.get("url"), str):
            continue
        pid = info.get("pid")
        if not isinstance(pid, int) or not _pid_alive(pid):
            continue  # a server that died without cleaning up
        if info.get("sock"):
            continue  # a Unix-socket server: its `url` is not one httpx can open
        token = info.get("token")
        found.append((mtime, _normalize(info["url"]), token if isinstance(token, str) and token else None))
    found.sort(key=lambda item: item[0], reverse=True)
    return [(url, token) for _, url, token in found]


if sys.platform == "win32":  # pragma: no cover

    def _pid_alive(pid: int) -> bool:
        import ctypes

        # os.kill(pid, 0) would terminate the process on Windows. 0x1000: PROCESS_QUERY_LIMITED_INFORMATION.
        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)
        if not handle:
            return False
        ctypes.windll.kernel32.CloseHandle(handle)
        return True

else:

    def _pid_alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except OSError as exc:
            # EPERM: it exists, it is just not ours to signal.
            return exc.errno == errno.EPERM
        return True
