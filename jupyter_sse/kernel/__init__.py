"""The kernel side of jupyter-sse: ``progress``, ``job`` and the publisher that reports them.

Runs inside user kernels and scripts: it imports only the standard library at import time; tqdm (for its
meter and moving average) and IPython (when already loaded) are used lazily.
"""

from __future__ import annotations

from ._errors import JobCancelled
from .job import JobHandle, job
from .progress import Progress, progress, tqdm, trange
from .submit import SubmittedJob, submit

__all__ = ["JobCancelled", "JobHandle", "Progress", "SubmittedJob", "job", "progress", "submit", "tqdm", "trange"]
