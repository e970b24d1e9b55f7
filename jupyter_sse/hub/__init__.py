"""The standalone hub: protocol v1 on FastAPI, sse-starlette and uvicorn, over the same core as the extension.

Needs the ``asgi`` extra (``pip install "jupyter-sse[asgi]"``); the server extension never imports it.

    jupyter sse hub --port 8765 --token "$TOKEN"        # from a shell, one user
    jupyter sse users add alice --file users.json       # a team: prints alice's token once
    jupyter sse hub --users users.json

    from jupyter_sse.hub import create_app, run, BackgroundHub
    with BackgroundHub(token="t") as hub:                # in-process, on a free loopback port (tests)
        print(hub.url)
"""

from ._users import UsersFile, UsersFileError
from .app import create_app
from .server import BackgroundHub, HubConfigError, HubServer, check_auth, check_bind, run

__all__ = [
    "BackgroundHub",
    "HubConfigError",
    "HubServer",
    "UsersFile",
    "UsersFileError",
    "check_auth",
    "check_bind",
    "create_app",
    "run",
]
