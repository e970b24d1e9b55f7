"""How a job is shown: the job's own MIME bundle or a text bar in a kernel, a tqdm-like bar on stderr elsewhere.

In a kernel whose jobs are published to a Jupyter server, a job is one output with the bundle
``{"application/vnd.jupyter-sse.job+json": {"job_id": ..., "version": 1}, "text/plain": <tqdm line>}``: the
labextension renders the MIME type as a live view fed by the server's stream (it needs only the job id, so it
renders at once after a reload or from a saved notebook), and every other front end shows the text line. The
kernel sends one ``display_data`` at the start and one ``update_display_data`` with the final line at the end:
nothing per update, no comm. With no server, the kernel updates a text line in place (``KernelDisplay``).

``make_display(job)`` is called once, at the job's start, from the user's thread. Another display (the
ipywidgets ``JobWidget``: ``jupyter_sse.widget``) plugs in with ``set_display_factory``. A display never raises:
every method is guarded by its caller too.

Threads: ``start`` and ``finish`` run in the user's thread (so a kernel output belongs to the running cell);
``update`` runs in the publisher thread, at most every ``live_interval`` seconds (None: no live updates).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from ._state import JobState
from .context import ipython_shell, is_kernel_shell

__all__ = [
    "JOB_MIME",
    "JOB_MIME_VERSION",
    "Display",
    "KernelDisplay",
    "MimeDisplay",
    "TerminalDisplay",
    "default_display",
    "format_text",
    "make_display",
    "set_display_factory",
    "update_in_cell",
]

_log = logging.getLogger("jupyter_sse")
KERNEL_NCOLS = 100
KERNEL_LIVE_INTERVAL = 1.0  # iopub allows 1,000 msg/s for everything; one update a second per bar is plenty
# the job's MIME type, rendered by the labextension (labextension/src/mime.ts); its data: job id and version
JOB_MIME = "application/vnd.jupyter-sse.job+json"
JOB_MIME_VERSION = 1


def format_text(job: JobState, *, final: bool = False, ncols: int | None = None) -> str:
    """tqdm's meter for the job; the final text ends with the state (and the error of a failed job)."""
    from tqdm.std import tqdm as _tqdm

    opts = job.options
    if final:
        n, rate = job.count, job.final_rate()
    else:
        n, rate = job.n(), job.rate
    total = job.total
    try:
        text: str = _tqdm.format_meter(
            n,
            total,
            job.elapsed(),
            ncols=ncols,
            prefix=job.name,
            ascii=opts.ascii,
            unit=job.unit,
            unit_scale=opts.unit_scale,
            rate=rate,
            bar_format=opts.bar_format,
            postfix=job.message or None,
            unit_divisor=opts.unit_divisor,
        )
    except Exception:  # a bar_format tqdm cannot use: fall back to the plain meter
        text = _tqdm.format_meter(n, total, job.elapsed(), ncols=ncols, prefix=job.name, unit=job.unit, rate=rate)
    if final:
        text += " " + job.state
        if job.state == "failed" and job.error:
            first = (job.error.get("message") or "").splitlines()
            text += f": {job.error.get('type', 'Exception')}" + (f": {first[0][:200]}" if first else "")
    return text


class Display:
    """No display at all; the base of the others."""

    live_interval: float | None = None

    def start(self, job: JobState) -> None:
        pass

    def update(self, job: JobState) -> None:
        pass

    def finish(self, job: JobState) -> None:
        pass


def update_in_cell(shell: Any, handle: Any, parent: dict[str, Any] | None, data: dict[str, Any]) -> None:
    """Update a display ``handle`` as an output of the cell whose header is ``parent``, from any thread.

    The publisher thread (live updates) and a thread that ends a job late (a generator closed after its cell)
    have no parent header of their own: without the cell's, the update would not be routed to its output.
    """
    pub = shell.display_pub
    token = pub.set_thread_parent(parent) if parent else None
    try:
        handle.update(data, raw=True)
    finally:
        if token is not None:
            pub.reset_thread_parent(token)


class KernelDisplay(Display):
    """A text/plain output of the running cell, updated in place (``display_id``)."""

    live_interval = KERNEL_LIVE_INTERVAL

    def __init__(self, shell: Any) -> None:
        self._shell = shell
        self._handle: Any = None
        self._parent: Any = None
        self._lock = threading.Lock()
        self._done = False
        self._last = ""

    def start(self, job: JobState) -> None:
        from IPython.display import display

        self._parent = dict(self._shell.display_pub.parent_header or {})
        text = format_text(job, ncols=KERNEL_NCOLS)
        self._handle = display({"text/plain": text}, raw=True, display_id=True)  # type: ignore[no-untyped-call]
        self._last = text

    def _show(self, text: str) -> None:
        if self._handle is None or text == self._last:
            return
        update_in_cell(self._shell, self._handle, self._parent, {"text/plain": text})
        self._last = text

    def update(self, job: JobState) -> None:
        with self._lock:
            if not self._done:
                self._show(format_text(job, ncols=KERNEL_NCOLS))

    def finish(self, job: JobState) -> None:
        with self._lock:
            self._done = True
            self._show(format_text(job, final=True, ncols=KERNEL_NCOLS) if job.options.leave else "")


