"""The JobWidget: an ipywidgets model that carries a job id; its view (in the labextension) does the rest.

For ipywidgets layouts: ``VBox([JobWidget(job_id=bar.job_id), ...])``. ``progress()`` and ``job()`` do not use
it: they display the job's own MIME type (``jupyter_sse.kernel.display.MimeDisplay``), which the labextension
renders with the same view without a widget model, so it comes back live after a reload even while the cell
runs (ipywidgets restores models by asking the kernel, which does not answer until the cell ends). To show jobs
as JobWidgets anyway: ``set_display_factory(widget_display_factory)``.

The view subscribes to the job through the browser tab's shared SSE stream, so the kernel sends nothing per
update: one ``comm_open`` and one display at the start, one display update at the end. The display also carries
a ``text/plain`` line, replaced by the final line at the end, for front ends without the extension (nbclient,
GitHub, a terminal console).

Widget models are kept alive in the kernel, so a reloaded notebook finds them, but at most ``MAX_LIVE_WIDGETS``:
beyond that the oldest is closed (its output keeps the final text line).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections import deque
from typing import Any

import ipywidgets
from traitlets import Unicode

from ._version import __version__
from .kernel._state import JobState
from .kernel.context import ipython_shell, is_kernel_shell
from .kernel.display import KERNEL_NCOLS, Display, default_display, format_text, update_in_cell

__all__ = [
    "MAX_LIVE_WIDGETS",
    "MODULE_NAME",
    "JobWidget",
    "WidgetDisplay",
    "live_widgets",
    "widget_display",
    "widget_display_factory",
]

_log = logging.getLogger("jupyter_sse")

MODULE_NAME = "jupyter-sse"  # the npm package's name (labextension/package.json)
# the npm package has the Python package's version; tests/widget checks that they match
MODULE_VERSION = f"^{__version__}"
MAX_LIVE_WIDGETS = 200
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class JobWidget(ipywidgets.DOMWidget):  # type: ignore[misc]
    """Shows one job live, from the server's stream: ``JobWidget(job_id="...")``."""

    _model_name = Unicode("JobWidgetModel").tag(sync=True)
    _model_module = Unicode(MODULE_NAME).tag(sync=True)
    _model_module_version = Unicode(MODULE_VERSION).tag(sync=True)
    _view_name = Unicode("JobWidgetView").tag(sync=True)
    _view_module = Unicode(MODULE_NAME).tag(sync=True)
    _view_module_version = Unicode(MODULE_VERSION).tag(sync=True)

    job_id = Unicode("", help="the id of the job on the Jupyter server").tag(sync=True)


# the widgets this kernel keeps alive, oldest first
_live: deque[JobWidget] = deque()
_live_lock = threading.Lock()


def live_widgets() -> list[JobWidget]:
    """The JobWidgets kept alive, oldest first."""
    with _live_lock:
        return list(_live)


def _keep(widget: JobWidget) -> None:
    with _live_lock:
        _live.append(widget)
        old = [_live.popleft() for _ in range(max(len(_live) - MAX_LIVE_WIDGETS, 0))]
    for w in old:
        try:
            w.close()
        except Exception:
            _log.debug("jupyter-sse: closing an old widget failed", exc_info=True)


def _forget(widget: JobWidget) -> None:
    with _live_lock, contextlib.suppress(ValueError):  # already closed as one of the oldest
        _live.remove(widget)


class WidgetDisplay(Display):
    """A JobWidget in the cell output, with a text/plain line that the end of the job replaces."""

    live_interval = None  # no per-update messages: the view gets updates from the server's stream

    def __init__(self, shell: Any) -> None:
        self._shell = shell
        self._handle: Any = None
        self._parent: Any = None
        self.widget: JobWidget | None = None

    def bundle(self, text: str) -> dict[str, Any]:
        data: dict[str, Any] = {"text/plain": text}
        if self.widget is not None:
            data[WIDGET_MIME] = {"model_id": self.widget.model_id, "version_major": 2, "version_minor": 0}
        return data

    def start(self, job: JobState) -> None:
        from IPython.display import display

        self._parent = dict(self._shell.display_pub.parent_header or {})
        self.widget = JobWidget(job_id=job.id)
        _keep(self.widget)
        self._handle = display(  # type: ignore[no-untyped-call]
            self.bundle(format_text(job, ncols=KERNEL_NCOLS)), raw=True, display_id=True
        )

    def finish(self, job: JobState) -> None:
        if self._handle is None:
            return
        if job.options.leave:
            data = self.bundle(format_text(job, final=True, ncols=KERNEL_NCOLS))
        else:
            # tqdm's leave=False: the bar goes away; so does its model
            data = {"text/plain": ""}
            if self.widget is not None:
                _forget(self.widget)
                self.widget.close()
                self.widget = None
        update_in_cell(self._shell, self._handle, self._parent, data)


def widget_display(shell: Any, job: JobState) -> Display | None:
    """A WidgetDisplay when the widget can show anything: the job is published to a server (the view reads
    it from there) and the kernel has a comm manager; None otherwise (the caller falls back to text)."""
    from .kernel.publisher import get_publisher

    if get_publisher().server is None:
        return None
    if getattr(shell, "kernel", None) is None:
        return None
    return WidgetDisplay(shell)


def widget_display_factory(job: JobState) -> Display:
    """A display factory for ``set_display_factory``: jobs as JobWidgets where ``widget_display`` allows,
    the default display (the MIME bundle, or text) elsewhere."""
    shell = ipython_shell()
    file = job.options.file
    if is_kernel_shell(shell) and (file is None or file is sys.stdout or file is sys.stderr):
        chosen = widget_display(shell, job)
        if chosen is not None:
            return chosen
    return default_display(job)
