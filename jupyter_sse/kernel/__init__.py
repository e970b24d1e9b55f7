"""The kernel side of jupyter-sse: ``progress``, ``job`` and the publisher that reports them.

Runs inside user kernels and scripts: it imports only the standard library at import time; tqdm (for its
meter and moving average) and IPython (when already loaded) are used lazily. ``tqdm``/``trange`` (a tqdm
subclass, so they import tqdm) load on first use.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from ._errors import JobCancelled
from .job import JobHandle, job
from .progress import Progress, progress
from .submit import SubmittedJob, submit

if TYPE_CHECKING:
    from ._tqdm import tqdm, trange

# A process started by a kernel that captures the libraries' bars (a worker) captures them too.
if os.environ.get("JUPYTER_SSE_CAPTURE") == "1":
    from ..capture import enable as _enable_capture

    _enable_capture()

__all__ = ["JobCancelled", "JobHandle", "Progress", "SubmittedJob", "job", "progress", "submit", "tqdm", "trange"]


def __getattr__(name: str) -> Any:
    if name in ("tqdm", "trange"):
        value = getattr(importlib.import_module("._tqdm", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
