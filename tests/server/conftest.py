"""``api_server``: the same HTTP API served by the Jupyter server extension and by the standalone hub.

Tests written against it run once per server, which is how the two are shown to speak the same protocol.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import SSEServer


@dataclass
class HubTestServer(SSEServer):
    """The hub as the tests see it: one token for publishers and subscribers alike."""

    hub: Any = None

    @property
    def broker(self) -> Any:
        return self.hub.broker


@pytest.fixture
def hub_server() -> Iterator[HubTestServer]:
    """A hub in a background thread (pytest-jupyter runs async tests on a loop of its own), configured as the
    extension is in tests/conftest.py."""
    from jupyter_sse.hub import BackgroundHub

    token = secrets.token_urlsafe(16)
    with BackgroundHub(token, heartbeat=1.0, log_lines_kept=50) as hub:
        yield HubTestServer(url=hub.url, token=token, publish_token=token, app=hub.app, hub=hub)


@pytest.fixture(params=["jupyter", "hub"])
def api_server(request: pytest.FixtureRequest) -> SSEServer:
    server: SSEServer = request.getfixturevalue("sse_server" if request.param == "jupyter" else "hub_server")
    return server
