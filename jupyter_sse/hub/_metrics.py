"""The hub's ``/metrics``: its broker's ``jupyter_sse_*`` metrics and the process's own, in Prometheus' text format.

Authenticated like every route, and for admins only: the counts cover every user's jobs.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import Annotated, cast

from fastapi import Depends, FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from starlette.responses import Response

from .._prometheus import BrokerCollector
from ..core import Broker, ProtocolError
from ..core.store import JobEntry
from ..core.transitions import watch_state_changes
from ._identity import Identity, caller
from ._tenants import Tenants

__all__ = ["add_metrics_route"]


class _AllUsers:
    """What the collector reads of a broker, over every user's broker (they share one metrics object)."""

    def __init__(self, tenants: Tenants, broker: Broker) -> None:
        self._tenants = tenants
        self.metrics = broker.metrics
        self.store = self

    def entries(self) -> Iterator[JobEntry]:
        return chain.from_iterable(one.store.entries() for one in self._tenants)

    @property
    def subscriber_count(self) -> int:
        return sum(one.subscriber_count for one in self._tenants)


def add_metrics_route(app: FastAPI, broker: Broker, tenants: Tenants | None = None) -> CollectorRegistry:
    # A registry per app, not prometheus_client's global one: two hubs in one process (tests) stay apart.
    registry = CollectorRegistry(auto_describe=False)
    view = cast(Broker, _AllUsers(tenants, broker)) if tenants is not None else broker
    registry.register(BrokerCollector(lambda: view))
    ProcessCollector(registry=registry)
    watch_state_changes(broker, [broker.metrics.observe_state_change])  # job durations

    @app.get("/metrics", include_in_schema=False)
    async def metrics(who: Annotated[Identity, Depends(caller)]) -> Response:
        if not who.admin:
            raise ProtocolError(403, "forbidden", "the metrics are for admins")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return registry
