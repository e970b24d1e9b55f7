"""Attributes set on library objects, each put back as it was by ``restore()``."""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["Patches"]

_MISSING: Any = object()


class Patches:
    """A record of ``setattr`` calls on classes and modules, undone in reverse order."""

    def __init__(self) -> None:
        self._done: list[tuple[Any, str, Any]] = []
        self._lock = threading.Lock()

    def set(self, owner: Any, name: str, value: Any) -> None:
        # the owner's own attribute (not one inherited from a base class), so restoring never shadows a base's
        own = vars(owner).get(name, _MISSING) if hasattr(owner, "__dict__") else getattr(owner, name, _MISSING)
        with self._lock:
            self._done.append((owner, name, own))
        setattr(owner, name, value)

    def original(self, owner: Any, name: str) -> Any:
        """What ``owner.name`` was before the first patch of it (the live attribute when never patched)."""
        with self._lock:
            for patched, attr, value in self._done:
                if patched is owner and attr == name and value is not _MISSING:
                    return value
        return getattr(owner, name)

    def restore(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        for owner, name, value in reversed(done):
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)
