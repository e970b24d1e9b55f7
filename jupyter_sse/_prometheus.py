"""The Prometheus view of a broker's counters (``core.metrics``), for jupyter_server's ``/metrics`` and the hub's.

A collector reads the counters when scraped, so nothing is registered per server instance under a fixed name
(``prometheus_client`` refuses a name twice in one registry; tests start many servers in one process).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .core import STATES, Broker
from .core.metrics import Histogram

__all__ = ["BrokerCollector"]


def _buckets(hist: Histogram) -> list[tuple[str, float]]:
    return [(floatToGoString(bound), float(count)) for bound, count in hist.cumulative()]  # type: ignore[no-untyped-call]


class BrokerCollector(Collector):
    """Collects the ``jupyter_sse_*`` metrics of the broker ``get_broker()`` returns (none when it returns None)."""

    def __init__(self, get_broker: Callable[[], Broker | None]) -> None:
        self._get_broker = get_broker

    def describe(self) -> list[Metric]:
        return []  # the names are fixed, but a registry must not check them against a broker that is not there

    def collect(self) -> Iterator[Metric]:
        broker = self._get_broker()
        if broker is None:
            return
        m = broker.metrics
        jobs = GaugeMetricFamily("jupyter_sse_jobs", "Jobs the server keeps, by state.", labels=["state"])
        by_state = Counter(entry.job.state for entry in broker.store.entries())
        for state in STATES:
            jobs.add_metric([state], by_state.get(state, 0))
        yield jobs
        durations = HistogramMetricFamily(
            "jupyter_sse_job_duration_seconds", "How long jobs ran, by the state they ended in.", labels=["state"]
        )
        for state, hist in sorted(m.job_duration_seconds.items()):
            durations.add_metric([state], _buckets(hist), hist.sum)
        yield durations
        yield CounterMetricFamily(
            "jupyter_sse_updates_accepted", "Update requests (POST updates) applied.", value=m.updates_accepted
        )
        refused = CounterMetricFamily(
            "jupyter_sse_updates_refused", "Update requests refused, by the protocol's error name.", labels=["reason"]
        )
        for reason, count in sorted(m.updates_refused.items()):
            refused.add_metric([reason], count)
        yield refused
        yield CounterMetricFamily(
            "jupyter_sse_events_delivered", "SSE events handed to subscribers' streams.", value=m.events_delivered
        )
        yield GaugeMetricFamily("jupyter_sse_subscribers", "Open event streams.", value=broker.subscriber_count)
        yield CounterMetricFamily(
            "jupyter_sse_slow_subscribers_dropped",
            "Event streams closed because the subscriber did not read within the send timeout.",
            value=m.slow_subscribers_dropped,
        )
        store = HistogramMetricFamily("jupyter_sse_store_write_seconds", "Time the job store took to write changes.")
        store.add_metric([], _buckets(m.store_write_seconds), m.store_write_seconds.sum)
        yield store
        yield CounterMetricFamily(
            "jupyter_sse_notifications_sent", "Notifications every target accepted.", value=m.notifications_sent
        )
        yield CounterMetricFamily(
            "jupyter_sse_notifications_failed",
            "Notifications not delivered (a target refused or timed out, or the queue was full).",
            value=m.notifications_failed,
        )
