"""The state of one job as the kernel tracks it, and what of it goes on the wire.

User threads only write plain attributes here (``count``, ``message``...) or nothing at all (iteration: the
sampler reads the native iterator's ``__length_hint__``). The publisher thread samples, smooths the rate and
builds the wire fields. Transitions to a terminal state take ``END_LOCK`` (rare, never per item).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections import deque
from operator import length_hint
from typing import Any

# The protocol's bounds: a batch with a longer string would be refused whole, so strings are clipped to them.
from ..protocol import FINAL_STATES, LOG_LINE_MAX_LENGTH, NAME_MAX_LENGTH, TEXT_MAX_LENGTH

__all__ = [
    "CORE_FIELDS",
    "END_LOCK",
    "DisplayOptions",
    "JobState",
    "clip",
    "exhaust",
    "finite_or_none",
    "new_job_id",
]

# re-made in a forked child (``_fork``): another thread may hold it at fork time and never release the copy
END_LOCK = threading.RLock()
# fields compared to decide whether a job changed; elapsed and rate ride along with any update
CORE_FIELDS = (
    "name",
    "state",
    "n",
    "total",
    "unit",
    "message",
    "error",
    "kernel_id",
    "cell_id",
    "path",
    "parent",
    "metadata",
)
MAX_PENDING_LOG_LINES = 1000


def new_job_id() -> str:
    """16 hex characters: a valid job id (``protocol.JOB_ID_RULE``), unique without a round trip."""
    return os.urandom(8).hex()


def clip(value: object, limit: int) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def finite_or_none(value: object) -> float | int | None:
    """A finite number >= 0, or None (JSON has no NaN/inf and the protocol wants >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # type: ignore[arg-type]  # numpy scalars, Decimal...
        except (TypeError, ValueError):
            return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value < 0:
        return None
    return value


def exhaust(it: Any) -> None:
    """Make a native iterator (or the compress control iterator) exhausted from another thread.

    ``__reduce__`` gives the position; position + length_hint is the end for list, tuple, str, bytes, range
    (absolute index on 3.11, relative on 3.12+ where ``__reduce__`` reports 0) and sequence iterators.
    """
    try:
        reduced = it.__reduce__()
        if len(reduced) < 3:  # already exhausted
            return
        it.__setstate__(int(reduced[2]) + length_hint(it))
    except Exception:
        it.__setstate__(2**62)  # clamped by list/tuple/range/str iterators


class DisplayOptions:
    """What the text display needs from tqdm's arguments."""

    __slots__ = ("ascii", "bar_format", "file", "leave", "mininterval", "ncols", "unit_divisor", "unit_scale")

    def __init__(
        self,
        *,
        leave: bool = True,
        file: Any = None,
        ncols: int | None = None,
        unit_scale: bool | float = False,
        unit_divisor: float = 1000,
        bar_format: str | None = None,
        ascii: bool | str | None = None,
        mininterval: float = 0.1,
    ) -> None:
        self.leave = leave
        self.file = file
        self.ncols = ncols
        self.unit_scale = unit_scale
        self.unit_divisor = unit_divisor
        self.bar_format = bar_format
        self.ascii = ascii
        self.mininterval = mininterval


class JobState:
    """One job in this process. ``n`` = ``count`` + what the sampler reads from ``src``."""

    __slots__ = (
        "_ema_dn",
        "_ema_dt",
        "_last_n",
        "_last_t",
        "cancel_requested",
        "cell_id",
        "count",
        "display",
        "display_at",
        "end",
        "error",
        "exec_count",
        "gen",
        "id",
        "kernel_id",
        "logs",
        "logs_dropped",
        "manual",
        "message",
        "metadata",
        "name",
        "options",
        "outer",
        "parent",
        "path",
        "pid",
        "publisher",
        "rate",
        "sent",
        "sent_at",
        "smoothing",
        "src",
        "src_base",
        "stack",
        "start",
        "state",
        "stopping",
        "thread",
        "total",
        "unit",
    )

    def __init__(
        self,
        name: object = "",
        total: object = None,
        unit: object = "it",
        *,
        initial: float = 0,
        smoothing: float = 0.3,
        metadata: dict[str, Any] | None = None,
        options: DisplayOptions | None = None,
        manual: bool = True,
    ) -> None:
        self.id = new_job_id()
        self.name = clip("" if name is None else name, NAME_MAX_LENGTH)
        self.state = "pending"
        self.total = finite_or_none(total)
        self.unit = clip(unit or "it", NAME_MAX_LENGTH)
        self.message = ""
        self.error: dict[str, str] | None = None
        self.kernel_id: str | None = None
        self.cell_id: str | None = None
        self.path: str | None = None
        self.parent: str | None = None
        self.outer: Any = None  # the enclosing job where this one started (JobState, RemoteParent or None)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.cancel_requested = False
        self.stopping = False  # left by an exception, waiting to learn which (IPython's post_run_cell)
        self.manual = manual
        self.count: float = finite_or_none(initial) or 0
        # the sampler: a native iterator (or compress's control iterator) and its length at start
        self.src: Any = None
        self.src_base = 0
        self.gen: Any = None  # the generator of the compress path, to tell "it raised" from "dropped"
        self.start = time.monotonic()
        self.end: float | None = None
        self.smoothing = smoothing
        self.rate: float | None = None
        self._ema_dn: Any = None
        self._ema_dt: Any = None
        self._last_n: float = self.count
        self._last_t = self.start
        self.logs: deque[str] = deque()
        self.logs_dropped = 0
        self.options = options or DisplayOptions()
        self.display: Any = None
        self.display_at = 0.0
        self.publisher: Any = None
        self.stack: Any = None  # the handle context.push_job gave, to pop it at the end
        self.thread = threading.get_ident()
        self.pid = os.getpid()  # a forked child (DataLoader worker) must not display or report our jobs
        self.exec_count: int | None = None
        self.sent: dict[str, Any] | None = None  # the core fields the server acknowledged
        self.sent_at = 0.0

    # -- progress ------------------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.state in FINAL_STATES

    def n(self) -> float:
        """Work done. While the loop is inside item k (0-based), k items are done, as tqdm counts."""
        src = self.src
        if src is None:
            return self.count
        taken = self.src_base - length_hint(src)
        return self.count + (taken - 1 if taken > 0 else 0)

    def freeze(self, exhausted: bool) -> None:
        """Move the sampled count into ``count`` and let go of the iterator (and of the data it holds)."""
        src = self.src
        if src is None:
            return
        taken = self.src_base - length_hint(src)
        if not exhausted and taken > 0:
            taken -= 1
        self.count += max(taken, 0)
        self.src = None
        self.gen = None

    def elapsed(self, now: float | None = None) -> float:
        end = self.end
        if end is None:
            end = time.monotonic() if now is None else now
        return max(end - self.start, 0.0)

    def sample(self, now: float) -> float:
        """Read n and feed the rate's moving averages (tqdm's EMA of dn and dt, updated when n moves)."""
        n = self.n()
        dn = n - self._last_n
        if dn:
            dt = now - self._last_t
            self._last_n, self._last_t = n, now
            if dn > 0 and dt > 0:
                if self.smoothing <= 0:
                    elapsed = self.elapsed(now)
                    self.rate = n / elapsed if elapsed > 0 else None
                else:
                    if self._ema_dn is None:
                        from tqdm.std import EMA

                        self._ema_dn, self._ema_dt = EMA(self.smoothing), EMA(self.smoothing)
                    self._ema_dn(dn)
                    self._ema_dt(dt)
                    self.rate = self._ema_dn() / self._ema_dt()
        return n

    def stalled_rate(self, now: float) -> float | None:
        """The rate to report now: the moving average, or less once no step came for two steps' time.

        The average only moves when n does, so a loop stuck in one step would go on reporting its old speed
        (every lease renewal re-sends it). Past two steps' worth of silence, the rate is at most one step per
        quiet time, falling towards 0 as the silence lasts.
        """
        rate = self.rate
        if rate is None or rate <= 0:
            return rate
        quiet = now - self._last_t
        if quiet * rate > 2:
            return min(rate, 1 / quiet)
        return rate

    def final_rate(self) -> float | None:
        """The summary rate of an ended job: the average over its whole run."""
        elapsed = self.elapsed()
        done = self.count
        return done / elapsed if elapsed > 0 and done > 0 else self.rate

    def request_cancel(self) -> None:
        """From the publisher thread: the server says cancel. The loop raises at its next step."""
        with END_LOCK:
            if self.state in FINAL_STATES or self.cancel_requested:
                return
            src = self.src
            self.freeze(exhausted=False)  # keep the count reached; exhausting would read as "all done"
            self.cancel_requested = True
            if src is not None:
                # if this fails, the manual checks (update, set...) still see the flag
                with contextlib.suppress(Exception):
                    exhaust(src)

    # -- logs ----------------------------------------------------------------------------------------------

    def add_log(self, text: str) -> None:
        lines = text.splitlines() or [""]
        with END_LOCK:
            for line in lines:
                if len(self.logs) >= MAX_PENDING_LOG_LINES:
                    self.logs.popleft()
                    self.logs_dropped += 1
                self.logs.append(clip(line, LOG_LINE_MAX_LENGTH))

    def take_logs(self, limit: int) -> list[str]:
        """Move up to ``limit`` pending lines out (a note first if some were dropped)."""
        with END_LOCK:
            out: list[str] = []
            if self.logs_dropped and limit > 0:
                out.append(f"[jupyter-sse: {self.logs_dropped} log lines dropped while the server was unreachable]")
                self.logs_dropped = 0
            while self.logs and len(out) < limit:
                out.append(self.logs.popleft())
            return out

    def return_logs(self, lines: list[str]) -> None:
        """Put back lines a failed request took, in front, still bounded."""
        with END_LOCK:
            for line in reversed(lines):
                if line.startswith("[jupyter-sse: ") and line.endswith("unreachable]"):
                    continue  # the note is rebuilt from logs_dropped
                if len(self.logs) >= MAX_PENDING_LOG_LINES:
                    self.logs_dropped += 1  # drop the oldest: the one we would put in front
                    continue
                self.logs.appendleft(line)

    # -- the wire ------------------------------------------------------------------------------------------

    def wire_fields(self, now: float) -> dict[str, Any]:
        """Every JobUpdate field but ``id``, sanitized (finite numbers >= 0, bounded strings)."""
        ended = self.state in FINAL_STATES
        n = self.count if ended else self.sample(now)
        rate = self.final_rate() if ended else self.stalled_rate(now)
        return {
            "name": self.name,
            "state": self.state if ended else "running",
            "n": finite_or_none(n) or 0,
            "total": finite_or_none(self.total),
            "unit": self.unit,
            "message": clip(self.message, TEXT_MAX_LENGTH),
            "error": self.error,
            "kernel_id": self.kernel_id,
            "cell_id": self.cell_id,
            "path": None if self.path is None else clip(self.path, TEXT_MAX_LENGTH),
            "parent": self.parent,
            "metadata": self.metadata,
            "elapsed": finite_or_none(self.elapsed(now)) or 0.0,
            "rate": finite_or_none(rate),
        }
