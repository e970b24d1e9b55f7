"""jupyter-sse: live, durable progress for long jobs started from notebooks.

The kernel-side names are imported on first use, so the Jupyter server process, which imports this package to
find its extension, does not load the kernel side, and the kernel does not load the server side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .kernel import JobCancelled, Progress, job, progress, submit, tqdm, trange
    from .widget import JobWidget

__all__ = [
    "JobCancelled",
    "JobWidget",
    "Progress",
    "__version__",
    "job",
    "load_ipython_extension",
    "progress",
    "submit",
    "tqdm",
    "trange",
    "unload_ipython_extension",
]

_LAZY = {name: ".kernel" for name in ("JobCancelled", "Progress", "job", "progress", "submit", "tqdm", "trange")}
_LAZY["JobWidget"] = ".widget"


def __getattr__(name: str) -> Any:
    if name == "asyncio":  # the submodule jupyter_sse.asyncio (gather, as_completed), loaded on first use
        return importlib.import_module(".asyncio", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jupyter_sse' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext jupyter_sse``: the progress bars libraries draw (tqdm, Trainer, Keras...) become jobs."""
    from .capture import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell: Any) -> None:
    """``%unload_ext jupyter_sse``: every library's bars are drawn as before."""
    from .capture import unload_ipython_extension as unload

    unload(shell)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import SSEExtension

    return [{"module": "jupyter_sse.server.app", "app": SSEExtension}]
