"""Issue 16, the app side: mounted apps, websockets, URL quoting, a released
cursor's connection, statements over max_allowed_packet, TLS that must be
real, one start at a time, trio, and the default max_size."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import MySQLdb
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from fastapi_mysqlpool import (
    AsyncCursor,
    AsyncDictCursor,
    Cursor,
    CursorReleasedError,
    DictCursor,
    PoolStartupError,
    get_pool,
    mysql_pool_lifespan,
)
from fastapi_mysqlpool._pool import Pool
from fastapi_mysqlpool.testing import TemporaryServer

from .servers import Database

ERROR = {"code": 0, "message": "Something Went Wrong"}
UNAVAILABLE = {"code": 1, "message": "Database Server Is Not Available"}
BUSY = {"code": 2, "message": "Database Server Is Busy"}


# -- A. mounted apps get the JSON error answers --------------------------------


class PassThrough:
    """A pure ASGI middleware, as a Mount may wrap an app in."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def database_routes(app: FastAPI | APIRouter) -> None:
    @app.get("/sync/bad-sql")
    def sync_bad_sql(cursor: Cursor) -> None:
        cursor.execute("SELEC secret_column")

    @app.get("/async/bad-sql")
    async def async_bad_sql(cursor: AsyncCursor) -> None:
        await cursor.execute("SELEC secret_column")

    @app.get("/sync/ok")
    def sync_ok(cursor: Cursor) -> int:
        cursor.execute("SELECT 1")
        return int(cursor.fetchone()[0])

    @app.get("/async/ok")
    async def async_ok(cursor: AsyncCursor) -> int:
        await cursor.execute("SELECT 1")
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


def mounted_apps(db: Database) -> FastAPI:
    app = FastAPI(
        lifespan=mysql_pool_lifespan(db.cfg, size=1, max_size=1, acquire_timeout=0.2)
    )
    # FastAPI sub-app, a sub-app mounted in it, a Router mount holding a
    # FastAPI app, a sub-app behind a middleware, a plain Starlette app.
    sub, nested, in_router, wrapped = FastAPI(), FastAPI(), FastAPI(), FastAPI()
    for each in (sub, nested, in_router, wrapped):
        database_routes(each)
    sub.mount("/v2", nested)
    router = APIRouter()
    database_routes(router)
    router_mount = Router(routes=[Mount("/inner", app=in_router)])
    router_mount.mount("/api", APIRouter(routes=router.routes))

    async def starlette_bad_sql(request: Request) -> Response:
        async with get_pool(request).cursor() as cursor:
            await cursor.execute("SELEC secret_column")
        raise AssertionError("not reached")

    plain = Starlette(routes=[Route("/async/bad-sql", starlette_bad_sql)])
    app.mount("/v1", sub)
    app.mount("/r", router_mount)
    app.router.routes.append(
        Mount("/mw", app=wrapped, middleware=[_middleware(PassThrough)])
    )
    app.mount("/plain", plain)
    return app


def _middleware(cls: Any) -> Any:
    from starlette.middleware import Middleware

    return Middleware(cls)


MOUNTS = ["/v1", "/v1/v2", "/r/inner", "/r/api", "/mw"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_mounted_apps_answer_database_errors_in_json(db: Database, kind: str) -> None:
    app = mounted_apps(db)
    with TestClient(app, raise_server_exceptions=False) as client:
        for prefix in MOUNTS:
            response = client.get(f"{prefix}/{kind}/bad-sql")
            assert (response.status_code, response.json()) == (500, ERROR), prefix
            assert "retry-after" not in response.headers
            assert client.get(f"{prefix}/{kind}/ok").json() == 1
        if kind == "async":
            response = client.get("/plain/async/bad-sql")
            assert (response.status_code, response.json()) == (500, ERROR)
        # Pool exhaustion: the only connection is held here.
        with get_pool(app).fetch():
            for prefix in MOUNTS:
                response = client.get(f"{prefix}/{kind}/ok")
                assert (response.status_code, response.json()) == (503, BUSY)
                assert response.headers["retry-after"] == "1"
        assert client.get(f"/v1/v2/{kind}/ok").json() == 1


def test_a_mounted_apps_own_handlers_still_win(db: Database) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    sub = FastAPI()
    database_routes(sub)

    @sub.exception_handler(MySQLdb.Error)
    async def own(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"mine": True}, status_code=418)

    app.mount("/v1", sub)
    with TestClient(app) as client:
        response = client.get("/v1/async/bad-sql")
    assert (response.status_code, response.json()) == (418, {"mine": True})
    assert sub.exception_handlers[MySQLdb.Error] is own


