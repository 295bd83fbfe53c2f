"""Rollback (the mysql_rollback fixture's): pools pinned to one connection in
one transaction, each borrow in a savepoint; against a real server."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import httpx
import MySQLdb
import pytest
from asgi_lifespan import LifespanManager
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.testclient import TestClient

from fastapi_mysqlpool import (
    AsyncCursor,
    AsyncReadCursor,
    Cursor,
    Pool,
    PoolTimeout,
    ReadCursor,
    _aio,
    add_pool_task,
    get_pool,
    mysql_pool_lifespan,
)
from fastapi_mysqlpool.testing import ImplicitCommitError, Rollback

from .servers import Database


def make_app(db: Database, table: str, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1, **options))
    insert = f"INSERT INTO `{table}` (name) VALUES (%s)"

    @app.post("/add/{name}")
    def add(name: str, cursor: Cursor) -> Any:
        cursor.execute(insert, (name,))

    @app.post("/fail/{name}")
    async def fail(name: str, cursor: AsyncCursor) -> Any:
        await cursor.execute(insert, (name,))
        raise HTTPException(409)

    @app.post("/ddl")
    def ddl(cursor: Cursor) -> Any:
        cursor.execute(f"CREATE TABLE `{table}_made` (id INT)")

    @app.post("/commit-then-fail/{first}/{second}")
    async def commit_then_fail(first: str, second: str, cursor: AsyncCursor) -> Any:
        await cursor.execute(insert, (first,))
        cursor.connection.commit()  # mid-request: kept, as in production
        await cursor.execute(insert, (second,))
        raise HTTPException(409)

    @app.post("/sql-commit/{name}")
    async def sql_commit(name: str, cursor: AsyncCursor) -> Any:
        await cursor.execute(insert, (name,))
        await cursor.execute("COMMIT")  # must not end the test's transaction

    @app.post("/nested/{outer}/{inner}")
    def nested(outer: str, inner: str, cursor: Cursor, other: AsyncCursor) -> Any:
        # Two dependencies and a fetch() in the route's thread: three borrows
        # from one request, which would wait for each other if not nested.
        cursor.execute(insert, (outer,))
        with contextlib.suppress(RuntimeError), get_pool(app).fetch() as mine:
            mine.execute(insert, (inner,))
            raise RuntimeError("the inner block fails: its work is undone")
        with get_pool(app).fetch() as mine:
            mine.execute(insert, (inner + "-kept",))

    @app.post("/later/{name}")
    def later(name: str, tasks: BackgroundTasks) -> Any:
        add_pool_task(tasks, lambda cursor, n: cursor.execute(insert, (n,)), name)

    @app.get("/names")
    async def names(cursor: AsyncCursor) -> Any:
        await cursor.execute(f"SELECT name FROM `{table}` ORDER BY name")
        return [row[0] for row in await cursor.fetchall()]

    @app.get("/read-names")
    async def read_names(cursor: AsyncReadCursor) -> Any:
        await cursor.execute(f"SELECT name FROM `{table}` ORDER BY name")
        return [row[0] for row in await cursor.fetchall()]

    @app.get("/read-count")
    def read_count(cursor: ReadCursor) -> Any:
        cursor.execute(f"SELECT COUNT(*) FROM `{table}`")
        return cursor.fetchone()[0]

    return app


@pytest.fixture
def table(db: Database) -> str:
    return db.create_table("names", "name VARCHAR(40) PRIMARY KEY")


def names(db: Database, table: str) -> list[str]:
    return [row[0] for row in db.query(f"SELECT name FROM `{table}` ORDER BY name")]


def test_requests_behave_as_in_production_and_all_is_rolled_back(
    db: Database, table: str
) -> None:
    app = make_app(db, table)
    with Rollback(), TestClient(app) as client:
        assert client.post("/add/a").status_code == 200
        assert client.post("/fail/b").status_code == 409
        assert client.post("/add/a").status_code == 500  # duplicate key
        assert client.post("/commit-then-fail/c/d").status_code == 409
        assert client.post("/sql-commit/e").status_code == 200
        assert client.post("/nested/f/g").status_code == 200
        assert client.post("/later/h").status_code == 200  # the task ran
        assert client.get("/names").json() == ["a", "c", "e", "f", "g-kept", "h"]
        # The test's own borrows see it all, and are rolled back too.
        with get_pool(app).fetch() as cursor:
            cursor.execute(f"INSERT INTO `{table}` (name) VALUES ('i')")
            cursor.execute(f"SELECT COUNT(*) FROM `{table}`")
            assert cursor.fetchone() == (7,)
        assert names(db, table) == []  # nothing committed meanwhile
    assert names(db, table) == []
    assert db.connection_count(settle_at=0) == 0  # the test's connection closed


def test_a_statement_that_commits_implicitly_fails_the_test_clearly(
    db: Database, table: str
) -> None:
    app = make_app(db, table)
    with Rollback(), TestClient(app) as client:
        client.post("/add/a")
        with pytest.raises(ImplicitCommitError, match=r"CREATE TABLE .*commits implic"):
            client.post("/ddl")
        assert client.get("/names").json() == ["a"]  # the test goes on
    assert names(db, table) == []
    assert not db.query(f"SHOW TABLES LIKE '{table}_made'")


def test_without_rollback_the_same_requests_commit(db: Database, table: str) -> None:
    """The tests above can fail: the same app commits when not pinned."""
    app = make_app(db, table)
    with TestClient(app) as client:
        assert client.post("/add/a").status_code == 200
        assert client.post("/commit-then-fail/c/d").status_code == 409
    assert names(db, table) == ["a", "c"]


def test_an_app_started_before_the_rollback_is_pinned_until_its_end(
    db: Database, table: str
) -> None:
    app = make_app(db, table)
    with TestClient(app) as client:  # a session-wide client, say
        with Rollback():
            client.post("/add/a")
            assert client.get("/names").json() == ["a"]
        assert client.get("/names").json() == []
        client.post("/add/b")  # committed: the pool lends its own again
    assert names(db, table) == ["b"]


def test_startup_code_runs_outside_the_tests_transaction(db: Database) -> None:
    """Schema created in the app's own lifespan (the README's quickstart)."""
    table = f"{db.user}_made_at_startup"

    @asynccontextmanager
    async def create_table(app: FastAPI) -> Any:
        async with get_pool(app).cursor() as cursor:
            await cursor.execute(f"CREATE TABLE IF NOT EXISTS `{table}` (id INT)")
        yield

    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, lifespan=create_table))

    @app.post("/rows")
    async def add(cursor: AsyncCursor) -> Any:
        await cursor.execute(f"INSERT INTO `{table}` VALUES (1)")

    with Rollback(), TestClient(app) as client:
        assert client.post("/rows").status_code == 200
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == ((0,),)


@pytest.fixture
def pool(db: Database) -> Iterator[Pool]:
    with Pool(db.cfg, size=1, acquire_timeout=0.5) as pool:
        yield pool


def test_one_borrower_at_a_time_the_others_wait_their_turn(
    pool: Pool, db: Database, table: str
) -> None:
    with Rollback() as rollback:
        rollback.pin(pool)
        assert pool.pinned is not None
        order: list[str] = []
        holding = threading.Event()

        def second() -> None:
            with pool.fetch() as cursor:
                order.append("second")
                cursor.execute(f"SELECT COUNT(*) FROM `{table}`")
                assert cursor.fetchone() == (1,)  # the first one's row

        with pool.fetch() as cursor:
            cursor.execute(f"INSERT INTO `{table}` VALUES ('a')")
            thread = threading.Thread(target=lambda: (holding.wait(), second()))
            thread.start()
            holding.set()
            deadline = time.monotonic() + 5
            while not pool.pinned._waiters:  # the second one queued
                assert time.monotonic() < deadline
                time.sleep(0.001)
            order.append("first")
        thread.join()
        assert order == ["first", "second"]
    assert names(db, table) == []


def test_a_borrower_that_waits_too_long_times_out_with_the_reason(
    pool: Pool,
) -> None:
    errors: list[BaseException] = []

    def borrow() -> None:  # a thread of its own: not nested in the holder
        try:
            with pool.fetch():
                pass
        except PoolTimeout as exc:
            errors.append(exc)

    with Rollback() as rollback:
        rollback.pin(pool)
        with pool.fetch() as cursor:
            cursor.execute("SELECT 1")
            thread = threading.Thread(target=borrow)
            thread.start()
            thread.join()
    assert len(errors) == 1
    assert "one borrower uses it at a time" in str(errors[0])


def test_a_pool_that_follows_another_lends_its_connection(
    pool: Pool, db: Database, table: str
) -> None:
    """The seam for read pools: pinned to the primary's connection, reads
    see the test's writes."""
    with Pool(db.cfg, size=1) as reads, Rollback() as rollback:
        rollback.pin(reads, follows=pool)
        assert reads.pinned is pool.pinned is not None
        with pool.fetch() as cursor:
            cursor.execute(f"INSERT INTO `{table}` VALUES ('a')")
        with reads.fetch() as cursor:
            cursor.execute(f"SELECT name FROM `{table}`")
            assert cursor.fetchall() == (("a",),)
    assert names(db, table) == []


