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
``update`` runs in the publisher thread, at most every ``live_interval`` seconds (None: no live updates);
``log`` runs in the thread of the job's ``log()`` call.

Headless runs read a log, not a screen. papermill's ``--log-output`` logs each *new* output of a cell (a
``display_data``, a stream) and never an ``update_display_data``; a script's stderr that is not a terminal cannot
be redrawn. So when no front end renders the cell (JupyterLab and Notebook 7 send the cell's id with each
execution; nbclient and papermill do not), a kernel display also publishes a progress line every
``HEADLESS_LOG_INTERVAL`` seconds and the final line, each as a new output that it empties at once: the log gets
the lines, the saved notebook keeps one visible line per bar. A terminal display off a TTY writes a line at the
same rate.

With nothing published, a job's ``log()`` lines show in its text output: the last ``LOG_TAIL`` of them, above the
bar (``Display.log``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..protocol import JOB_MIME_TYPE, JOB_MIME_VERSION
from ._state import JobState
from .context import ipython_shell, is_kernel_shell

__all__ = [
    "HEADLESS_LOG_INTERVAL",
    "JOB_MIME",
    "JOB_MIME_VERSION",
    "LOG_TAIL",
    "Display",
    "KernelDisplay",
    "MimeDisplay",
    "TerminalDisplay",
    "default_display",
    "format_text",
    "make_display",
    "set_display_factory",
    "show_log",
    "update_in_cell",
]

_log = logging.getLogger("jupyter_sse")
KERNEL_NCOLS = 100
KERNEL_LIVE_INTERVAL = 1.0  # iopub allows 1,000 msg/s for everything; one update a second per bar is plenty
# the job's MIME type, rendered by the labextension (labextension/src/mime.ts); its data: job id and version
JOB_MIME = JOB_MIME_TYPE
# Seconds between the progress lines of a headless run's log: a 15-minute loop logs about 180 lines, not tqdm's
# thousands (it redraws every 0.1 s whether or not anyone can see it), and the newest line is never older.
HEADLESS_LOG_INTERVAL = 5.0
# The job's log() lines a text display keeps (the last ones), and how much of each.
LOG_TAIL = 5
_LOG_LINE_MAX = 2 * KERNEL_NCOLS


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

    def log(self, job: JobState, text: str) -> None:
        """Lines the job logged while nothing is published (a display that shows them keeps a bounded tail)."""


class _Tail:
    """The last ``LOG_TAIL`` log lines of a job, each clipped, and how many came before them."""

    def __init__(self) -> None:
        self._lines: deque[str] = deque(maxlen=LOG_TAIL)
        self._count = 0

    def add(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self._lines.append(line if len(line) <= _LOG_LINE_MAX else line[: _LOG_LINE_MAX - 1] + "…")
            self._count += 1

    def text(self) -> str:
        """The lines to show above the bar (ending with a newline), or ""."""
        if not self._lines:
            return ""
        hidden = self._count - len(self._lines)
        head = [f"[{hidden} earlier log line{'s' if hidden > 1 else ''}]"] if hidden else []
        return "\n".join([*head, *self._lines]) + "\n"


@contextmanager
def _in_cell(shell: Any, parent: dict[str, Any] | None) -> Iterator[None]:
    """Route what is sent inside to the output of the cell whose header is ``parent``, from any thread."""
    pub = shell.display_pub
    token = pub.set_thread_parent(parent) if parent else None
    try:
        yield
    finally:
        if token is not None:
            pub.reset_thread_parent(token)


class _HeadlessLog:
    """Progress lines for a log that sees only new outputs: each is a new output, emptied at once (see above)."""

    def __init__(self, shell: Any, parent: dict[str, Any] | None, interval: float) -> None:
        self._shell = shell
        self._parent = parent
        self._interval = interval
        self._at = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._at >= self._interval

    def emit(self, text: str) -> None:
        from IPython.display import display

        self._at = time.monotonic()
        with _in_cell(self._shell, self._parent):
            handle = display({"text/plain": text}, raw=True, display_id=True)  # type: ignore[no-untyped-call]
            if handle is not None:
                handle.update({"text/plain": ""}, raw=True)


def update_in_cell(shell: Any, handle: Any, parent: dict[str, Any] | None, data: dict[str, Any]) -> None:
    """Update a display ``handle`` as an output of the cell whose header is ``parent``, from any thread.

    The publisher thread (live updates) and a thread that ends a job late (a generator closed after its cell)
    have no parent header of their own: without the cell's, the update would not be routed to its output.
    """
    with _in_cell(shell, parent):
        handle.update(data, raw=True)


class KernelDisplay(Display):
    """A text/plain output of the running cell, updated in place (``display_id``), with the job's last log lines.

    ``log_interval``: also publish progress lines for a headless run's log, that often (None: not).
    """

    live_interval = KERNEL_LIVE_INTERVAL

    def __init__(self, shell: Any, *, log_interval: float | None = None) -> None:
        self._shell = shell
        self._handle: Any = None
        self._parent: Any = None
        self._lock = threading.Lock()
        self._done = False
        self._last = ""
        self._tail = _Tail()
        self._log_interval = log_interval
        self._headless: _HeadlessLog | None = None

    def start(self, job: JobState) -> None:
        from IPython.display import display

        self._parent = dict(self._shell.display_pub.parent_header or {})
        text = format_text(job, ncols=KERNEL_NCOLS)
        self._handle = display({"text/plain": text}, raw=True, display_id=True)  # type: ignore[no-untyped-call]
        self._last = text
        if self._log_interval is not None:
            self._headless = _HeadlessLog(self._shell, self._parent, self._log_interval)

    def _show(self, text: str) -> None:
        if self._handle is None or text == self._last:
            return
        update_in_cell(self._shell, self._handle, self._parent, {"text/plain": text})
        self._last = text

    def update(self, job: JobState) -> None:
        with self._lock:
            if self._done:
                return
            line = format_text(job, ncols=KERNEL_NCOLS)
            self._show(self._tail.text() + line)
            if self._headless is not None and self._headless.due():
                self._headless.emit(line)

    def finish(self, job: JobState) -> None:
        with self._lock:
            self._done = True
            if not job.options.leave:
                self._show("")
                return
            text = self._tail.text() + format_text(job, final=True, ncols=KERNEL_NCOLS)
            self._show(text)
            if self._headless is not None:
                self._headless.emit(text)

    def log(self, job: JobState, text: str) -> None:
        # Shown at the next update (the publisher thread's, at most a second away) or at the end: a loop that
        # logs every step costs no message per line.
        with self._lock:
            self._tail.add(text)


class MimeDisplay(Display):
    """The job's MIME bundle in the cell output: the labextension's live view, or the text line elsewhere.

    One ``display_data`` at the start and one ``update_display_data`` at the end (the same MIME data, the final
    text line): the view's data comes from the server's stream, so the kernel sends nothing in between, except
    the headless log's progress lines when ``log_interval`` is set.
    """

    live_interval: float | None = None

    def __init__(self, shell: Any, *, log_interval: float | None = None) -> None:
        self._shell = shell
        self._handle: Any = None
        self._parent: Any = None
        self._log_interval = log_interval
        self._headless: _HeadlessLog | None = None
        self._lock = threading.Lock()  # no progress line after the final one

    @staticmethod
    def bundle(job: JobState, text: str) -> dict[str, Any]:
        return {JOB_MIME: {"job_id": job.id, "version": JOB_MIME_VERSION}, "text/plain": text}

    def start(self, job: JobState) -> None:
        from IPython.display import display

        self._parent = dict(self._shell.display_pub.parent_header or {})
        self._handle = display(  # type: ignore[no-untyped-call]
            self.bundle(job, format_text(job, ncols=KERNEL_NCOLS)), raw=True, display_id=True
        )
        if self._log_interval is not None:
            # The live view needs no updates; the log does: the publisher thread calls update() that often.
            self._headless = _HeadlessLog(self._shell, self._parent, self._log_interval)
            self.live_interval = self._log_interval

    def update(self, job: JobState) -> None:
        with self._lock:
            if self._handle is not None and self._headless is not None and self._headless.due():
                self._headless.emit(format_text(job, ncols=KERNEL_NCOLS))

    def finish(self, job: JobState) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is None:
            return
        if job.options.leave:
            text = format_text(job, final=True, ncols=KERNEL_NCOLS)
            update_in_cell(self._shell, handle, self._parent, self.bundle(job, text))
            if self._headless is not None:
                self._headless.emit(text)
        else:
            update_in_cell(self._shell, handle, self._parent, {"text/plain": ""})  # tqdm's leave=False


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
        else:
            # a file or a pipe: a log, where every bar may add a line now and then
            self.live_interval = max(job.options.mininterval, HEADLESS_LOG_INTERVAL)

    def update(self, job: JobState) -> None:
        with self._lock:
            if self._done:
                return
            if not self._tty:
                self._write(format_text(job, ncols=self._ncols(job)), end="\n")
            elif TerminalDisplay._current is self:
                self._write(format_text(job, ncols=self._ncols(job)))

    def log(self, job: JobState, text: str) -> None:
        # Above the bar, as tqdm.write does; the bar comes back at its next update.
        with self._lock:
            if self._tty and self._width:
                self._file.write("\r" + " " * self._width + "\r")
                self._width = 0
            self._file.write(text.rstrip("\n") + "\n")
            self._file.flush()

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
        # no cell id: nbclient or papermill, whose log sees only new outputs
        log_interval = HEADLESS_LOG_INTERVAL if job.cell_id is None else None
        if _published():
            return MimeDisplay(shell, log_interval=log_interval)
        return KernelDisplay(shell, log_interval=log_interval)
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


def show_log(job: JobState, text: str) -> None:
    """Give the job's display lines it logged while nothing is published; never raises."""
    display = job.display
    if display is None:
        return
    try:
        display.log(job, text)
    except Exception:
        _log.debug("jupyter-sse: display log failed for job %s", job.id, exc_info=True)


def make_display(job: JobState) -> Display:
    """The display of a job that starts now; never raises (falls back to no display)."""
    try:
        return _factory(job)
    except Exception:
        _log.debug("jupyter-sse: no display for job %s", job.id, exc_info=True)
        return Display()