def test_a_mounted_app_that_served_before_gets_the_handlers(db: Database) -> None:
    """Its middleware stack was built (and lacks them) before the pool started."""
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    sub = FastAPI()
    database_routes(sub)
    app.mount("/v1", sub)
    with TestClient(sub, raise_server_exceptions=False) as alone:
        assert alone.get("/ping").status_code == 404  # builds sub's stack
    assert sub.middleware_stack is not None
    with TestClient(app) as client:
        response = client.get("/v1/sync/bad-sql")
    assert (response.status_code, response.json()) == (500, ERROR)


# -- B. websockets -------------------------------------------------------------


@pytest.fixture
def table(db: Database) -> str:
    return db.create_table("rows", "id INT PRIMARY KEY")


def rows(db: Database, table: str) -> list[int]:
    return [row[0] for row in db.query(f"SELECT id FROM {table} ORDER BY id")]


def websocket_app(db: Database, table: str, kept: list[Any]) -> FastAPI:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    insert = f"INSERT INTO {table} (id) VALUES (%s)"

    @app.websocket("/async/{id}")
    async def with_async(websocket: WebSocket, id: int, cursor: AsyncCursor) -> None:
        kept.append(cursor)
        await websocket.accept()
        await cursor.execute(insert, (id,))
        if id < 0:
            await cursor.execute("SELEC 1")
        await websocket.send_text("inserted")
        await websocket.close()

    @app.websocket("/async-dict/{id}")
    async def with_dict(websocket: WebSocket, id: int, cursor: AsyncDictCursor) -> None:
        kept.append(cursor)
        await websocket.accept()
        await cursor.execute(insert, (id,))
        await cursor.execute("SELECT %s AS id", (id,))
        await websocket.send_json(await cursor.fetchone())
        await websocket.close()

    @app.websocket("/sync/{id}")
    async def with_sync(websocket: WebSocket, id: int, cursor: DictCursor) -> None:
        kept.append(cursor)
        await websocket.accept()
        cursor.execute(insert, (id,))
        await websocket.send_text("inserted")
        await websocket.close()

    return app


def test_websocket_endpoints_get_cursors_committed_when_they_return(
    db: Database, table: str
) -> None:
    kept: list[Any] = []
    app = websocket_app(db, table, kept)
    with TestClient(app) as client:
        with client.websocket_connect("/async/1") as socket:
            assert socket.receive_text() == "inserted"
        with client.websocket_connect("/async-dict/2") as socket:
            assert socket.receive_json() == {"id": 2}
        with client.websocket_connect("/sync/3") as socket:
            assert socket.receive_text() == "inserted"
        assert rows(db, table) == [1, 2, 3]
        # A database error rolls back and closes the socket (1011).
        with (
            client.websocket_connect("/async/-4") as socket,
            pytest.raises(WebSocketDisconnect) as closed,
        ):
            socket.receive_text()
        assert closed.value.code == 1011
        assert rows(db, table) == [1, 2, 3]
        assert get_pool(app).stats().in_use == 0
        for cursor in kept:
            with pytest.raises(CursorReleasedError):
                cursor.connection.commit()


# -- C. URL quoting ------------------------------------------------------------


