"""Stand-ins for IPython's display handle and ipykernel's shell, recording what a display sends (for the
display-bundle unit tests; the real kernel path is tested with real kernels elsewhere)."""

from __future__ import annotations

from typing import Any


class Handle:
    """What ``IPython.display.display(..., display_id=True)`` returns: records the display and its updates."""

    def __init__(self, shown: list[dict[str, Any]], data: dict[str, Any]) -> None:
        self.shown = shown
        shown.append({"display": data})

    def update(self, data: dict[str, Any], raw: bool = False) -> None:
        self.shown.append({"update": data})


class FakePub:
    """ipykernel's display publisher: the cell's parent header, and the parents set for other threads."""

    parent_header: dict[str, Any] = {"msg_id": "cell"}

    def __init__(self) -> None:
        self.parents: list[Any] = []

    def set_thread_parent(self, parent: Any) -> str:
        self.parents.append(parent)
        return "token"

    def reset_thread_parent(self, token: Any) -> None:
        pass


class FakeShell:
    kernel = object()

    def __init__(self) -> None:
        self.display_pub = FakePub()
