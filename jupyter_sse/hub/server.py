"""Serving the hub with uvicorn: from the CLI (``run``), or in a background thread (``BackgroundHub``).

Prompt shutdown with open streams: uvicorn waits for every open response before it runs the app's lifespan
shutdown, so a stream that only ends when the broker closes would hold it up until its graceful-shutdown
timeout (sse-starlette's known hang). sse-starlette's own remedy (``AppStatus`` and its shutdown watcher) hears
of shutdown through uvicorn's signal handlers, which a server in a thread does not install, and through a
process-wide flag that is never reset. So ``HubServer`` closes the broker itself the moment shutdown begins:
every stream sends what it has and ends, and uvicorn's wait is over at once. uvicorn's graceful-shutdown
timeout stays as the backstop for a client that does not read.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI

from ..core import Broker
from ._tenants import Tenants
from ._users import UsersFileError
from .app import create_app

__all__ = ["BackgroundHub", "HubConfigError", "HubServer", "check_auth", "check_bind", "run"]

_GRACEFUL_SHUTDOWN = 2  # seconds (uvicorn takes an int)


class HubConfigError(ValueError):
    """A hub that must not start as asked (no way to authenticate, or none on a non-loopback address)."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, token: str | None, *, authenticated: bool = False) -> None:
    """Refuse to serve without auth anywhere but loopback: anyone who can reach it could read every job.
    ``authenticated``: another way than the token is configured (a users file, JupyterHub)."""
    if not token and not authenticated and not _is_loopback(host):
        raise HubConfigError(
            f"refusing to serve on {host} without a way to authenticate: give --users FILE or --token (or "
            "JUPYTER_SSE_HUB_TOKEN), run it as a JupyterHub service, or listen on 127.0.0.1"
        )


def check_auth(
    host: str, token: str | None, *, users: object = None, jupyterhub: bool = False, no_auth: bool = False
) -> None:
    """What ``jupyter sse hub`` insists on: a way to authenticate, or ``--no-auth`` on loopback."""
    configured = bool(token) or users is not None or jupyterhub
    if not configured and not no_auth:
        raise HubConfigError(
            "no way to authenticate: give --users FILE (see `jupyter sse users add`), --token, run the hub as a "
            "JupyterHub service, or --no-auth (loopback only: every local user then has full access)"
        )
    check_bind(host, token, authenticated=configured)


class HubServer(uvicorn.Server):
    """A uvicorn server that ends the hub's streams as soon as shutdown begins (see the module docstring)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        app = config.app
        self.broker: Broker | None = app.state.broker if isinstance(app, FastAPI) else None
        self._tenants: Tenants | None = app.state.tenants if isinstance(app, FastAPI) else None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._tenants is not None:
            self._tenants.close()  # every user's broker, and the admins' merged streams
        elif self.broker is not None:
            self.broker.close()
        await super().shutdown(sockets)


def _config(app: FastAPI, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN,
        # No proxy headers: the hub does not trust X-Forwarded-* from whoever connects.
        proxy_headers=False,
    )


def run(
    host: str = "127.0.0.1", port: int = 8765, token: str | None = None, *, no_auth: bool = False, **options: Any
) -> None:
    """Serve the hub until interrupted; ``options`` go to ``create_app``. Raises ``HubConfigError`` when there is
    no way to authenticate (unless ``no_auth``, on loopback only) or the users file is not valid."""
    jupyterhub = options.get("jupyterhub") is not None or bool(options.get("identify"))
    check_auth(host, token, users=options.get("users"), jupyterhub=jupyterhub, no_auth=no_auth)
    log_level = options.pop("log_level", "info")
    try:
        app = create_app(token, **options)
    except UsersFileError as exc:
        raise HubConfigError(str(exc)) from None
    shown = f"[{host}]" if ":" in host else host
    auth = (
        " with JUPYTER_SSE_TOKEN set to a JupyterHub token (their server's)"
        if options.get("jupyterhub") is not None
        else " with JUPYTER_SSE_TOKEN set to a user's token"
        if options.get("users") is not None
        else " with JUPYTER_SSE_TOKEN set to the hub's token"
        if token
        else " (no auth: loopback only)"
    )
    print(
        f"jupyter-sse hub: publishers use JUPYTER_SSE_URL=http://{shown}:{port}/" + auth,
        file=sys.stderr,
        flush=True,
    )
    HubServer(_config(app, host, port, log_level)).run()


class BackgroundHub:
    """A hub served by uvicorn in a daemon thread, on a free port: for tests and notebook runs.

    ``with BackgroundHub(token) as hub: ...`` or ``start()``/``stop()``. ``hub.url`` is its base URL (ends with
    "/"); ``hub.broker`` its broker (only touch it from the hub's loop, or for reads in tests).
    """

    def __init__(self, token: str | None = None, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        authenticated = any(options.get(k) for k in ("users", "identify", "jupyterhub"))
        check_bind(host, token, authenticated=authenticated)
        self.token = token
        self.host = host
        self._port = port
        self._options = options
        self.app: FastAPI | None = None
        self._server: HubServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    @property
    def broker(self) -> Broker:
        assert self.app is not None, "the hub is not started"
        broker: Broker = self.app.state.broker
        return broker

    def start(self, timeout: float = 10.0) -> BackgroundHub:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))  # port 0: the OS picks a free one, and nobody can take it meanwhile
        port = sock.getsockname()[1]
        self.app = create_app(self.token, **self._options)
        self._server = server = HubServer(_config(self.app, self.host, port, "warning"))
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="jupyter-sse-hub")
        self._thread.daemon = True
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError("the jupyter-sse hub did not start")
            time.sleep(0.01)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{port}/"
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)
        self._server = self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> BackgroundHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