@contextlib.contextmanager
def user_with_password(db: Database, password: str) -> Iterator[str]:
    user = f"{db.user}_q"
    db.query(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
    try:
        yield user
    finally:
        db.query(f"DROP USER '{user}'@'%'")


def test_the_url_advice_for_special_characters_logs_in(db: Database) -> None:
    password = "a b+c/d@e:f%g#h?i&j=k~l'm"
    with pytest.raises(ValueError, match="invalid database URL") as raised:
        mysql_pool_lifespan(f"mysql://u:{password}@127.0.0.1/db")
    advice = str(raised.value)
    assert "quote(password, safe='')" in advice
    assert "quote_plus" not in advice
    assert password not in advice
    with user_with_password(db, password) as user:
        url = (
            f"mysql://{quote(user, safe='')}:{quote(password, safe='')}@"
            f"{db.server.host}:{db.server.port}/"
        )
        app = FastAPI(lifespan=mysql_pool_lifespan(url, size=1))

        @app.get("/")
        def who(cursor: Cursor) -> str:
            cursor.execute("SELECT CURRENT_USER()")
            return str(cursor.fetchone()[0])

        with TestClient(app) as client:
            assert client.get("/").json() == f"{user}@%"


def test_a_raw_plus_in_a_url_password_stays_a_plus(db: Database) -> None:
    with user_with_password(db, "a+b") as user:
        url = f"mysql://{user}:a+b@{db.server.host}:{db.server.port}/"
        app = FastAPI(lifespan=mysql_pool_lifespan(url, size=1))
        with TestClient(app):
            pass


# -- D. a released cursor's connection -----------------------------------------


def test_a_released_cursors_connection_refuses_use(db: Database) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    kept: list[Any] = []

    @app.get("/sync")
    def sync(cursor: Cursor) -> None:
        cursor.connection.commit()  # works inside the request
        kept.append(cursor)

    @app.get("/sync-dict")
    def sync_dict(cursor: DictCursor) -> None:
        kept.append(cursor)

    @app.get("/async")
    async def async_(cursor: AsyncCursor) -> None:
        await cursor.execute("SELECT 1")
        kept.append(cursor)

    @app.get("/async-dict")
    async def async_dict(cursor: AsyncDictCursor) -> None:
        kept.append(cursor)

    with TestClient(app) as client:
        for path in ("/sync", "/sync-dict", "/async", "/async-dict"):
            assert client.get(path).status_code == 200
        pool = get_pool(app)
        with pool.fetch() as cursor:
            kept.append(cursor)
        with pool.fetch(cursor_type=MySQLdb.cursors.SSCursor) as cursor:
            cursor.execute("SELECT 1")
            kept.append(cursor)
        for cursor in kept:
            for use in ("commit", "rollback", "ping", "cursor"):
                with pytest.raises(CursorReleasedError, match="went back"):
                    getattr(cursor.connection, use)()
        assert client.get("/sync").status_code == 200  # the pool is fine
    for cursor in kept[:2] + kept[4:]:
        cursor.close()  # harmless, as on any closed cursor


# -- E. a statement over max_allowed_packet ------------------------------------


@pytest.fixture
def small_packets(fault_db: Database) -> Iterator[int]:
    """max_allowed_packet of 1 MB for sessions opened from now on."""
    before = int(fault_db.scalar("SELECT @@global.max_allowed_packet"))
    limit = 1024 * 1024
    fault_db.query(f"SET GLOBAL max_allowed_packet = {limit}")
    try:
        yield limit
    finally:
        fault_db.query(f"SET GLOBAL max_allowed_packet = {before}")


@pytest.mark.destructive
def test_a_statement_over_max_allowed_packet_is_an_error_not_a_retry(
    fault_db: Database, small_packets: int
) -> None:
    table = fault_db.create_table("blobs", "b LONGBLOB")
    insert = f"INSERT INTO {table} (b) VALUES (%s)"
    app = FastAPI(lifespan=mysql_pool_lifespan(fault_db.cfg, size=1))

    @app.post("/sync/{size}")
    def sync(size: int, cursor: Cursor) -> None:
        cursor.execute(insert, (b"x" * size,))

    @app.post("/async/{size}")
    async def async_(size: int, cursor: AsyncCursor) -> None:
        await cursor.execute(insert, (b"x" * size,))

    @app.post("/{kind}/lost/{size}")
    async def lost(kind: str, size: int, cursor: AsyncCursor) -> None:
        """A genuine loss, with a large statement under the limit."""
        await cursor.execute("SELECT CONNECTION_ID()")
        row = await cursor.fetchone()
        assert row is not None
        fault_db.query(f"KILL {int(row[0])}")
        await cursor.execute(insert, (b"x" * size,))

    over, under = 2 * small_packets, small_packets // 2
    with TestClient(app) as client:
        pool = get_pool(app)
        for kind in ("sync", "async"):
            closed = pool.stats().closed
            response = client.post(f"/{kind}/{over}")
            assert (response.status_code, response.json()) == (500, ERROR), kind
            assert "retry-after" not in response.headers
            assert pool.stats().closed == closed + 1  # discarded, as broken
            assert client.post(f"/{kind}/10").status_code == 200
            response = client.post(f"/{kind}/lost/{under}")
            assert (response.status_code, response.json()) == (503, UNAVAILABLE)
    assert fault_db.scalar(f"SELECT COUNT(*) FROM {table}") == 2


# -- F. TLS, when cfg asks for it, or no connection ----------------------------


@pytest.mark.parametrize(
    "tls", [{"ssl_mode": "REQUIRED"}, {"ssl": True}, {"ssl": {"cipher": "AES128-SHA"}}]
)
def test_required_tls_without_tls_fails_startup_clearly(
    db: Database, tls: dict[str, Any]
) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan({**db.cfg, **tls}, size=1, timeout=0.3))
    with pytest.raises(PoolStartupError) as raised, TestClient(app):
        pass
    message = str(raised.value)
    assert "TLS was required" in message
    assert "not encrypted" in message
    assert db.target in message
    assert db.password not in message
    assert db.connection_count(settle_at=0) == 0


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporaryServer]:
    certs = tmp_path_factory.mktemp("certs")
    cert, key = certs / "cert.pem", certs / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    options = {"ssl_cert": cert, "ssl_key": key, "ssl_ca": cert}
    with TemporaryServer(options=options) as server:
        yield server


