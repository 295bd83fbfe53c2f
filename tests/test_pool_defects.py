"""Pool defects from a hostile review (issue 16): read timeouts that left
queries running, max_idle defeated by the keepalive, async connects that waited
for a worker thread, needless KILLs after server errors, and options that
slipped through their checks."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import MySQLdb
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from fastapi_mysqlpool import (
    AsyncCursor,
    Cursor,
    Pool,
    PoolTimeout,
    QueryTimeout,
    _connection,
    _housekeeper,
    get_pool,
    mysql_pool_lifespan,
)

from .proxy import Proxy
from .servers import Database, serve
from .test_pool import wait_until

# -- options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": 2.5}, "size must be an int"),
        ({"size": True}, "size must be an int"),
        ({"max_size": True}, "max_size must be an int"),
        ({"max_size": 4.0}, "max_size must be an int"),
        ({"max_size": "4"}, "max_size must be an int"),
        ({"max_idle": float("nan")}, "max_idle must be a number of seconds"),
        ({"max_lifetime": float("nan")}, "max_lifetime must be a number"),
        ({"timeout": float("nan")}, "timeout must be a number"),
        ({"acquire_timeout": float("nan")}, "acquire_timeout must be a number"),
        ({"acquire_timeout": True}, "acquire_timeout must be a number"),
        ({"max_idle": "600"}, "max_idle must be a number"),
        ({"timeout": float("inf")}, "timeout must be >= 0 and finite"),
        ({"max_lifetime": -1.0}, "max_lifetime must be > 0"),
    ],
)
def test_options_of_the_wrong_type_or_nan_are_refused(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Pool({"host": "127.0.0.1"}, fillup=False, open=False, **options)
    with pytest.raises(ValueError, match=message):
        mysql_pool_lifespan({"host": "127.0.0.1"}, **options)


def test_infinite_lifetimes_and_idle_times_mean_never() -> None:
    pool = Pool(
        {"host": "127.0.0.1"},
        size=1,
        max_size=2,
        max_lifetime=float("inf"),
        max_idle=float("inf"),
        fillup=False,
        open=False,
    )
    assert (pool.max_lifetime, pool.max_idle) == (float("inf"), float("inf"))


# -- max_idle and the keepalive ----------------------------------------------------


def test_max_idle_counts_from_the_last_caller_not_the_keepalive(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keepalive pings idle connections more often than max_idle: the
    connections a burst opened beyond size must still be closed."""
    monkeypatch.setattr(_housekeeper, "KEEPALIVE_INTERVAL", 0.05)
    with Pool(db.cfg, size=1, max_size=3, max_idle=0.5) as pool:
        burst = threading.Barrier(3)

        def borrow() -> None:
            with pool.fetch() as cursor:
                cursor.execute("SELECT 1")
                burst.wait(10)  # all three held at once: two more opened

        threads = [threading.Thread(target=borrow) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert pool.stats().size == 3
        pinged = dict(db.query("SHOW GLOBAL STATUS LIKE 'Com_do'"))["Com_do"]
        wait_until(lambda: pool.stats().size == 1, timeout=3)
        # The survivor is still kept alive by the keepalive's DO 1.
        wait_until(
            lambda: (
                dict(db.query("SHOW GLOBAL STATUS LIKE 'Com_do'"))["Com_do"] != pinged
            )
        )
        stats = pool.stats()
    assert (stats.opened, stats.closed, stats.errors) == (3, 2, 0)


# -- read_timeout: the statement is KILLed, its slot kept until then --------------

TIMED_OUT = {"code": 4, "message": "Database Query Timed Out"}


def sleeping_sessions(db: Database) -> int:
    return int(
        db.scalar(
            "SELECT COUNT(*) FROM information_schema.processlist "
            "WHERE user = %s AND info LIKE 'SELECT SLEEP%%'",
            (db.user,),
        )
    )


def timeout_app(cfg: dict[str, Any], table: str, **options: Any) -> FastAPI:
    """Routes that lock a row, then outlast read_timeout (1 s)."""
    app = FastAPI(lifespan=mysql_pool_lifespan({**cfg, "read_timeout": 1}, **options))

    @app.post("/sync/{id}")
    def sync_route(id: int, cursor: Cursor) -> None:
        cursor.execute(f"UPDATE {table} SET v = v + 1 WHERE id = %s", (id,))
        cursor.execute("SELECT SLEEP(4)")

    @app.post("/async/{id}")
    async def async_route(id: int, cursor: AsyncCursor) -> None:
        await cursor.execute(f"UPDATE {table} SET v = v + 1 WHERE id = %s", (id,))
        await cursor.execute("SELECT SLEEP(4)")

    return app


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_read_timeout_kills_the_statement_and_answers_504(
    db: Database, kind: str
) -> None:
    table = db.create_table("t", "id INT PRIMARY KEY, v INT")
    db.query(f"INSERT INTO {table} VALUES (1, 0)")
    app = timeout_app(db.cfg, table, size=1, max_size=1)
    with TestClient(app) as client:
        started = time.monotonic()
        response = client.post(f"/{kind}/1")
        elapsed = time.monotonic() - started
        # KILLed, and gone, before the answer: nothing runs on, no row stays
        # locked, the update is rolled back.
        assert sleeping_sessions(db) == 0
        assert db.open_transactions() == 0
        db.query(f"SELECT v FROM {table} WHERE id = 1 FOR UPDATE NOWAIT")
        assert db.scalar(f"SELECT v FROM {table}") == 0
    assert (response.status_code, response.json()) == (504, TIMED_OUT)
    assert "retry-after" not in response.headers
    assert 1 <= elapsed < 3


@pytest.mark.anyio
@pytest.mark.slow
async def test_repeated_read_timeouts_keep_max_size(db: Database) -> None:
    """Each timed-out statement's slot stays taken until its session is gone:
    the server never sees more than max_size sessions, plus the KILL's own."""
    table = db.create_table("t", "id INT PRIMARY KEY, v INT")
    db.query(f"INSERT INTO {table} VALUES (1, 0), (2, 0), (3, 0), (4, 0)")
    app = timeout_app(db.cfg, table, size=0, max_size=2, acquire_timeout=10)
    peak = 0
    responses: list[httpx.Response] = []
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:

            async def one(path: str) -> None:
                responses.append(await client.post(path))

            async def watch() -> None:
                nonlocal peak
                while len(responses) < 4:
                    count = await anyio.to_thread.run_sync(db.connection_count)
                    peak = max(peak, count)

            async with anyio.create_task_group() as group:
                group.start_soon(watch)
                for path in ("/sync/1", "/async/2", "/sync/3", "/async/4"):
                    group.start_soon(one, path)
        left_running = sleeping_sessions(db)
    assert peak <= 3, peak
    assert left_running == 0
    assert [r.json() for r in responses] == [TIMED_OUT] * 4
    assert db.scalar(f"SELECT SUM(v) FROM {table}") == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_read_timeout_with_the_server_unreachable_answers_503(
    db: Database, kind: str
) -> None:
    """No answer, and no way to reach the server to KILL: code 1, as for a
    lost connection."""
    with Proxy(db.server.host, db.server.port) as proxy:
        cfg = {**proxy.config(db.cfg), "read_timeout": 1, "connect_timeout": 1}
        app = FastAPI(lifespan=mysql_pool_lifespan(cfg, size=1, max_size=1))

        @app.get("/sync")
        def sync_route(cursor: Cursor) -> None:
            cursor.execute("SELECT 1")
            proxy.hold()  # nothing comes back, new connections included
            cursor.execute("SELECT SLEEP(3)")

        @app.get("/async")
        async def async_route(cursor: AsyncCursor) -> None:
            await cursor.execute("SELECT 1")
            proxy.hold()
            await cursor.execute("SELECT SLEEP(3)")

        with TestClient(app) as client:
            started = time.monotonic()
            response = client.get(f"/{kind}")
            elapsed = time.monotonic() - started
            proxy.release()
    assert (response.status_code, response.json()["code"]) == (503, 1)
    assert response.headers["retry-after"] == "1"
    # read_timeout, then connect_timeout for the KILL's connection.
    assert 2 <= elapsed < 4


# -- connecting for the event loop ----------------------------------------------------


@pytest.mark.anyio
async def test_an_async_request_connects_without_a_worker_thread(
    db: Database,
) -> None:
    """Sync routes hold every worker thread (and the idle connections): an
    async request that needs a new connection is served at once all the same."""
    release = threading.Event()
    inside = threading.Semaphore(0)

    @contextlib.asynccontextmanager
    async def two_threads(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2
        yield

    app = FastAPI(
        lifespan=mysql_pool_lifespan(
            db.cfg, size=2, max_size=4, acquire_timeout=1, lifespan=two_threads
        )
    )

    @app.get("/busy")
    def busy(cursor: Cursor) -> None:
        cursor.execute("SELECT 1")
        inside.release()
        release.wait(10)

    @app.get("/quick")
    async def quick(cursor: AsyncCursor) -> int:
        await cursor.execute("SELECT 1")
        return (await cursor.fetchone())[0]  # type: ignore[no-any-return,index]

    with serve(app) as url:
        async with (
            httpx.AsyncClient(base_url=url, timeout=30) as client,
            anyio.create_task_group() as group,
        ):
            for _ in range(2):
                group.start_soon(client.get, "/busy")
            for _ in range(2):
                assert await anyio.to_thread.run_sync(inside.acquire, True, 10)
            # Both worker threads are taken (and the old code waited for one).
            unblock = threading.Timer(3, release.set)
            unblock.start()
            started = time.monotonic()
            response = await client.get("/quick")
            elapsed = time.monotonic() - started
            release.set()
            unblock.cancel()
    assert response.json() == 1
    assert elapsed < 1, elapsed


@pytest.mark.anyio
async def test_kills_after_read_timeouts_never_hold_up_connects(db: Database) -> None:
    """A KILL after a read timeout can take seconds (it waits for the session
    to end, and for the KILL before it): it runs on a thread of its own, so
    the async connects of other requests never queue behind it."""
    from fastapi_mysqlpool._pool import CONNECT_THREADS

    timeouts = CONNECT_THREADS
    pool = Pool({**db.cfg, "read_timeout": 1}, size=0, max_size=timeouts + 1)
    housekeeper = pool.housekeeper
    kill = housekeeper.akill_after_timeout
    all_timed_out = anyio.Event()
    timed_out = 0

    async def counted(conn: Any, timeout: float) -> Any:
        nonlocal timed_out
        timed_out += 1
        if timed_out == timeouts:
            all_timed_out.set()
        return await kill(conn, timeout)

    housekeeper.akill_after_timeout = counted  # type: ignore[method-assign]
    errors: list[BaseException] = []

    async def sleep() -> None:
        try:
            async with pool.cursor() as cursor:
                await cursor.execute("SELECT SLEEP(5)")
        except MySQLdb.OperationalError as exc:
            errors.append(exc)

    try:
        async with anyio.create_task_group() as group:
            housekeeper._kill_lock.acquire()  # a KILL that takes its time
            try:
                for _ in range(timeouts):
                    group.start_soon(sleep)
                with anyio.fail_after(5):
                    await all_timed_out.wait()
                pool.acquire_timeout = 2
                started = time.monotonic()
                async with pool.cursor() as cursor:
                    await cursor.execute("SELECT 1")
                elapsed = time.monotonic() - started
            finally:
                housekeeper._kill_lock.release()
    finally:
        await pool.aclose()
    assert elapsed < 1, elapsed
    assert [type(e) for e in errors] == [QueryTimeout] * timeouts
    assert db.connection_count(settle_at=0) == 0


@pytest.mark.anyio
async def test_a_slow_connect_honours_acquire_timeout_and_is_not_lost(
    db: Database,
) -> None:
    """The server takes its time to accept: the caller gives up after
    acquire_timeout (code 2); the connection, when it comes, goes to the next
    caller."""
    with Proxy(db.server.host, db.server.port) as proxy:
        cfg = {**proxy.config(db.cfg), "connect_timeout": 3}
        pool = Pool(cfg, size=0, max_size=1, acquire_timeout=0.5)
        try:
            proxy.hold()  # the handshake hangs
            results: list[Any] = []
            first_done = anyio.Event()

            async def borrow() -> None:
                try:
                    async with pool.cursor() as cursor:
                        await cursor.execute("SELECT 'served'")
                        results.append((await cursor.fetchone())[0])
                except PoolTimeout as exc:
                    results.append(exc)
                first_done.set()

            async with anyio.create_task_group() as group:
                started = time.monotonic()
                group.start_soon(borrow)  # gets the slot, waits for the connect
                await anyio.wait_all_tasks_blocked()
                pool.acquire_timeout = 10
                group.start_soon(borrow)  # queued behind it
                await anyio.wait_all_tasks_blocked()
                with anyio.fail_after(2):
                    await first_done.wait()
                assert isinstance(results[0], PoolTimeout)
                assert time.monotonic() - started < 1
                proxy.release()  # the connection comes: to the queued caller
            assert results[1:] == ["served"]
            stats = pool.stats()
            assert (stats.opened, stats.timeouts, stats.in_use) == (1, 1, 0)
            assert (stats.idle, stats.requests) == (1, 2)
        finally:
            proxy.release()
            await pool.aclose()
    assert db.connection_count(settle_at=0) == 0


@pytest.mark.anyio
async def test_close_waits_for_a_connect_under_way(db: Database) -> None:
    """A caller gave up on a connect that then finishes while the pool
    closes: close() waits for it and closes it."""
    with Proxy(db.server.host, db.server.port) as proxy:
        cfg = {**proxy.config(db.cfg), "connect_timeout": 3}
        pool = Pool(cfg, size=0, max_size=1, acquire_timeout=0.3)
        proxy.hold()
        with pytest.raises(PoolTimeout):
            async with pool.cursor():
                pass
        async with anyio.create_task_group() as group:
            group.start_soon(pool.aclose)
            await anyio.wait_all_tasks_blocked()
            proxy.release()  # the connect finishes while the pool closes
    assert db.connection_count(settle_at=0) == 0
    stats = pool.stats()
    assert (stats.opened, stats.closed, stats.size) == (1, 1, 0)


# -- server errors answering COMMIT, ROLLBACK and the check: nothing to KILL ---------


def server_connections(db: Database) -> int:
    """Connection attempts the server has seen (successful or not)."""
    return int(dict(db.query("SHOW GLOBAL STATUS LIKE 'Connections'"))["Connections"])


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("ending", ["commit", "rollback"])
def test_a_server_error_ending_a_transaction_kills_nothing(
    db: Database, kind: str, ending: str
) -> None:
    """In an XA transaction left IDLE (XA END), the server answers COMMIT and
    ROLLBACK with error 1399: the connection is in step. It is closed (never
    reused after a failed COMMIT), but no extra connection KILLs its session."""
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=0, max_size=1))

    @app.post("/sync/{ending}")
    def sync_route(ending: str, cursor: Cursor) -> None:
        cursor.execute("XA START 'x'")
        cursor.execute("XA END 'x'")
        if ending == "rollback":
            raise HTTPException(409)

    @app.post("/async/{ending}")
    async def async_route(ending: str, cursor: AsyncCursor) -> None:
        await cursor.execute("XA START 'x'")
        await cursor.execute("XA END 'x'")
        if ending == "rollback":
            raise HTTPException(409)

    with TestClient(app) as client:
        response = client.post(f"/{kind}/{ending}")
        pool = get_pool(app)
        wait_until(lambda: not pool.housekeeper.to_kill)  # the old code's KILL, if any
        stats = pool.stats()
    if ending == "commit":
        assert (response.status_code, response.json()["code"]) == (500, 0)
    else:
        assert response.status_code == 409
    assert (stats.opened, stats.closed, stats.errors) == (1, 1, 0)


