"""Read cursors on the primary's pool: autocommit, one round trip, no writes."""

from __future__ import annotations

from typing import Any

import MySQLdb
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from fastapi_mysqlpool import (
    AsyncCursor,
    AsyncReadCursor,
    AsyncReadDictCursor,
    Cursor,
    CursorReleasedError,
    ReadCursor,
    ReadDictCursor,
    ReadOnlyError,
    get_pool,
    mysql_pool_lifespan,
)

from .servers import Database


def global_status(db: Database, name: str) -> int:
    return int(db.query("SHOW GLOBAL STATUS LIKE %s", (name,))[0][1])


def make_app(db: Database, table: str, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, **options))
    kept: list[Any] = []

    @app.get("/async")
    async def read_async(cursor: AsyncReadCursor) -> list[Any]:
        await cursor.execute(f"SELECT id FROM `{table}` ORDER BY id")
        rows = [r[0] for r in await cursor.fetchall()]
        await cursor.execute("SELECT @@autocommit")
        return [rows, (await cursor.fetchone())[0]]

    @app.get("/async-dict")
    async def read_async_dict(cursor: AsyncReadDictCursor) -> Any:
        await cursor.execute("SELECT 1 AS one")
        return await cursor.fetchone()

    @app.get("/sync")
    def read_sync(cursor: ReadCursor) -> list[Any]:
        cursor.execute(f"SELECT id FROM `{table}` ORDER BY id")
        rows = [r[0] for r in cursor.fetchall()]
        cursor.execute("SELECT @@autocommit")
        return [rows, cursor.fetchone()[0]]

    @app.get("/sync-dict")
    def read_sync_dict(cursor: ReadDictCursor) -> Any:
        cursor.execute("SELECT 1 AS one")
        return cursor.fetchone()

    @app.get("/write-async")
    async def write_async(cursor: AsyncCursor) -> int:
        await cursor.execute("SELECT @@autocommit")
        return int((await cursor.fetchone())[0])

    @app.post("/insert-then-fail/{id}")
    def insert_then_fail(id: int, cursor: Cursor) -> None:
        cursor.execute(f"INSERT INTO `{table}` VALUES (%s)", (id,))
        raise HTTPException(409)

    @app.post("/refused-async")
    async def refused_async(cursor: AsyncReadCursor) -> None:
        await cursor.execute(f"INSERT INTO `{table}` VALUES (100)")

    @app.post("/refused-sync")
    def refused_sync(cursor: ReadCursor) -> None:
        cursor.execute(f"UPDATE `{table}` SET id = 101")

    @app.post("/refused-many")
    def refused_many(cursor: ReadCursor) -> None:
        cursor.executemany(f"DELETE FROM `{table}` WHERE id=%s", [(1,)])

    @app.post("/refused-proc")
    async def refused_proc(cursor: AsyncReadCursor) -> None:
        await cursor.callproc("anything")

    @app.get("/keep")
    async def keep(cursor: AsyncReadCursor) -> None:
        kept.append(cursor)

    @app.get("/multi")
    async def multi(cursor: AsyncReadCursor) -> int:
        await cursor.execute("SELECT 1; SELECT 2")  # the second result unread
        return int((await cursor.fetchone())[0])

    app.state.kept = kept
    return app


@pytest.fixture
def table(db: Database) -> str:
    name = db.create_table("items", "id INT PRIMARY KEY")
    db.query(f"INSERT INTO `{name}` VALUES (1)")
    return name


def test_read_cursors_run_in_autocommit_without_commit(
    db: Database, table: str
) -> None:
    app = make_app(db, table, size=1, max_size=1)
    with TestClient(app) as client:
        commits = global_status(db, "Com_commit")
        for path in ("/async", "/sync", "/async", "/sync"):
            assert client.get(path).json() == [[1], 1]
        assert client.get("/async-dict").json() == {"one": 1}
        assert client.get("/sync-dict").json() == {"one": 1}
        assert global_status(db, "Com_commit") == commits  # no COMMIT sent
        # Each read sees what was committed since (no snapshot kept open).
        db.query(f"INSERT INTO `{table}` VALUES (2)")
        assert client.get("/async").json() == [[1, 2], 1]
        stats = get_pool(app).stats()
        assert (stats.opened, stats.resets) == (1, 0)  # one connection, reused


