"""Zero code change: the progress that libraries already draw becomes jobs (``%load_ext jupyter_sse``).

One module per library. Each registers a hook on the import of the module that holds the library's progress
code (``_hooks.on_import``): a library that is not installed, or not imported, costs nothing, and one imported
later is patched as it loads. ``disable()`` restores every patched attribute.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any

__all__ = ["CAPTURE_ENV", "disable", "enable", "enabled", "load_ipython_extension", "unload_ipython_extension"]

CAPTURE_ENV = "JUPYTER_SSE_CAPTURE"
# tqdm first: the other libraries' captures publish through it when they draw tqdm bars themselves
_MODULES = ("_tqdm", "_joblib", "_dask", "_distributed", "_transformers", "_keras", "_lightning")
_lock = threading.Lock()
_on = False


def enabled() -> bool:
    """Whether the libraries' bars are being captured in this process."""
    return _on


def enable() -> None:
    """Capture the progress bars of tqdm and the supported libraries, now and when they are imported."""
    global _on
    with _lock:
        if _on:
            return
        for name in _MODULES:
            importlib.import_module(f".{name}", __name__).install()
        _on = True
        # child processes (joblib's loky workers, datasets' map workers) capture their bars too
        os.environ[CAPTURE_ENV] = "1"


def disable() -> None:
    """Put every patched library back as it was."""
    global _on
    from ._hooks import remove_hooks

    with _lock:
        if not _on:
            return
        remove_hooks()
        for name in reversed(_MODULES):
            importlib.import_module(f".{name}", __name__).uninstall()
        _on = False
        os.environ.pop(CAPTURE_ENV, None)


def load_ipython_extension(shell: Any) -> None:
    enable()


def unload_ipython_extension(shell: Any) -> None:
    disable()