def test_a_pool_is_pinned_only_while_the_rollback_is_active(
    pool: Pool, db: Database, table: str
) -> None:
    with Rollback() as rollback:
        rollback.pin(pool)
        with pool.fetch() as cursor:
            cursor.execute(f"INSERT INTO `{table}` VALUES ('a')")
    assert pool.pinned is None
    with pool.fetch() as cursor:
        cursor.execute(f"INSERT INTO `{table}` VALUES ('b')")
    assert names(db, table) == ["b"]
    with pytest.raises(RuntimeError, match="active already"), Rollback(), Rollback():
        pass


def test_a_dead_test_connection_fails_later_borrows_clearly(
    pool: Pool, db: Database, table: str
) -> None:
    with Rollback() as rollback:
        rollback.pin(pool)

        def insert_then_lose_the_connection() -> None:
            with pool.fetch() as cursor:
                cursor.execute(f"INSERT INTO `{table}` VALUES ('a')")
                db.kill_connections()

        with pytest.raises(MySQLdb.OperationalError):  # its RELEASE SAVEPOINT
            insert_then_lose_the_connection()
        with (
            pytest.raises(
                RuntimeError, match=r"test's connection .* was (lost|closed)"
            ),
            pool.fetch(),
        ):
            pass
    assert names(db, table) == []


