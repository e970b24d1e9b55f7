"""What jupyter-sse tells jupyter_server's idle tracking: a running job is activity, an open stream is not.

jupyter_server's ``last_activity()`` is the newest of: the server's start, the kernels' last message, every
``settings[...]`` key ending in ``_last_activity`` (``api_last_activity`` is set by ``APIHandler.finish``), and
``settings["last_activity_times"]``. Under JupyterHub the single-user server reports that value to the hub every
``JUPYTERHUB_ACTIVITY_INTERVAL`` seconds (300 by default), and idle cullers act on it.

- A job reports to the server, not through the kernel's iopub channel, so a 3-hour training loop that prints
  nothing would look idle: while any job is unfinished, ``settings["jupyter_sse_last_activity"]`` is refreshed
  (``SSEExtension.running_jobs_are_activity``, on by default).
- The publishers' ``POST updates`` and the event streams do not touch ``api_last_activity`` themselves
  (``_track_activity = False`` on their handlers): otherwise a job would count as activity whatever the setting,
  and a stream kept open by a forgotten browser tab would count once more when it closes.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from jupyter_server._tz import utcnow

from ..core import Broker

__all__ = ["ACTIVITY_KEY", "ActivityTracker"]

#: Ends with ``_last_activity``: that is how ``ServerApp.last_activity()`` finds an extension's activity.
ACTIVITY_KEY = "jupyter_sse_last_activity"


class ActivityTracker:
    """Marks the server active while any job is unfinished; ``refresh()`` is called every few seconds."""

    def __init__(self, broker: Broker, settings: MutableMapping[str, Any], *, enabled: bool) -> None:
        self.broker = broker
        self.settings = settings
        self.enabled = enabled

    def has_unfinished_jobs(self) -> bool:
        # `pending` counts too: the publisher has the job and is about to run it. A job whose publisher went
        # silent stops counting when its lease runs out and it turns `lost`.
        return bool(self.broker.unfinished_entries())

    def refresh(self) -> None:
        if self.enabled and self.has_unfinished_jobs():
            self.settings[ACTIVITY_KEY] = utcnow()
