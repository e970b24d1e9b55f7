"""Run a function when a module finishes importing (or at once if it already has): patches for libraries
that may never be imported cost nothing, and a library imported later is patched before user code sees it.

A ``sys.meta_path`` finder asks the other finders for the spec of a watched name, and wraps its loader so
that the hooks run right after the module's code has run. The module's ``__loader__`` and ``__spec__.loader``
are set back to the real loader once it ran, so nothing afterwards sees the wrapper.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

__all__ = ["on_import", "remove_hooks"]

_log = logging.getLogger("jupyter_sse")
Hook = Callable[[ModuleType], None]
_hooks: dict[str, list[Hook]] = {}
_lock = threading.RLock()
_busy = threading.local()


def _run(hooks: Sequence[Hook], module: ModuleType) -> None:
    for hook in hooks:
        try:
            hook(module)
        except Exception:  # a library version we do not understand: leave it as it is, never break its import
            _log.warning("jupyter-sse: could not capture the progress of %s", module.__name__, exc_info=True)


class _Loader(importlib.abc.Loader):
    """The real loader, with the hooks run after ``exec_module``."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        if spec is not None and spec.loader is self:
            spec.loader = self.loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self.loader
        self.loader.exec_module(module)
        with _lock:
            hooks = list(_hooks.get(module.__name__, ()))
        _run(hooks, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _hooks or getattr(_busy, "name", None) == fullname:
            return None
        _busy.name = fullname
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            _busy.name = None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


_finder = _Finder()


def on_import(name: str, hook: Hook) -> None:
    """Call ``hook(module)`` once module ``name`` is imported: now if it already is, else right after it is."""
    with _lock:
        _hooks.setdefault(name, []).append(hook)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
    module = sys.modules.get(name)
    if module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False) is False:
        _run([hook], module)


def remove_hooks() -> None:
    """Forget every hook and take the finder out of ``sys.meta_path``."""
    with _lock:
        _hooks.clear()
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