def test_a_switch_to_autocommit_keeps_the_tests_transaction(
    pool: Pool, db: Database, table: str
) -> None:
    """The seam for read cursors, which switch a connection to autocommit
    with a statement of the library's own: on the test's connection reads
    stay in the test's transaction (a route's own SET is refused above)."""

    async def switch_on_the_loop() -> None:
        async with pool.cursor() as cursor:
            await _aio.query(cursor.connection, b"SET autocommit = 1")
            await cursor.execute(f"INSERT INTO `{table}` VALUES ('b')")

    with Rollback() as rollback:
        rollback.pin(pool)
        with pool.fetch() as cursor:
            cursor.connection.query(b"SET autocommit = 1")
            cursor.execute(f"INSERT INTO `{table}` VALUES ('a')")
        anyio.run(switch_on_the_loop)
        assert names(db, table) == []
    assert names(db, table) == []


def test_an_app_restarted_in_a_test_sees_what_its_first_start_wrote(
    db: Database, table: str
) -> None:
    app = make_app(db, table)
    with Rollback():
        with TestClient(app) as client:
            client.post("/add/a")
        with TestClient(app) as client:  # a new pool: the same test connection
            assert client.get("/names").json() == ["a"]
    assert names(db, table) == []


def test_a_request_cut_off_mid_statement_ends_the_tests_transaction(
    db: Database, table: str
) -> None:
    app = make_app(db, table)

    @app.get("/slow")
    async def slow(cursor: AsyncCursor) -> Any:
        await cursor.execute(f"INSERT INTO `{table}` VALUES ('slow')")
        await cursor.execute("SELECT SLEEP(30)")

    def wait_until_sleeping() -> None:
        deadline = time.monotonic() + 10
        running = (
            "SELECT 1 FROM information_schema.processlist "
            "WHERE user = %s AND info LIKE 'SELECT SLEEP%%'"
        )
        while not db.query(running, (db.user,)):
            assert time.monotonic() < deadline
            time.sleep(0.005)

    async def main() -> None:
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test"
            ) as client:
                assert (await client.post("/add/a")).status_code == 200
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(client.get, "/slow")
                    await anyio.to_thread.run_sync(wait_until_sleeping)
                    tasks.cancel_scope.cancel()  # the client gives up
                with pytest.raises(RuntimeError, match=r"test's connection .* closed"):
                    await client.get("/names")

    with Rollback():
        anyio.run(main)
    assert names(db, table) == []
    assert db.connection_count(settle_at=0) == 0


