"""Opening connections (_connector): the configure callback, a password
that is a callable, and the server's connection limits (_limits)."""

from __future__ import annotations

import logging
import time
from typing import Any

import MySQLdb
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_mysqlpool import (
    Cursor,
    Pool,
    PoolStartupError,
    get_pool,
    mysql_pool_lifespan,
)

from .servers import Database


def time_zone(pool: Pool) -> tuple[int, str]:
    with pool.fetch() as cursor:
        cursor.execute("SELECT CONNECTION_ID(), @@time_zone")
        session, zone = cursor.fetchone()
    return int(session), str(zone)


def test_configure_runs_once_on_each_new_connection_and_after_a_reset(
    db: Database,
) -> None:
    configured: list[int] = []

    def utc(conn: Any) -> None:
        configured.append(conn.thread_id())
        conn.cursor().execute("SET time_zone = '+00:00'")

    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=2, configure=utc))

    @app.get("/zone")
    def zone(cursor: Cursor) -> list[Any]:
        cursor.execute("SELECT CONNECTION_ID(), @@time_zone")
        return list(cursor.fetchone())

    @app.get("/change")
    def change(cursor: Cursor) -> None:
        # A borrower changes the session: the pool resets it (back to the
        # server's defaults) before lending it again.
        cursor.execute("SET time_zone = '+05:00'")

    with TestClient(app) as client:
        pool = get_pool(app)
        assert sorted(configured) == sorted(db.connection_ids())
        for _ in range(4):
            assert client.get("/zone").json()[1] == "+00:00"
        assert client.get("/change").status_code == 200
        deadline = time.monotonic() + 5
        while pool.stats().resets < 1:  # the housekeeper resets it
            assert time.monotonic() < deadline, "no reset"
            time.sleep(0.01)
        for _ in range(4):
            assert client.get("/zone").json()[1] == "+00:00"
        stats = pool.stats()
        assert stats.opened == 2  # reset, not reopened
        assert len(configured) == 2 + stats.resets
        # A new connection (beyond size) is configured too.
        with pool.fetch() as first, pool.fetch() as second, pool.fetch() as third:
            for cursor in (first, second, third):
                cursor.execute("SELECT @@time_zone")
                assert cursor.fetchone() == ("+00:00",)
        assert len(configured) == 3 + pool.stats().resets


def test_a_failing_configure_fails_startup_at_once_without_the_password(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(conn: Any) -> None:
        conn.cursor().execute("SET time_zone = 'Nowhere/Atlantis'")

    app = FastAPI(
        lifespan=mysql_pool_lifespan(db.cfg, size=2, timeout=10, configure=broken)
    )
    started = time.monotonic()
    with pytest.raises(PoolStartupError, match="configure") as raised, TestClient(app):
        pass
    assert time.monotonic() - started < 2  # no retrying a bug for 10 s
    assert "1298" in str(raised.value)  # ER_UNKNOWN_TIME_ZONE
    assert db.connection_count(settle_at=0) == 0
    assert "configure() failed" in caplog.text
    assert db.password not in caplog.text + str(raised.value)


def test_a_failing_configure_is_an_unavailable_connection_and_an_error(
    db: Database,
) -> None:
    calls = 0

    def flaky(conn: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("not today")

    with Pool(db.cfg, size=0, configure=flaky) as pool:
        with pytest.raises(ConnectionError, match="configure"), pool.fetch():
            pass
        assert pool.stats().errors == 1
        assert db.connection_count(settle_at=0) == 0
        time.sleep(pool.connect_backoff.until - time.monotonic())  # fail-fast ends
        with pool.fetch() as cursor:
            cursor.execute("SELECT 1")
        assert calls == 2


def test_a_password_callable_is_called_for_each_new_connection(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens: list[str] = []

    def token() -> str:
        tokens.append(db.password)
        return db.password

    cfg = {**db.cfg, "password": token}
    app = FastAPI(lifespan=mysql_pool_lifespan(cfg, size=2))
    with TestClient(app):
        pool = get_pool(app)
        with pool.fetch(), pool.fetch(), pool.fetch():
            pass
        assert len(tokens) == pool.stats().opened == 3
        shown = [repr(pool), repr(pool.config), str(pool.config), caplog.text]
    for text in shown:
        assert db.password not in text
        assert "token" not in text


def test_a_failing_password_callable_is_a_connection_error_that_hides_it(
    db: Database,
) -> None:
    def token() -> str:
        raise OSError("the token service is down")

    with pytest.raises(PoolStartupError, match="password callable raised OSError"):
        Pool({**db.cfg, "password": token}, size=1, timeout=0.2)
    wrong = {**db.cfg, "password": lambda: db.password + "-expired"}
    started = time.monotonic()
    with pytest.raises(PoolStartupError, match="1045") as raised:
        Pool(wrong, size=1, timeout=10)
    assert time.monotonic() - started < 2  # a login error is not retried
    assert db.password not in str(raised.value)
    with pytest.raises(PoolStartupError, match="returned int"):
        Pool({**db.cfg, "password": lambda: 42}, size=1, timeout=0.2)


def test_max_size_beyond_the_users_connection_limit_is_warned_about(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    db.query(f"ALTER USER '{db.user}'@'%' WITH MAX_USER_CONNECTIONS 3")
    with Pool(db.cfg, size=1, max_size=3):
        pass
    assert "exceeds" not in caplog.text
    with Pool(db.cfg, size=1, max_size=4) as pool:
        assert pool.server_limits.limits is not None
        assert pool.server_limits.limits[1] == 3
    warnings = [r for r in caplog.records if "exceeds" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "max_size=4" in warnings[0].getMessage()
    assert "max_user_connections=3" in warnings[0].getMessage()


def test_max_size_beyond_max_connections_is_warned_about_at_startup(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    max_connections = int(db.scalar("SELECT @@max_connections"))
    app = FastAPI(
        lifespan=mysql_pool_lifespan(db.cfg, size=1, max_size=max_connections + 1)
    )
    with TestClient(app):
        pass
    (warning,) = [r.getMessage() for r in caplog.records if "exceeds" in r.getMessage()]
    assert f"max_connections={max_connections}" in warning
    assert "max_user_connections" not in warning
    assert db.password not in warning


def test_the_limits_query_failing_fails_nothing(db: Database) -> None:
    """Read with a round trip of its own: a server that refuses it (a proxy
    that knows no such variable) leaves the connection alone."""
    with Pool(db.cfg, size=1) as pool:
        with pool.fetch() as cursor:
            limits = pool.server_limits
            limits.limits = None
            limits.read(cursor.connection)
            assert limits.limits is not None
        cursor = MySQLdb.connect(**db.cfg).cursor()
        cursor.connection.close()
        limits.limits = None
        limits.read(cursor.connection)  # a closed connection: no error either
        assert limits.limits is None
