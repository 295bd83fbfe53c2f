"""mysql_pool_lifespan: the pool's life follows the app's, inside existing apps."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from starlette.middleware.base import BaseHTTPMiddleware

from fastapi_mysqlpool import (
    Cursor,
    PoolStartupError,
    get_pool,
    mysql_pool_lifespan,
)

from .servers import Database


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_startup_opens_size_connections_and_shutdown_closes_them_all(
    db: Database,
) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=3))

    @app.get("/")
    def read(cursor: Cursor) -> int:
        cursor.execute("SELECT 1")
        return int(cursor.fetchone()[0])

    with TestClient(app) as client:
        assert db.connection_count(settle_at=3) == 3
        assert client.get("/").json() == 1
        pool = get_pool(app)
    assert db.connection_count(settle_at=0) == 0
    stats = pool.stats()
    assert stats.opened == stats.closed == 3
    assert pool.closed


def test_url_config(db: Database) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.url + "?charset=utf8mb4", size=1))

    @app.get("/")
    def read(cursor: Cursor) -> list[str]:
        cursor.execute("SELECT CURRENT_USER(), @@character_set_client")
        return list(cursor.fetchone())

    with TestClient(app) as client:
        user, charset = client.get("/").json()
    assert user.startswith(db.user + "@")
    assert charset == "utf8mb4"


def test_without_fillup_the_app_starts_while_the_database_is_down() -> None:
    cfg = {"host": "127.0.0.1", "port": closed_port(), "user": "nobody"}
    app = FastAPI(lifespan=mysql_pool_lifespan(cfg, fillup=False))

    @app.get("/")
    def read(cursor: Cursor) -> None:
        raise AssertionError("never reached")

    with TestClient(app) as client:
        response = client.get("/")
    assert response.status_code == 503
    assert response.json()["code"] == 1


@pytest.mark.parametrize("wrong", ["password", "port"])
def test_startup_failure_is_quick_and_names_the_server_not_the_password(
    db: Database, wrong: str
) -> None:
    cfg = dict(db.cfg)
    if wrong == "password":
        cfg["password"] = "not-" + db.password
    else:
        cfg["port"] = closed_port()
    app = FastAPI(lifespan=mysql_pool_lifespan(cfg, size=2, timeout=1))
    started = time.monotonic()
    with pytest.raises(PoolStartupError) as raised, TestClient(app):
        pass
    elapsed = time.monotonic() - started
    message = str(raised.value)
    assert elapsed < 1 + 2  # timeout plus a little, never a hang
    assert f"{db.user}@127.0.0.1:{cfg['port']}" in message
    assert "within 1 s" in message
    assert cfg["password"] not in message
    assert db.password not in message
    if wrong == "password":
        assert "(1045)" in message
        assert elapsed < 1  # a refused login is final: no retrying
    assert db.connection_count(settle_at=0) == 0


def test_an_existing_lifespan_runs_inside_the_pool_and_keeps_its_state(
    db: Database,
) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def own_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # The pool is already open: the app may prepare its schema here.
        with get_pool(app).fetch() as cursor:
            cursor.execute("SELECT 41 + 1")
            answer = cursor.fetchone()[0]
        events.append("startup")
        yield {"answer": answer, "greeting": "hello"}
        events.append("shutdown")
        assert db.connection_count() > 0  # still open while the app shuts down

    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1, lifespan=own_lifespan))

    @app.get("/")
    def read(request: Request, cursor: Cursor) -> list[Any]:
        return [request.state.answer, request.state.greeting]

    with TestClient(app) as client:
        assert events == ["startup"]
        assert client.get("/").json() == [42, "hello"]
    assert events == ["startup", "shutdown"]
    assert db.connection_count(settle_at=0) == 0


def test_a_failing_app_lifespan_closes_the_pool(db: Database) -> None:
    @asynccontextmanager
    async def broken(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("app startup failed")
        yield

    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=2, lifespan=broken))
    with pytest.raises(RuntimeError, match="app startup failed"), TestClient(app):
        pass
    assert db.connection_count(settle_at=0) == 0


def test_middleware_and_other_handlers_of_the_app_keep_working(db: Database) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    class Tagged(Exception):
        pass

    @app.exception_handler(Tagged)
    async def tagged(request: Request, exc: Tagged) -> Any:
        from fastapi.responses import PlainTextResponse

        return PlainTextResponse("tagged", status_code=418)

    async def stamp(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["x-stamp"] = "yes"
        return response

    app.add_middleware(BaseHTTPMiddleware, dispatch=stamp)

    @app.get("/tagged")
    def raise_tagged(cursor: Cursor) -> None:
        raise Tagged

    @app.get("/sql")
    def bad_sql(cursor: Cursor) -> None:
        cursor.execute("SELEC 1")

    with TestClient(app) as client:
        response = client.get("/tagged")
        assert (response.status_code, response.text) == (418, "tagged")
        assert response.headers["x-stamp"] == "yes"
        response = client.get("/sql")
        assert response.status_code == 500
        assert response.json()["code"] == 0
        assert response.headers["x-stamp"] == "yes"


def test_the_app_can_be_started_again(db: Database) -> None:
    """As TestClient does per test: each start has a fresh pool, none leaks."""
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.get("/")
    def read(cursor: Cursor) -> int:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])

    pools = []
    for _ in range(3):
        with TestClient(app) as client:
            assert client.get("/").status_code == 200
            assert client.get("/missing").status_code == 404
            pools.append(get_pool(app))
        assert db.connection_count(settle_at=0) == 0
    assert len({id(pool) for pool in pools}) == 3
    with pytest.raises(RuntimeError, match="no MySQL pool"):
        get_pool(app)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": -1}, "size must be >= 0"),
        ({"size": 5, "max_size": 2}, r"max_size \(2\) must be >= size \(5\)"),
        ({"max_size": 0}, "max_size must be >= 1"),
        ({"acquire_timeout": 0}, "acquire_timeout must be > 0"),
        ({"shutdown_timeout": -1}, "shutdown_timeout must be >= 0"),
        ({"max_lifetime": 0}, "max_lifetime must be > 0"),
    ],
)
def test_bad_options_fail_where_the_app_is_defined(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        mysql_pool_lifespan({"host": "127.0.0.1"}, **options)


def test_bad_cfg_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="unsupported database URL scheme") as raised:
        mysql_pool_lifespan("postgres://user:s3cret@host/db")
    assert "s3cret" not in str(raised.value)
    with pytest.raises(TypeError, match="cfg must be a dict"):
        mysql_pool_lifespan(42)  # type: ignore[arg-type]


def test_the_apps_middleware_is_created_once(db: Database) -> None:
    """Handlers go into the stack Starlette built: nothing is built twice."""
    created: list[object] = []

    class Counted:
        def __init__(self, app: Any) -> None:
            self.app = app
            created.append(self)

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    app.add_middleware(Counted)

    @app.get("/")
    def read(cursor: Cursor) -> None:
        cursor.execute("SELEC 1")

    with TestClient(app) as client:
        assert client.get("/").json()["code"] == 0
    assert len(created) == 1


def test_without_cfg_the_url_comes_from_database_url(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    app = FastAPI(lifespan=mysql_pool_lifespan(size=1))  # importable without it
    # Replicas take what they lack from the primary's config: at startup too.
    mysql_pool_lifespan(replicas=[{"host": "replica.invalid"}])

    @app.get("/user")
    def user(cursor: Cursor) -> str:
        cursor.execute("SELECT CURRENT_USER()")
        return str(cursor.fetchone()[0])

    with pytest.raises(RuntimeError, match="DATABASE_URL"), TestClient(app):
        pass
    monkeypatch.setenv("DATABASE_URL", db.url)
    with TestClient(app) as client:
        assert client.get("/user").json().startswith(db.user + "@")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:secret@h/db")
    with pytest.raises(ValueError, match="DATABASE_URL") as raised, TestClient(app):
        pass
    assert "secret" not in str(raised.value)
