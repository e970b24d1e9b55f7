"""The standalone hub: protocol v1 on FastAPI, sse-starlette and uvicorn, over the same core as the extension.

Needs the ``asgi`` extra (``pip install "jupyter-sse[asgi]"``); the server extension never imports it.

    jupyter sse hub --port 8765 --token "$TOKEN"        # from a shell

    from jupyter_sse.hub import create_app, run, BackgroundHub
    with BackgroundHub(token="t") as hub:                # in-process, on a free loopback port (tests)
        print(hub.url)
"""

from .app import create_app
from .server import BackgroundHub, HubConfigError, HubServer, check_bind, run

__all__ = ["BackgroundHub", "HubConfigError", "HubServer", "check_bind", "create_app", "run"]
