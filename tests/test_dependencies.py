"""get_cursor / get_dict_cursor: commit before the response, rollback on error,
a connection of its own, and a cursor that refuses use after release."""

from __future__ import annotations

import gc
import inspect
import logging
import threading
from typing import Any

import pytest
from fastapi import Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient

import fastapi_mysqlpool
from fastapi_mysqlpool import (
    AsyncCursor,
    AsyncDictCursor,
    Cursor,
    CursorReleasedError,
    DictCursor,
    get_async_cursor,
    get_async_dict_cursor,
    get_cursor,
    get_dict_cursor,
    get_pool,
    mysql_pool_lifespan,
)
from fastapi_mysqlpool._async_cursor import AsyncPoolCursor
from fastapi_mysqlpool._lease import Lease

from .servers import Database


def make_app(db: Database, table: str, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=2, **options))

    @app.post("/rows/{id}")
    def insert(id: int, cursor: Any = Depends(get_cursor)) -> dict[str, int]:
        cursor.execute(f"INSERT INTO {table} (id) VALUES (%s)", (id,))
        return {"id": id}

    @app.post("/rows/{id}/http-error")
    def insert_then_http_error(id: int, cursor: Cursor) -> None:
        cursor.execute(f"INSERT INTO {table} (id) VALUES (%s)", (id,))
        raise HTTPException(status_code=409, detail="conflict")

    @app.post("/rows/{id}/crash")
    def insert_then_crash(id: int, cursor: Cursor) -> None:
        cursor.execute(f"INSERT INTO {table} (id) VALUES (%s)", (id,))
        raise RuntimeError("boom")

    @app.post("/rows/{id}/async")
    async def insert_async_route(id: int, cursor: Cursor) -> dict[str, int]:
        # Blocking query in an async route: works (and blocks the loop).
        cursor.execute(f"INSERT INTO {table} (id) VALUES (%s)", (id,))
        return {"id": id}

    return app


@pytest.fixture
def table(db: Database) -> str:
    return db.create_table("rows", "id INT PRIMARY KEY")


def rows(db: Database, table: str) -> list[int]:
    return [row[0] for row in db.query(f"SELECT id FROM {table} ORDER BY id")]


def test_commit_is_visible_to_another_connection_once_answered(
    db: Database, table: str
) -> None:
    with TestClient(make_app(db, table)) as client:
        assert client.post("/rows/1").json() == {"id": 1}
        # The admin connection is another session: it sees only committed rows.
        assert rows(db, table) == [1]
        assert client.post("/rows/2/async").status_code == 200
        assert rows(db, table) == [1, 2]


@pytest.mark.parametrize(
    ("path", "status"), [("/rows/7/http-error", 409), ("/rows/7/crash", 500)]
)
def test_exception_rolls_back_and_returns_the_connection_clean(
    db: Database, table: str, path: str, status: int
) -> None:
    app = make_app(db, table)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post(path).status_code == status
        assert rows(db, table) == []
        assert db.open_transactions() == 0
        stats = get_pool(app).stats()
        assert (stats.in_use, stats.closed) == (0, 0)
        # The same connection serves the next request normally.
        assert client.post("/rows/8").status_code == 200
    assert rows(db, table) == [8]


def test_commit_happens_before_the_response_is_sent(db: Database, table: str) -> None:
    """The route's work is committed when the first response byte leaves."""
    app = make_app(db, table)
    seen_at_start: list[list[int]] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        async def send_spy(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen_at_start.append(rows(db, table))
            await send(message)

        await app(scope, receive, send_spy)

    with TestClient(spy) as client:
        assert client.post("/rows/5").status_code == 200
    assert seen_at_start == [[5]]


def test_a_failing_commit_is_an_error_response_and_the_row_is_absent(
    db: Database,
) -> None:
    """The request's connection is killed before its COMMIT: not a 2xx."""
    table = db.create_table("commit", "id INT PRIMARY KEY")
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.post("/doomed")
    def doomed(cursor: Cursor) -> dict[str, str]:
        cursor.execute(f"INSERT INTO {table} (id) VALUES (1)")
        cursor.execute("SELECT CONNECTION_ID()")
        (own_id,) = cursor.fetchone()
        db.query(f"KILL {int(own_id)}")  # from another connection, then return
        return {"status": "ok"}

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/doomed")
        assert response.status_code == 503
        assert response.json() == {
            "code": 1,
            "message": "Database Server Is Not Available",
        }
        assert rows(db, table) == []
        # Only the dead connection was discarded; the pool serves on.
        assert get_pool(app).stats().in_use == 0
        assert client.post("/doomed").status_code == 503


def test_a_request_holds_a_connection_of_its_own(db: Database) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=2))
    inside = threading.Barrier(2, timeout=10)

    @app.get("/id")
    def connection_id(cursor: Cursor) -> int:
        cursor.execute("SELECT CONNECTION_ID()")
        inside.wait()  # both requests hold their cursor at the same time
        return int(cursor.fetchone()[0])

    with TestClient(app) as client:
        results: list[int] = []
        worker = threading.Thread(
            target=lambda: results.append(client.get("/id").json())
        )
        worker.start()
        results.append(client.get("/id").json())
        worker.join()
    assert len(set(results)) == 2


