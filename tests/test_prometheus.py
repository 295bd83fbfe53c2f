"""fastapi_mysqlpool.prometheus: a collector read at scrape time, through a
real app and a real registry."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest, make_asgi_app
from prometheus_client.parser import text_string_to_metric_families

from fastapi_mysqlpool import (
    AsyncCursor,
    Pool,
    PoolStats,
    get_pool,
    mysql_pool_lifespan,
)
from fastapi_mysqlpool.prometheus import PoolCollector

from .servers import Database

NAMES = (
    "mysqlpool_connections",
    "mysqlpool_connections_max",
    "mysqlpool_pending_requests",
    "mysqlpool_connections_opened_total",
    "mysqlpool_connections_closed_total",
    "mysqlpool_connection_errors_total",
    "mysqlpool_acquires_total",
    "mysqlpool_acquire_timeouts_total",
    "mysqlpool_acquire_wait_seconds_total",
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of *text* (the exposition format), by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def expected(stats: PoolStats, pool: str) -> dict[Any, float]:
    label = (("pool", pool),)
    return {
        ("mysqlpool_connections", (("pool", pool), ("state", "idle"))): stats.idle,
        ("mysqlpool_connections", (("pool", pool), ("state", "used"))): stats.in_use,
        ("mysqlpool_connections_max", label): stats.max_size,
        ("mysqlpool_pending_requests", label): stats.waiting,
        ("mysqlpool_connections_opened_total", label): stats.opened,
        ("mysqlpool_connections_closed_total", label): stats.closed,
        ("mysqlpool_connection_errors_total", label): stats.errors,
        ("mysqlpool_acquires_total", label): stats.requests,
        ("mysqlpool_acquire_timeouts_total", label): stats.timeouts,
        ("mysqlpool_acquire_wait_seconds_total", label): stats.wait_time,
    }


def test_a_mounted_metrics_app_serves_the_pools_stats(db: Database) -> None:
    registry = CollectorRegistry()
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=2, max_size=4))
    registry.register(PoolCollector(app))  # before the app starts
    app.mount("/metrics", make_asgi_app(registry=registry))

    @app.get("/one")
    async def one(cursor: AsyncCursor) -> None:
        await cursor.execute("SELECT 1")

    assert samples(generate_latest(registry).decode()) == {}  # not started
    with TestClient(app) as client:
        for _ in range(3):
            assert client.get("/one").status_code == 200
        scraped = client.get("/metrics/")
        assert scraped.status_code == 200
        stats = get_pool(app).stats()
        assert stats.requests == 3
        assert stats.opened == 2
        assert samples(scraped.text) == expected(stats, "default")
        types = {f.name: f.type for f in text_string_to_metric_families(scraped.text)}
        assert types["mysqlpool_connections"] == "gauge"
        assert types["mysqlpool_acquires"] == "counter"
    # Stopped: the collector yields nothing, and scraping does not fail.
    assert samples(generate_latest(registry).decode()) == {}


def test_the_pool_label_is_the_pools_name(db: Database) -> None:
    registry = CollectorRegistry()
    with Pool(db.cfg, size=1, max_size=1, name="orders", acquire_timeout=0.05) as pool:
        registry.register(PoolCollector(pool))
        held = pool.acquire(1)
        try:
            with pytest.raises(ConnectionError), pool.fetch():
                pass
            found = samples(generate_latest(registry).decode())
            stats = pool.stats()
        finally:
            pool.checkin(held, reusable=True)
    assert stats.timeouts == 1
    assert stats.wait_time > 0
    assert found == expected(stats, "orders")
    assert {name for name, _ in found} == set(NAMES)
