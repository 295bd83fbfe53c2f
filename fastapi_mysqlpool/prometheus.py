"""Prometheus metrics of a pool, read from :meth:`Pool.stats` at scrape time
(requests pay nothing). Needs the ``[prometheus]`` extra::

    from prometheus_client import REGISTRY, make_asgi_app
    from fastapi_mysqlpool.prometheus import PoolCollector

    REGISTRY.register(PoolCollector(app))
    app.mount("/metrics", make_asgi_app())

The metrics, each labelled ``pool`` (the pool's ``name`` option, ``default``
unless named): gauges ``mysqlpool_connections{state="idle"|"used"}``,
``mysqlpool_connections_max``, ``mysqlpool_pending_requests``; counters
``mysqlpool_connections_opened_total``, ``mysqlpool_connections_closed_total``,
``mysqlpool_connection_errors_total``, ``mysqlpool_acquires_total``,
``mysqlpool_acquire_timeouts_total``, ``mysqlpool_acquire_wait_seconds_total``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._context import get_pool
from ._pool import Pool
from ._stats import PoolStats

__all__ = ["PoolCollector"]

_LABELS = ("pool",)


class PoolCollector(Collector):
    """A ``prometheus_client`` collector of one pool: pass the pool, or the app
    started with ``mysql_pool_lifespan`` (its pool is looked up at each
    scrape; while the app is not running, the collector yields nothing)."""

    def __init__(self, app_or_pool: Any) -> None:
        self._source = app_or_pool

    def _pool(self) -> Pool | None:
        if isinstance(self._source, Pool):
            return self._source
        try:
            return get_pool(self._source)
        except RuntimeError:  # not started yet, or stopped
            return None

    def describe(self) -> Iterator[Metric]:
        """The metrics' names, without samples (so that registering needs no
        running pool)."""
        return _families(None, "")

    def collect(self) -> Iterator[Metric]:
        pool = self._pool()
        if pool is None:
            return iter(())
        return _families(pool.stats(), pool.name)


def _families(stats: PoolStats | None, pool: str) -> Iterator[Metric]:
    connections = GaugeMetricFamily(
        "mysqlpool_connections",
        "Open connections, idle or used (lent out).",
        labels=(*_LABELS, "state"),
    )
    if stats is not None:
        connections.add_metric([pool, "idle"], stats.idle)
        connections.add_metric([pool, "used"], stats.in_use)
    yield connections
    gauges = (
        ("mysqlpool_connections_max", "The most connections open at once.", "max_size"),
        (
            "mysqlpool_pending_requests",
            "Callers waiting for a connection.",
            "waiting",
        ),
    )
    for name, documentation, field in gauges:
        gauge = GaugeMetricFamily(name, documentation, labels=_LABELS)
        if stats is not None:
            gauge.add_metric([pool], getattr(stats, field))
        yield gauge
    counters = (
        ("mysqlpool_connections_opened", "Connections opened.", "opened"),
        ("mysqlpool_connections_closed", "Connections closed.", "closed"),
        (
            "mysqlpool_connection_errors",
            "Failed connection attempts and connections found dead.",
            "errors",
        ),
        ("mysqlpool_acquires", "Connections handed out.", "requests"),
        (
            "mysqlpool_acquire_timeouts",
            "Callers that got no connection within acquire_timeout.",
            "timeouts",
        ),
        (
            "mysqlpool_acquire_wait_seconds",
            "Seconds callers spent waiting for a connection.",
            "wait_time",
        ),
    )
    for name, documentation, field in counters:
        counter = CounterMetricFamily(name, documentation, labels=_LABELS)
        if stats is not None:
            counter.add_metric([pool], getattr(stats, field))
        yield counter