def test_a_write_cursor_after_a_read_cursor_is_in_a_transaction(
    db: Database, table: str
) -> None:
    app = make_app(db, table, size=1, max_size=1)
    with TestClient(app) as client:
        for _ in range(2):
            assert client.get("/async").json() == [[1], 1]
            assert client.get("/write-async").json() == 0
            assert client.get("/sync").json() == [[1], 1]
            # Rolled back: the connection left autocommit before the INSERT.
            assert client.post("/insert-then-fail/5").status_code == 409
        assert db.query(f"SELECT id FROM `{table}`") == ((1,),)
        stats = get_pool(app).stats()
        assert (stats.opened, stats.resets) == (1, 0)


@pytest.mark.parametrize(
    "path", ["/refused-async", "/refused-sync", "/refused-many", "/refused-proc"]
)
def test_a_write_through_a_read_cursor_is_refused_before_it_is_sent(
    db: Database, table: str, path: str
) -> None:
    app = make_app(db, table, size=1)
    with TestClient(app, raise_server_exceptions=False) as client:
        sent = sum(
            global_status(db, name)
            for name in ("Com_insert", "Com_update", "Com_delete", "Com_call_procedure")
        )
        answer = client.post(path)
        assert (answer.status_code, answer.json()) == (
            500,
            {"code": 0, "message": "Something Went Wrong"},
        )
        assert sent == sum(
            global_status(db, name)
            for name in ("Com_insert", "Com_update", "Com_delete", "Com_call_procedure")
        )
        assert get_pool(app).stats().in_use == 0


def test_a_read_cursor_is_unusable_after_its_request(db: Database, table: str) -> None:
    app = make_app(db, table, size=1)
    with TestClient(app) as client:
        assert client.get("/keep").status_code == 200
        assert client.get("/multi").json() == 1
        assert client.get("/async").json() == [[1], 1]  # the same connection
        with pytest.raises(CursorReleasedError):
            client.portal.call(app.state.kept[0].execute, "SELECT 1")  # type: ignore[union-attr]
        assert get_pool(app).stats().in_use == 0


@pytest.mark.anyio
async def test_pool_read_cursor_outside_routes(db: Database, table: str) -> None:
    app = make_app(db, table, size=1)
    async with mysql_pool_lifespan(db.cfg, size=1)(app):
        pool = get_pool(app)
        async with pool.read_cursor() as cursor:
            await cursor.execute(f"SELECT id FROM `{table}`")
            assert await cursor.fetchall() == [(1,)]
            with pytest.raises(ReadOnlyError):
                await cursor.execute(f"DELETE FROM `{table}`")
        async with pool.read_cursor(dict_rows=True) as cursor:
            await cursor.execute("SELECT @@autocommit AS a")
            assert await cursor.fetchone() == {"a": 1}
        assert pool.replicas == ()
        assert pool.stats().in_use == 0


def test_only_a_read_only_refusal_is_the_apps_mistake() -> None:
    """Through a read cursor, 1290/1836 (a write sent around the check) is
    code 0; Galera's 1047 (a node not ready, refusing reads too) stays code 1."""
    from fastapi_mysqlpool import ErrorKind, ReadOnlyError
    from fastapi_mysqlpool._errors import classify
    from fastapi_mysqlpool._read_lease import _refused_by_server

    read_only = MySQLdb.OperationalError(1836, "Running in read-only mode")
    with pytest.raises(ReadOnlyError) as raised:
        _refused_by_server(read_only)
    assert classify(raised.value) is ErrorKind.ERROR
    not_ready = MySQLdb.OperationalError(1047, "WSREP has not yet prepared node")
    _refused_by_server(not_ready)  # raised as it is: code 1
    assert classify(not_ready) is ErrorKind.UNAVAILABLE


def test_a_replica_names_one_host_and_takes_no_target() -> None:
    from fastapi_mysqlpool._config import make_config
    from fastapi_mysqlpool._replicas import replica_config, replica_pool_options

    primary = make_config("mysql://app:secret@db1,db2/shop")
    with pytest.raises(ValueError, match="a replica names one host"):
        replica_config(primary, "mysql://r1,r2/shop")
    assert replica_config(primary, "mysql://r1:3307")["host"] == "r1"
    options = replica_pool_options({"target": "any"}, None, max_replica_lag=5)
    assert "target" not in options