def test_required_tls_with_tls_connects_encrypted(tls_server: TemporaryServer) -> None:
    ca = Path(tls_server.options["ssl_ca"])
    app = FastAPI(
        lifespan=mysql_pool_lifespan(
            {**tls_server.config, "ssl_mode": "REQUIRED"}, size=1, max_size=2
        )
    )
    cipher = "SHOW SESSION STATUS LIKE 'Ssl_cipher'"

    @app.get("/sync")
    def sync(cursor: Cursor) -> str:
        cursor.execute(cipher)
        return str(cursor.fetchone()[1])

    @app.get("/async")
    async def async_(cursor: AsyncCursor) -> str:
        await cursor.execute(cipher)
        row = await cursor.fetchone()
        assert row is not None
        return str(row[1])

    with TestClient(app) as client:
        assert client.get("/sync").json()
        assert client.get("/async").json()
    verified = {**tls_server.config, "ssl_mode": "VERIFY_CA", "ssl": {"ca": str(ca)}}
    with Pool(verified, size=1) as pool, pool.fetch() as cursor:
        cursor.execute(cipher)
        assert cursor.fetchone()[1]


# -- G. one start at a time ----------------------------------------------------


def test_a_second_start_of_a_running_app_is_refused(db: Database) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.get("/")
    async def read(cursor: AsyncCursor) -> int:
        await cursor.execute("SELECT 1")
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    with TestClient(app) as outer:
        pool = get_pool(app)
        with pytest.raises(RuntimeError, match="already running"), TestClient(app):
            pass
        assert get_pool(app) is pool
        assert outer.get("/").json() == 1
    with TestClient(app) as again:  # one after the other is fine
        assert again.get("/").json() == 1
    assert db.connection_count(settle_at=0) == 0


# -- H. trio -------------------------------------------------------------------


def test_the_trio_backend_fails_at_startup_clearly(db: Database) -> None:
    pytest.importorskip("trio")
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    with (
        pytest.raises(RuntimeError, match=r"needs asyncio.*runs on trio"),
        TestClient(app, backend="trio"),
    ):
        pass
    assert db.connection_count(settle_at=0) == 0


# -- I. the default max_size follows the app's own thread limit -----------------


def test_the_default_max_size_follows_the_apps_own_thread_limit(db: Database) -> None:
    @asynccontextmanager
    async def more_threads(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 57
        yield

    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1, lifespan=more_threads))
    with TestClient(app):
        assert get_pool(app).stats().max_size == 57
    app = FastAPI(
        lifespan=mysql_pool_lifespan(db.cfg, size=1, max_size=3, lifespan=more_threads)
    )
    with TestClient(app):
        assert get_pool(app).max_size == 3  # an explicit one stays


def test_a_raised_max_size_serves_callers_already_queued(db: Database) -> None:
    with Pool(db.cfg, size=1, max_size=1, acquire_timeout=10) as pool:
        served = threading.Event()

        def borrow() -> None:
            with pool.fetch() as cursor:
                cursor.execute("SELECT 1")
            served.set()

        with pool.fetch():
            waiter = threading.Thread(target=borrow)
            waiter.start()
            while pool.stats().waiting == 0:  # queued behind the held one
                assert waiter.is_alive()
                time.sleep(0.005)
            pool.set_max_size(2)
            assert served.wait(5)  # while the first is still held
        waiter.join()
        assert pool.stats().opened == 2
