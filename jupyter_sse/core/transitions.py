"""State changes of jobs, told apart from the many updates that only move a count.

The broker's listener hears every change (a thousand updates a second for a busy loop); the event bus, the
duration histogram and notifications want only the few where a job's state changed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from .model import Job

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["StateTracker", "watch_state_changes"]

_log = logging.getLogger("jupyter_sse")


class StateTracker:
    """Remembers each job's last state, for at most ``limit`` jobs (the least recently changed are forgotten)."""

    def __init__(self, limit: int = 10_000) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._states: OrderedDict[str, str] = OrderedDict()

    def seed(self, jobs: Iterable[Job]) -> None:
        """Jobs known before listening (a store loaded from disk): their current state is no change."""
        for job in jobs:
            self._remember(job.id, job.state)

    def changes(self, jobs: Iterable[Job]) -> list[tuple[Job, str | None]]:
        """``(job, previous state)`` for each job whose state differs from the last one seen (``None``: new)."""
        changed: list[tuple[Job, str | None]] = []
        for job in jobs:
            previous = self._states.get(job.id)
            if previous != job.state:
                changed.append((job, previous))
                self._remember(job.id, job.state)
        return changed

    def _remember(self, job_id: str, state: str) -> None:
        self._states[job_id] = state
        self._states.move_to_end(job_id)
        if len(self._states) > self.limit:
            self._states.popitem(last=False)

    def __len__(self) -> int:
        return len(self._states)


def watch_state_changes(
    broker: Broker, callbacks: Sequence[Callable[[Job, str | None], None]], *, limit: int = 10_000
) -> Callable[[list[Job]], None]:
    """Call each ``callback(job, previous_state)`` when a job of ``broker`` changes state; return the listener
    (for ``broker.remove_listener``). A callback that raises is logged; the others still run."""
    tracker = StateTracker(limit)
    tracker.seed(broker.list_jobs())

    def listener(jobs: list[Job]) -> None:
        for job, previous in tracker.changes(jobs):
            for callback in callbacks:
                try:
                    callback(job, previous)
                except Exception:
                    _log.warning("jupyter-sse: a state-change callback failed", exc_info=True)

    broker.add_listener(listener)
    return listener
