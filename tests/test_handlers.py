"""Database errors become stable JSON answers, registered by the lifespan alone."""

from __future__ import annotations

import logging
import threading
from typing import Any

import httpx
import MySQLdb
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from fastapi_mysqlpool import Cursor, mysql_pool_lifespan
from fastapi_mysqlpool._handlers import database_error_handler

from .servers import Database, serve

ERROR = {"code": 0, "message": "Something Went Wrong"}
UNAVAILABLE = {"code": 1, "message": "Database Server Is Not Available"}
BUSY = {"code": 2, "message": "Database Server Is Busy"}


def error_app(db: Database, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1, **options))

    @app.get("/syntax")
    def syntax(cursor: Cursor) -> None:
        cursor.execute("SELEC secret_column FROM secret_table")

    @app.get("/lost")
    def lost(cursor: Cursor) -> None:
        cursor.execute("SELECT CONNECTION_ID()")
        db.query(f"KILL {int(cursor.fetchone()[0])}")
        cursor.execute("SELECT 1")

    @app.get("/too-many")
    def too_many(cursor: Cursor) -> None:
        raise MySQLdb.OperationalError(1040, "Too many connections")

    return app


def test_an_app_that_only_passes_lifespan_gets_json_errors(db: Database) -> None:
    """Starlette builds its middleware stack before lifespan startup; the
    handlers registered at startup must still be in it (real uvicorn)."""
    with serve(error_app(db)) as url, httpx.Client(base_url=url) as client:
        syntax = client.get("/syntax")
        lost = client.get("/lost")
        too_many = client.get("/too-many")
    assert (syntax.status_code, syntax.json()) == (500, ERROR)
    assert "retry-after" not in syntax.headers
    assert (lost.status_code, lost.json()) == (503, UNAVAILABLE)
    assert lost.headers["retry-after"] == "1"
    assert (too_many.status_code, too_many.json()) == (503, BUSY)
    assert too_many.headers["retry-after"] == "1"


def test_sql_and_server_messages_go_to_the_log_not_the_client(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="fastapi_mysqlpool"),
        TestClient(error_app(db)) as client,
    ):
        response = client.get("/syntax")
    assert response.json() == ERROR
    assert "secret" not in response.text
    assert "SQL syntax" not in response.text
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "GET /syntax" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert "secret_column" in str(errors[0].exc_info[1])


def test_user_limit_and_acquire_timeout_answer_busy(db: Database) -> None:
    """A user WITH MAX_USER_CONNECTIONS 1 (error 1226), and a pool queue timeout."""
    db.query(f"ALTER USER '{db.user}'@'%' WITH MAX_USER_CONNECTIONS 1")
    holding = threading.Event()
    release = threading.Event()
    app = FastAPI(
        lifespan=mysql_pool_lifespan(db.cfg, size=0, max_size=2, acquire_timeout=0.2)
    )

    @app.get("/hold")
    def hold(cursor: Cursor) -> None:
        holding.set()
        assert release.wait(10)

    @app.get("/quick")
    def quick(cursor: Cursor) -> None:
        cursor.execute("SELECT 1")

    with TestClient(app) as client:
        worker = threading.Thread(target=client.get, args=("/hold",))
        worker.start()
        try:
            assert holding.wait(10)
            refused = client.get("/quick")  # a 2nd connection: the server says no
        finally:
            release.set()
            worker.join()
    assert (refused.status_code, refused.json()) == (503, BUSY)
    assert refused.headers["retry-after"] == "1"

    db.query(f"ALTER USER '{db.user}'@'%' WITH MAX_USER_CONNECTIONS 0")
    holding.clear()
    release.clear()
    app = FastAPI(
        lifespan=mysql_pool_lifespan(db.cfg, size=1, max_size=1, acquire_timeout=0.2)
    )
    app.get("/hold")(hold)
    app.get("/quick")(quick)
    with TestClient(app) as client:
        worker = threading.Thread(target=client.get, args=("/hold",))
        worker.start()
        try:
            assert holding.wait(10)
            queued = client.get("/quick")  # the only connection is held
        finally:
            release.set()
            worker.join()
    assert (queued.status_code, queued.json()) == (503, BUSY)


def test_handlers_the_app_registered_win(db: Database) -> None:
    app = error_app(db)

    @app.exception_handler(MySQLdb.ProgrammingError)
    async def own(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"mine": True}, status_code=400)

    with TestClient(app) as client:
        assert client.get("/syntax").json() == {"mine": True}
        # Other database errors still get the automatic answer.
        assert client.get("/lost").json() == UNAVAILABLE
    assert app.exception_handlers[MySQLdb.ProgrammingError] is own


def test_automatic_handlers_can_be_turned_off(db: Database) -> None:
    app = error_app(db, handle_errors=False)
    assert database_error_handler not in app.exception_handlers.values()
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/syntax")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert database_error_handler not in app.exception_handlers.values()


def test_websocket_errors_close_the_socket(db: Database) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        raise MySQLdb.OperationalError(2006, "gone")

    with (
        TestClient(app) as client,
        client.websocket_connect("/ws") as socket,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        socket.receive_text()
    assert closed.value.code == 1013  # try again later
