"""Counters the broker and its adapters keep, read by the Prometheus exporters (``jupyter_sse._prometheus``).

Plain numbers with no metrics library: the core stays free of one, every server or hub instance keeps its own (so
tests that start many servers in one process never meet a registry that already has the names), and an exporter
reads them when it is scraped.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .model import Job
from .notify import job_duration

__all__ = ["DURATION_BUCKETS", "STORE_WRITE_BUCKETS", "BrokerMetrics", "Histogram"]

# Jobs run from seconds to days; the buckets follow what a person waits for.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 3 * 3600.0, 12 * 3600.0, 86400.0)
# A store write is a no-op in memory and one SQLite transaction on disk: microseconds to a slow disk's seconds.
STORE_WRITE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Counts per bucket (upper bounds, ``+Inf`` implied), their sum and count: what a Prometheus histogram is."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # not cumulative; the last one is above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= it)`` for every bound and ``inf``, as exporters state buckets."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class BrokerMetrics:
    """What happened since the broker started. Everything runs on the broker's loop, except the notification
    counters, which the sender's threads bump (an int ``+=`` under the GIL is enough for a counter)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.updates_accepted = 0
        self.updates_refused: dict[str, int] = {}
        self.events_delivered = 0
        self.slow_subscribers_dropped = 0
        self.store_write_seconds = Histogram(STORE_WRITE_BUCKETS)
        self.job_duration_seconds: dict[str, Histogram] = {}
        self.notifications_sent = 0
        self.notifications_failed = 0

    def refused(self, reason: str) -> None:
        """An update request refused; ``reason`` is the protocol's error name (a short, fixed vocabulary)."""
        self.updates_refused[reason] = self.updates_refused.get(reason, 0) + 1

    def job_ended(self, state: str, duration: float) -> None:
        hist = self.job_duration_seconds.get(state)
        if hist is None:
            hist = self.job_duration_seconds[state] = Histogram(DURATION_BUCKETS)
        hist.observe(max(duration, 0.0))

    def observe_state_change(self, job: Job, previous: str | None) -> None:
        """A state-change callback (``core.transitions``): a job that ended adds its duration to the histogram."""
        if job.terminal:
            self.job_ended(job.state, job_duration(job))

    @contextmanager
    def timing_store_write(self) -> Iterator[None]:
        started = self._clock()
        try:
            yield
        finally:
            self.store_write_seconds.observe(self._clock() - started)
