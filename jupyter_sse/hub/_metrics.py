"""The hub's ``/metrics``: its broker's ``jupyter_sse_*`` metrics and the process's own, in Prometheus' text format.

Behind the hub's token like every route (``TokenAuth``): only whoever holds it, the hub's admin, can scrape.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from starlette.responses import Response

from .._prometheus import BrokerCollector
from ..core import Broker
from ..core.transitions import watch_state_changes

__all__ = ["add_metrics_route"]


def add_metrics_route(app: FastAPI, broker: Broker) -> CollectorRegistry:
    # A registry per app, not prometheus_client's global one: two hubs in one process (tests) stay apart.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(lambda: broker))
    ProcessCollector(registry=registry)
    watch_state_changes(broker, [broker.metrics.observe_state_change])  # job durations

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return registry