def test_read_cursors_read_the_tests_writes_and_leave_nothing_behind(
    db: Database, table: str
) -> None:
    """Read cursors switch their connection to autocommit: on the test's
    connection they stay inside the test's transaction, see its writes, and
    the requests after them still write in savepoints."""
    app = make_app(db, table)
    with Rollback(), TestClient(app) as client:
        assert client.post("/add/a").status_code == 200
        assert client.get("/read-names").json() == ["a"]
        assert client.get("/read-count").json() == 1
        assert client.post("/fail/b").status_code == 409  # its own work undone
        assert client.post("/add/c").status_code == 200
        assert client.get("/read-names").json() == ["a", "c"]
        assert names(db, table) == []
    assert names(db, table) == []
    assert db.connection_count(settle_at=0) == 0


def test_read_cursors_of_an_app_with_replicas_read_on_the_tests_connection(
    db: Database, table: str
) -> None:
    """A replica does not see the test's uncommitted writes: under a rollback,
    read cursors go to the (pinned) primary. (The test's server stands in for
    a replica: the lag query says it is in step.)"""
    app = make_app(db, table, replicas=[db.cfg], replica_lag_query="SELECT 0")
    with Rollback(), TestClient(app) as client:
        assert client.post("/add/a").status_code == 200
        assert client.get("/read-names").json() == ["a"]
        assert client.get("/read-count").json() == 1
    assert names(db, table) == []


@pytest.mark.parametrize("pause", [0.0, 0.2])
def test_a_stream_under_rollback_leaves_the_tests_connection_free(
    pool: Pool, db: Database, table: str, pause: float
) -> None:
    """On the test's one connection a stream is read at once and the
    connection given back: a cursor inside the loop over the rows, and a
    stream stopped early (then a borrow at once, or a little later), work as
    with a pool of several connections, and the test's transaction goes on."""

    async def main() -> list[Any]:
        async with pool.cursor() as cursor:
            await cursor.execute(f"INSERT INTO `{table}` VALUES ('a'), ('b'), ('c')")
        seen = []
        select = f"SELECT name FROM `{table}` ORDER BY name"
        async for (name,) in pool.stream(select, batch=1):
            async with pool.cursor() as cursor:
                await cursor.execute("SELECT %s", (name,))
                seen.append((await cursor.fetchone())[0])
        async with pool.stream(select, batch=1) as rows:
            async for _row in rows:
                break  # stopped early
        await anyio.sleep(pause)
        async with pool.cursor() as cursor:
            await cursor.execute(f"SELECT COUNT(*) FROM `{table}`")
            seen.append((await cursor.fetchone())[0])
        return seen

    with Rollback() as rollback:
        rollback.pin(pool)
        assert anyio.run(main) == ["a", "b", "c", 3]
        assert names(db, table) == []
    assert names(db, table) == []
