"""The hub the tests run (conftest.py starts it): its addresses, tokens and settings, for the tests to import."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CHP_VERSION = "5.3.0"
# Gitignored; keyed on the version, so a bump installs afresh and a warm cache makes a run skip npm.
NODE_CACHE = Path(__file__).parent / ".node" / f"configurable-http-proxy-{CHP_VERSION}"
HARNESS_TOKEN = "jupyter-sse-hub-harness-token"  # a service token with admin scopes, to drive the hub's API
USERS = ("alice", "bob")
SERVICE = "jupyter-sse"  # the jupyter-sse hub, run by JupyterHub as a managed service
HEARTBEAT = 1.0  # seconds, the single-user servers' SSEExtension.heartbeat_interval
ACTIVITY_INTERVAL = 2  # seconds: how often single-user servers report activity, and the hub polls the proxy


@dataclass
class Hub:
    """A running hub, as the tests see it."""

    url: str  # the proxy's public URL, ending with "/"
    api: str  # the hub's REST API through the proxy: {url}hub/api/
    proxy_api: str  # configurable-http-proxy's own REST API
    proxy_token: str
    root: Path
    tokens: dict[str, str] = field(default_factory=dict)  # username -> a token with that user's browser scopes
    log: Path = Path()

    def user_url(self, name: str) -> str:
        return f"{self.url}user/{name}/"

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"token {self.tokens[name]}"}

    def hub_api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"token {HARNESS_TOKEN}"}
        return httpx.request(method, self.api + path, headers=headers, timeout=30, **kwargs)

    def proxy_routes(self) -> dict[str, Any]:
        response = httpx.get(
            self.proxy_api + "/api/routes", headers={"Authorization": f"token {self.proxy_token}"}, timeout=10
        )
        response.raise_for_status()
        return dict(response.json())

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