class MimeDisplay(Display):
    """The job's MIME bundle in the cell output: the labextension's live view, or the text line elsewhere.

    One ``display_data`` at the start and one ``update_display_data`` at the end (the same MIME data, the final
    text line): the view's data comes from the server's stream, so the kernel sends nothing in between.
    """

    live_interval = None

    def __init__(self, shell: Any) -> None:
        self._shell = shell
        self._handle: Any = None
        self._parent: Any = None

    @staticmethod
    def bundle(job: JobState, text: str) -> dict[str, Any]:
        return {JOB_MIME: {"job_id": job.id, "version": JOB_MIME_VERSION}, "text/plain": text}

    def start(self, job: JobState) -> None:
        from IPython.display import display

        self._parent = dict(self._shell.display_pub.parent_header or {})
        self._handle = display(  # type: ignore[no-untyped-call]
            self.bundle(job, format_text(job, ncols=KERNEL_NCOLS)), raw=True, display_id=True
        )

    def finish(self, job: JobState) -> None:
        if self._handle is None:
            return
        if job.options.leave:
            data = self.bundle(job, format_text(job, final=True, ncols=KERNEL_NCOLS))
        else:
            data = {"text/plain": ""}  # tqdm's leave=False: the bar goes away
        update_in_cell(self._shell, self._handle, self._parent, data)
        self._handle = None


class TerminalDisplay(Display):
    """Like a local tqdm bar: ``\\r`` redraws on a TTY, and always a final line with the state."""

    # one live line at a time: nested bars would overwrite each other, so the newest one draws
    _current: TerminalDisplay | None = None

    def __init__(self, file: Any) -> None:
        self._file = file
        try:
            self._tty = bool(file.isatty())
        except Exception:
            self._tty = False
        self._lock = threading.Lock()
        self._done = False
        self._width = 0
        self.live_interval = None

    def _ncols(self, job: JobState) -> int | None:
        if job.options.ncols:
            return job.options.ncols
        if not self._tty:
            return None
        import shutil

        return max(shutil.get_terminal_size((100, 20)).columns - 1, 20)

    def _write(self, text: str, end: str = "") -> None:
        if self._tty:
            pad = " " * max(self._width - len(text), 0)
            self._file.write("\r" + text + pad + end)
            self._width = 0 if end else len(text)
        else:
            self._file.write(text + end)
        self._file.flush()

    def start(self, job: JobState) -> None:
        if self._tty:
            self.live_interval = max(job.options.mininterval, 0.05)
            TerminalDisplay._current = self

    def update(self, job: JobState) -> None:
        with self._lock:
            if not self._done and TerminalDisplay._current is self:
                self._write(format_text(job, ncols=self._ncols(job)))

    def finish(self, job: JobState) -> None:
        with self._lock:
            self._done = True
            if TerminalDisplay._current is self:
                TerminalDisplay._current = None
            if job.options.leave:
                self._write(format_text(job, final=True, ncols=None), end="\n")
            elif self._tty and self._width:
                self._file.write("\r" + " " * self._width + "\r")
                self._file.flush()


def default_display(job: JobState) -> Display:
    shell = ipython_shell()
    file = job.options.file
    # in a kernel, tqdm's usual file=sys.stdout/stderr means "show it in the cell"
    if is_kernel_shell(shell) and (file is None or file is sys.stdout or file is sys.stderr):
        return MimeDisplay(shell) if _published() else KernelDisplay(shell)
    return TerminalDisplay(file if file is not None else sys.stderr)


def _published() -> bool:
    """True when jobs go to a server: the MIME view reads them from there; else the kernel's text bar."""
    from .publisher import get_publisher

    return get_publisher().server is not None


_factory: Callable[[JobState], Display] = default_display


def set_display_factory(factory: Callable[[JobState], Display] | None) -> None:
    """Choose how jobs are shown from now on (None: the default text display)."""
    global _factory
    _factory = default_display if factory is None else factory


def make_display(job: JobState) -> Display:
    """The display of a job that starts now; never raises (falls back to no display)."""
    try:
        return _factory(job)
    except Exception:
        _log.debug("jupyter-sse: no display for job %s", job.id, exc_info=True)
        return Display()
