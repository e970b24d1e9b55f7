"""The one error type the core raises for requests it refuses."""

from __future__ import annotations

from typing import Any

__all__ = ["ProtocolError"]


class ProtocolError(Exception):
    """A request the server refuses: carries the HTTP status and the JSON error body of protocol v1.

    Adapters (tornado, FastAPI) turn it into ``{"error": error, "detail": detail}`` with ``status``.
    """

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail}
