"""Which ended jobs make a notification, and how jobs that end close together become one message.

Framework-free: a server or hub calls :meth:`Notifier.job_changed` for each state change (see transitions.py) on
its loop, and gives the notifier a ``send(message)`` that must return at once (``apprise_sender.AppriseSender``
queues it for a worker thread). Nothing here waits on a network.

Rules, in order: a job's own ``metadata["notify"]`` wins (``False``: never; ``True``: the configured targets,
whatever its state and duration; an Apprise URL or a list of them: those targets, whatever its state and
duration). Without one, a job notifies the configured targets when it ends in one of ``states``, after running
at least ``min_duration`` seconds, and is not nested in another job (the outer job's message covers it).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ..protocol import MAX_NOTIFY_TARGETS, TERMINAL_STATES
from .model import Job

__all__ = [
    "DEFAULT_STATES",
    "EndedJob",
    "Message",
    "Notifier",
    "NotifyRules",
    "format_duration",
    "job_duration",
    "notify_choice",
]

DEFAULT_STATES = TERMINAL_STATES
MAX_JOB_TARGETS = MAX_NOTIFY_TARGETS  # URLs one job may name
_log = logging.getLogger("jupyter_sse")


@dataclass(frozen=True)
class NotifyRules:
    states: frozenset[str] = DEFAULT_STATES
    min_duration: float = 60.0
    window: float = 30.0
    max_jobs_listed: int = 20  # a message lists this many jobs and counts the rest
    max_pending_messages: int = 100  # batches waiting for their window; beyond, the oldest goes out early
    allow_job_targets: bool = True  # may a job name its own URLs

    def __post_init__(self) -> None:
        unknown = set(self.states) - TERMINAL_STATES
        if unknown:
            raise ValueError(
                f"notify states must be among {', '.join(sorted(TERMINAL_STATES))}, not {', '.join(sorted(unknown))}"
            )
        if not (math.isfinite(self.min_duration) and self.min_duration >= 0):
            raise ValueError("the minimum duration must be a finite number of seconds >= 0")
        if not (math.isfinite(self.window) and self.window >= 0):
            raise ValueError("the coalescing window must be a finite number of seconds >= 0")
        if self.max_jobs_listed < 1 or self.max_pending_messages < 1:
            raise ValueError("max_jobs_listed and max_pending_messages must be at least 1")


def notify_choice(metadata: Mapping[str, Any]) -> bool | tuple[str, ...] | None:
    """A job's own choice from its metadata: ``None`` (the rules decide), a bool, or the URLs it names.

    Raises ValueError for anything else, with the reason.
    """
    value = metadata.get("notify")
    if value is None or isinstance(value, bool):
        return value
    urls = [value] if isinstance(value, str) else value
    if (
        not isinstance(urls, list)
        or not 1 <= len(urls) <= MAX_JOB_TARGETS
        or not all(isinstance(url, str) and "://" in url for url in urls)
    ):
        raise ValueError(
            f"notify must be true, false, an Apprise URL (scheme://...) or a list of 1 to {MAX_JOB_TARGETS} of them"
        )
    return tuple(url.strip() for url in urls)


def job_duration(job: Job) -> float:
    """Seconds the job ran: what its publisher measured, else from its creation to its end on the server."""
    if job.elapsed:
        return float(job.elapsed)
    end = job.finished if job.finished is not None else job.updated
    return max(0.0, end - job.created)


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


@dataclass(frozen=True, slots=True)
class EndedJob:
    """What a message says about one job, copied out of the live job when it ended."""

    id: str
    name: str
    state: str
    duration: float
    n: float
    total: float | None
    unit: str
    error: str | None
    path: str | None
    cell_id: str | None
    link: str | None

    @classmethod
    def from_job(cls, job: Job, link_base: str | None) -> EndedJob:
        error = None
        if job.error:
            kind, text = job.error.get("type", ""), job.error.get("message", "")
            error = f"{kind}: {text}" if kind and text else kind or text
        elif job.state == "lost" and job.message:
            error = job.message
        link = None
        if link_base and job.path:
            link = f"{link_base.rstrip('/')}/lab/tree/{quote(job.path, safe='/')}"
        return cls(
            id=job.id,
            name=job.name or job.id,
            state=job.state,
            duration=job_duration(job),
            n=job.n,
            total=job.total,
            unit=job.unit,
            error=error,
            path=job.path,
            cell_id=job.cell_id,
            link=link,
        )

    def lines(self) -> list[str]:
        count = f"{_number(self.n)}/{_number(self.total)}" if self.total is not None else _number(self.n)
        out = [f"{self.name}: {self.state} after {format_duration(self.duration)} ({count} {self.unit})"]
        if self.error:
            out.append(f"  error: {self.error}")
        if self.path:
            out.append(f"  notebook: {self.path}" + (f", cell {self.cell_id}" if self.cell_id else ""))
        if self.link:
            out.append(f"  open: {self.link}")
        return out


@dataclass(frozen=True)
class Message:
    """One notification. ``targets`` empty: the configured targets."""

    targets: tuple[str, ...]
    title: str
    body: str
    kind: str  # Apprise's notify type: "success", "warning" or "failure"
    count: int
    jobs: tuple[EndedJob, ...]


@dataclass
class _Batch:
    jobs: list[EndedJob] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    count: int = 0
    timer: asyncio.TimerHandle | None = None


def _compose(targets: tuple[str, ...], batch: _Batch) -> Message:
    states = batch.states
    if any(states.get(s) for s in ("failed", "lost")):
        kind = "failure"
    elif states.get("cancelled"):
        kind = "warning"
    else:
        kind = "success"
    if batch.count == 1:
        only = batch.jobs[0]
        title = f"{only.name} {only.state} after {format_duration(only.duration)}"
    else:
        summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items(), key=lambda item: -item[1]))
        title = f"{batch.count} jobs ended: {summary}"
    lines: list[str] = []
    for job in batch.jobs:
        lines.extend(job.lines())
    if batch.count > len(batch.jobs):
        lines.append(f"... and {batch.count - len(batch.jobs)} more")
    return Message(targets, title, "\n".join(lines), kind, batch.count, tuple(batch.jobs))


class Notifier:
    """Turns state changes into messages, one per target set per coalescing window.

    ``targets``: the URLs that stand for "the configured targets" (a hub user's own); empty: the sender's
    defaults. ``claim(job)``: asked last, once a job would notify; False means another process sends for it
    (replicas sharing a store each see a job end that more than one of them may have recorded)."""

    def __init__(
        self,
        rules: NotifyRules,
        send: Callable[[Message], None],
        *,
        has_default_targets: bool,
        link_base: str | None = None,
        targets: tuple[str, ...] = (),
        claim: Callable[[Job], bool] | None = None,
    ) -> None:
        self.rules = rules
        self._send = send
        self.has_default_targets = has_default_targets
        self.link_base = link_base
        self.targets = targets
        self._claim = claim
        self._batches: dict[tuple[str, ...], _Batch] = {}
        self._warned_bad_choice = False
        self.messages = 0  # composed and handed to the sender

    def targets_for(self, job: Job) -> tuple[str, ...] | None:
        """The targets a job that just ended notifies (``targets``: the configured ones), or ``None``."""
        try:
            choice = notify_choice(job.metadata)
        except ValueError as exc:
            if not self._warned_bad_choice:  # it came from a raw POST; the kernel side checks its argument
                self._warned_bad_choice = True
                _log.warning("jupyter-sse: ignoring job %s's notify setting: %s", job.id, exc)
            choice = None
        if choice is False:
            return None
        if isinstance(choice, tuple):
            if self.rules.allow_job_targets:
                return choice
            choice = True  # its own URLs are not allowed here: the configured targets, still as asked
        if not self.has_default_targets:
            return None
        if choice is True:
            return self.targets
        if job.parent or job.state not in self.rules.states or job_duration(job) < self.rules.min_duration:
            return None
        return self.targets

    def job_changed(self, job: Job, previous: str | None) -> None:
        if not job.terminal or previous == job.state:
            return
        targets = self.targets_for(job)
        if targets is None:
            return
        if self._claim is not None and not self._claim(job):
            return
        batch = self._batches.get(targets)
        if batch is None:
            if len(self._batches) >= self.rules.max_pending_messages:
                self._flush(next(iter(self._batches)))
            batch = self._batches[targets] = _Batch()
            batch.timer = self._schedule(targets)
        if len(batch.jobs) < self.rules.max_jobs_listed:
            batch.jobs.append(EndedJob.from_job(job, self.link_base))
        batch.states[job.state] = batch.states.get(job.state, 0) + 1
        batch.count += 1
        if batch.timer is None:
            self._flush(targets)

    def _schedule(self, targets: tuple[str, ...]) -> asyncio.TimerHandle | None:
        if self.rules.window <= 0:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): nothing could fire later, so send now
            return None
        return loop.call_later(self.rules.window, self._flush, targets)

    def _flush(self, targets: tuple[str, ...]) -> None:
        batch = self._batches.pop(targets, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        self.messages += 1
        try:
            self._send(_compose(targets, batch))
        except Exception:  # a sender must not raise; if it does, the change that ended the job is not its victim
            _log.warning("jupyter-sse: could not queue a notification", exc_info=True)

    def flush(self) -> None:
        """Send every waiting message now (the server is stopping)."""
        for targets in list(self._batches):
            self._flush(targets)

    @property
    def pending(self) -> int:
        return len(self._batches)