def use_up_queries(db: Database) -> int:
    """Run statements as the test's user until the server refuses one; its
    error number."""
    with contextlib.closing(MySQLdb.connect(**db.cfg)) as conn:
        for _ in range(10_000):
            try:
                conn.query(b"DO 1")
            except MySQLdb.OperationalError as exc:
                return int(exc.args[0])
    raise AssertionError("no limit reached")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_server_error_answering_the_check_kills_nothing(
    db: Database, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's max_queries_per_hour runs out: the check before use (DO 1)
    gets error 1226, an answer. The connection is alive and in step: no
    KILL, no replacement to open (which the limit would refuse too)."""
    monkeypatch.setattr(_connection, "CHECK_IDLE_AFTER", 0.0)  # a check before each use
    db.query(f"ALTER USER '{db.user}'@'%' WITH MAX_QUERIES_PER_HOUR 1000")
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=0, max_size=1))

    @app.get("/sync")
    def sync_route(cursor: Cursor) -> None:
        cursor.execute("SELECT 1")

    @app.get("/async")
    async def async_route(cursor: AsyncCursor) -> None:
        await cursor.execute("SELECT 1")

    with TestClient(app) as client:
        assert client.get(f"/{kind}").status_code == 200  # opens the connection
        assert use_up_queries(db) == 1226
        attempts = server_connections(db)
        response = client.get(f"/{kind}")
        pool = get_pool(app)
        wait_until(lambda: not pool.housekeeper.to_kill)  # the old code's KILL, if any
        stats = pool.stats()
        assert server_connections(db) == attempts
    assert response.json() == {"code": 2, "message": "Database Server Is Busy"}
    assert (stats.opened, stats.closed, stats.errors) == (1, 1, 0)
