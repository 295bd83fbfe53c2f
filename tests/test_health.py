"""health_router (_health): liveness without the database, readiness with it."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_mysqlpool import (
    Cursor,
    PoolClosed,
    get_pool,
    health_router,
    mysql_pool_lifespan,
)
from fastapi_mysqlpool._health import probe

from .proxy import Proxy
from .servers import Database, serve


def health_app(cfg: Any, probe_timeout: float = 0.5, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=mysql_pool_lifespan(cfg, **options))
    app.include_router(health_router(timeout=probe_timeout))
    return app


def assert_unavailable(response: httpx.Response, code: int, db: Database) -> None:
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["code"] == code
    assert body["message"] in {
        "Database Server Is Not Available",
        "Database Server Is Busy",
    }
    assert_nothing_secret(response, db)


def do_statements(db: Database) -> int:
    """DO statements the server ran (the suite runs one test at a time)."""
    return int(db.query("SHOW GLOBAL STATUS LIKE 'Com_do'")[0][1])


def assert_nothing_secret(response: httpx.Response, db: Database) -> None:
    for secret in (db.password, db.user, str(db.server.port), db.server.database):
        assert secret not in response.text


def test_ready_after_a_round_trip_with_the_pools_stats(db: Database) -> None:
    app = health_app(db.cfg, size=1)
    with TestClient(app) as client:
        pool = get_pool(app)
        before = do_statements(db)
        response = client.get("/readyz")
        assert do_statements(db) == before + 1  # one round trip: DO 1
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ready"
        assert body["pool"]["size"] == 1
        assert body["pool"]["max_size"] == pool.max_size
        assert body["pool"]["in_use"] == 0  # given back
        assert_nothing_secret(response, db)
        # The probe borrowed the idle connection: nothing new was opened.
        assert pool.stats().opened == 1
        assert client.get("/healthz").json() == {"status": "ok"}


def test_a_server_that_does_not_answer_is_not_ready_within_the_timeout(
    db: Database,
) -> None:
    with Proxy(db.server.host, db.server.port) as proxy:
        app = health_app(proxy.config(db.cfg), size=1)
        with TestClient(app) as client:
            assert client.get("/readyz").status_code == 200
            proxy.hold()  # the server's answers stop coming
            try:
                started = time.monotonic()
                response = client.get("/readyz")
                elapsed = time.monotonic() - started
                assert_unavailable(response, 1, db)
                assert 0.4 < elapsed < 2.5  # timeout=0.5 (and a loaded machine)
                assert client.get("/healthz").status_code == 200
            finally:
                proxy.release()
            # The silent connection was closed; a new one answers.
            assert client.get("/readyz").status_code == 200


def test_a_connect_that_gets_no_answer_is_unavailable_not_busy(
    db: Database,
) -> None:
    with Proxy(db.server.host, db.server.port) as proxy:
        app = health_app(proxy.config(db.cfg), size=0, fillup=False)
        with TestClient(app) as client:
            proxy.hold()  # no handshake: the connect hangs
            try:
                started = time.monotonic()
                assert_unavailable(client.get("/readyz"), 1, db)
                assert time.monotonic() - started < 2.5
            finally:
                proxy.release()
            assert client.get("/readyz").status_code == 200


@pytest.mark.slow
def test_a_stopped_server_is_unavailable_and_liveness_does_not_care(
    fault_db: Database,
) -> None:
    app = health_app(fault_db.cfg, size=2)
    with TestClient(app) as client:
        pool = get_pool(app)
        assert client.get("/readyz").status_code == 200
        fault_db.server.stop()
        try:
            for _ in range(3):
                started = time.monotonic()
                assert_unavailable(client.get("/readyz"), 1, fault_db)
                assert time.monotonic() - started < 1
                assert client.get("/healthz").json() == {"status": "ok"}
        finally:
            fault_db.server.start()
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "never ready again"
            time.sleep(0.05)
        assert pool.stats().size <= pool.max_size


def test_a_full_pool_is_busy_not_broken_and_the_probe_never_queues(
    db: Database,
) -> None:
    """Every slot in use: ready at once, no connection opened beyond
    max_size, nothing taken from the queue."""
    app = health_app(db.cfg, probe_timeout=5, size=1, max_size=1, acquire_timeout=5)
    holding = threading.Event()
    release = threading.Event()

    @app.get("/hold")
    def hold(cursor: Cursor) -> None:
        cursor.execute("SELECT 1")
        holding.set()
        release.wait(10)

    with serve(app) as url, httpx.Client(base_url=url) as client:
        pool = get_pool(app)
        holder = threading.Thread(target=client.get, args=("/hold",))
        holder.start()
        try:
            assert holding.wait(10)
            started = time.monotonic()
            response = client.get("/readyz")
            assert time.monotonic() - started < 2  # did not wait for a slot (5 s)
            assert response.status_code == 200, response.text
            assert response.json()["pool"]["in_use"] == 1
            stats = pool.stats()
            assert (stats.opened, stats.waiting, stats.timeouts) == (1, 0, 0)
            assert db.connection_count() == 1
        finally:
            release.set()
            holder.join()


def test_a_server_refusing_connections_answers_busy(db: Database) -> None:
    """The user's connection limit is reached by others: code 2."""
    app = health_app(db.cfg, size=0, fillup=False)
    with TestClient(app) as client:
        db.query(f"ALTER USER '{db.user}'@'%' WITH MAX_USER_CONNECTIONS 1")
        other = db.server.connect(user=db.user, password=db.password)
        try:
            assert_unavailable(client.get("/readyz"), 2, db)
        finally:
            other.close()
        assert client.get("/readyz").status_code == 200


@pytest.mark.anyio
async def test_a_closed_pool_is_not_ready(db: Database) -> None:
    app = health_app(db.cfg, size=1)
    with TestClient(app):
        pool = get_pool(app)
    with pytest.raises(PoolClosed):
        await probe(pool, 0.5)


def test_the_routes_stay_out_of_the_openapi_schema_unless_asked() -> None:
    app = FastAPI()
    app.include_router(health_router())
    assert app.openapi()["paths"] == {}
    shown = FastAPI()
    shown.include_router(
        health_router(live="/live", ready=None, include_in_schema=True)
    )
    assert set(shown.openapi()["paths"]) == {"/live"}
    with TestClient(shown) as client:  # no pool needed: liveness alone
        assert client.get("/live").json() == {"status": "ok"}
    with pytest.raises(ValueError, match="timeout"):
        health_router(timeout=0)