def test_cursor_used_after_its_request_raises(db: Database, table: str) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    kept: list[Any] = []

    @app.get("/keep")
    def keep(cursor: Cursor) -> None:
        cursor.execute("SELECT 1")
        kept.append(cursor)

    with TestClient(app) as client:
        client.get("/keep")
        cursor = kept[0]
        with pytest.raises(CursorReleasedError, match="went back to the pool"):
            cursor.execute("SELECT 2")
        with pytest.raises(CursorReleasedError):
            cursor.fetchall()
        with pytest.raises(CursorReleasedError):
            cursor.executemany(f"INSERT INTO {table} (id) VALUES (%s)", [(1,)])
        with pytest.raises(CursorReleasedError):  # the connection is out of reach
            cursor.connection.commit()
        # The connection it used is in the pool and works for the next request.
        client.get("/keep")
    assert rows(db, table) == []


def test_dict_cursor_and_aliases(db: Database) -> None:
    table = db.create_table("items", "id INT PRIMARY KEY, name VARCHAR(20)")
    db.query(f"INSERT INTO {table} VALUES (1, 'one')")
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.get("/dict")
    def with_dict(cursor: Any = Depends(get_dict_cursor)) -> Any:
        cursor.execute(f"SELECT id, name FROM {table}")
        return cursor.fetchone()

    @app.get("/alias")
    def with_alias(cursor: DictCursor) -> Any:
        cursor.execute(f"SELECT id, name FROM {table}")
        return cursor.fetchall()

    @app.get("/tuple")
    def with_tuple(cursor: Cursor) -> Any:
        cursor.execute(f"SELECT id, name FROM {table}")
        return cursor.fetchone()

    with TestClient(app) as client:
        assert client.get("/dict").json() == {"id": 1, "name": "one"}
        assert client.get("/alias").json() == [{"id": 1, "name": "one"}]
        assert client.get("/tuple").json() == [1, "one"]


def test_a_blocking_cursor_in_an_async_route_is_pointed_out_once(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.get("/blocking")
    async def blocking(cursor: Cursor) -> None:
        cursor.execute("SELECT 1")

    @app.get("/fine")
    def fine(cursor: Cursor) -> None:
        cursor.execute("SELECT 1")

    with caplog.at_level(logging.WARNING), TestClient(app) as client:
        for path in ("/blocking", "/blocking", "/fine"):
            assert client.get(path).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == "fastapi_mysqlpool"]
    assert len(warnings) == 1
    assert "/blocking is an async def route" in warnings[0]
    assert "get_async_cursor" in warnings[0]


def test_one_cursor_per_request_when_declared_twice(db: Database) -> None:
    """FastAPI caches a dependency per request: sub-dependencies share the cursor."""
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=2))

    def connection_id(cursor: Cursor) -> int:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])

    @app.get("/twice")
    def twice(first: int = Depends(connection_id), cursor: Cursor = None) -> bool:  # type: ignore[assignment]
        cursor.execute("SELECT CONNECTION_ID()")
        return bool(cursor.fetchone()[0] == first)

    with TestClient(app) as client:
        assert client.get("/twice").json() is True
        assert get_pool(app).stats().requests == 1


def test_a_request_leaves_no_reference_cycle_behind(db: Database) -> None:
    """A lease and its cursor refer to each other until the lease ends; then
    they must let go, or every request leaves garbage only the cyclic
    collector frees (rows included), and costs it time."""
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.get("/sync")
    def sync_route(cursor: Cursor) -> Any:
        cursor.execute("SELECT 1")
        return cursor.fetchone()

    @app.get("/sync-unused")
    def sync_unused(cursor: Cursor) -> None:
        return None

    @app.get("/async")
    async def async_route(cursor: AsyncCursor) -> Any:
        await cursor.execute("SELECT 1")
        return await cursor.fetchone()

    with TestClient(app) as client:
        for path in ("/sync", "/sync-unused", "/async"):
            assert client.get(path).status_code == 200  # warm up
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for path in ("/sync", "/sync-unused", "/async"):
                assert client.get(path).status_code == 200
            gc.collect()
            left = [o for o in gc.garbage if isinstance(o, Lease | AsyncPoolCursor)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert left == []


@pytest.mark.parametrize(
    ("dependency", "alias"),
    [
        (get_cursor, Cursor),
        (get_dict_cursor, DictCursor),
        (get_async_cursor, AsyncCursor),
        (get_async_dict_cursor, AsyncDictCursor),
    ],
)
def test_each_dependency_is_a_documented_function_an_app_can_override(
    dependency: Any, alias: Any
) -> None:
    assert getattr(fastapi_mysqlpool, dependency.__name__) is dependency
    assert inspect.iscoroutinefunction(dependency)
    assert dependency.__doc__
    assert list(inspect.signature(dependency).parameters) == ["request"]
    app = FastAPI()  # no pool: the override must stand in for it entirely

    @app.get("/depends")
    def with_depends(cursor: Any = Depends(dependency)) -> Any:
        return cursor

    def with_alias(cursor: Any) -> Any:
        return cursor

    with_alias.__annotations__["cursor"] = alias  # the alias itself, not its name
    app.get("/alias")(with_alias)

    app.dependency_overrides[dependency] = lambda: "stand-in"
    with TestClient(app) as client:
        assert client.get("/depends").json() == "stand-in"
        assert client.get("/alias").json() == "stand-in"
