"""get_async_cursor / AsyncPoolCursor: the get_cursor contract for async routes,
every result shape, and an event loop that never waits on the database."""

from __future__ import annotations

import gc
import statistics
import threading
import time
from typing import Any

import anyio
import httpx
import MySQLdb
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient

from fastapi_mysqlpool import (
    AsyncCursor,
    AsyncDictCursor,
    AsyncPoolCursor,
    CursorReleasedError,
    Pool,
    add_pool_task,
    get_async_cursor,
    get_pool,
    mysql_pool_lifespan,
)

from .middleware import Deadline
from .proxy import Proxy
from .servers import Database, serve
from .test_pool import wait_until


@pytest.fixture
def items(db: Database) -> str:
    table = db.create_table("items", "id INT PRIMARY KEY, name VARCHAR(40), price INT")
    db.query(f"INSERT INTO {table} VALUES (1, 'one', 10), (2, 'two', 20), (3, 'x', 30)")
    return table


def test_the_cursor_api_of_aiomysql(db: Database, items: str) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    seen: dict[str, Any] = {}

    @app.get("/")
    async def route(cursor: AsyncPoolCursor[Any] = Depends(get_async_cursor)) -> None:
        assert await cursor.execute(f"SELECT * FROM {items} ORDER BY id") == 3
        seen["description"] = [column[0] for column in cursor.description or ()]
        seen["one"] = await cursor.fetchone()
        seen["many"] = await cursor.fetchmany(1)
        await cursor.scroll(0, mode="absolute")
        seen["all"] = await cursor.fetchall()
        seen["after"] = await cursor.fetchone()
        await cursor.execute(f"SELECT id FROM {items} WHERE id > %(min)s", {"min": 1})
        seen["iterated"] = [row async for row in cursor]
        await cursor.execute(f"SELECT id FROM {items} WHERE 0")
        seen["empty"] = (await cursor.fetchall(), await cursor.fetchone())
        await cursor.execute(f"INSERT INTO {items} VALUES (9, %s, %s)", ("nine", 90))
        seen["insert"] = (cursor.rowcount, cursor.lastrowid, cursor.description)
        seen["mogrify"] = cursor.mogrify("SELECT %s, %s", ("it's", None))
        seen["count"] = await cursor.executemany(
            f"INSERT INTO {items} (id, name, price) VALUES (%s, %s, %s)",
            [(i, f"n{i}", i) for i in range(100, 110)],
        )
        seen["updated"] = await cursor.executemany(
            f"UPDATE {items} SET price = price + 1 WHERE id = %s", [(1,), (2,)]
        )

    with TestClient(app) as client:
        assert client.get("/").status_code == 200
    assert seen["description"] == ["id", "name", "price"]
    assert seen["one"] == (1, "one", 10)
    assert seen["many"] == [(2, "two", 20)]
    assert seen["all"] == [(1, "one", 10), (2, "two", 20), (3, "x", 30)]
    assert seen["after"] is None
    assert seen["iterated"] == [(2,), (3,)]
    assert seen["empty"] == ([], None)
    assert seen["insert"] == (1, 0, None)
    assert seen["mogrify"] == "SELECT 'it\\'s', NULL"
    assert seen["count"] == 10
    assert seen["updated"] == 2
    assert db.scalar(f"SELECT COUNT(*) FROM {items}") == 14  # committed


def test_dict_rows_and_the_alias(db: Database, items: str) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.get("/{id}")
    async def route(id: int, cursor: AsyncDictCursor) -> Any:
        await cursor.execute(f"SELECT id, name FROM {items} WHERE id = %s", (id,))
        return await cursor.fetchone()

    with TestClient(app) as client:
        assert client.get("/2").json() == {"id": 2, "name": "two"}


def test_commit_before_the_response_rollback_on_any_exception(
    db: Database, items: str
) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    kept: list[AsyncPoolCursor[Any]] = []
    seen_at_start: list[int] = []

    @app.post("/{id}")
    async def insert(id: int, cursor: AsyncCursor) -> None:
        await cursor.execute(f"INSERT INTO {items} (id) VALUES (%s)", (id,))
        kept.append(cursor)
        if id == 20:
            raise HTTPException(status_code=409)
        if id == 21:
            raise RuntimeError("boom")

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        async def send_spy(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen_at_start.append(db.scalar(f"SELECT COUNT(*) FROM {items}"))
            await send(message)

        await app(scope, receive, send_spy)

    with TestClient(spy, raise_server_exceptions=False) as client:
        assert client.post("/10").status_code == 200
        assert client.post("/20").status_code == 409
        assert client.post("/21").status_code == 500
        stats = get_pool(app).stats()
    assert seen_at_start == [4, 4, 4]  # row 10 committed before its response
    assert db.query(f"SELECT id FROM {items} WHERE id >= 10") == ((10,),)
    assert (stats.in_use, stats.closed) == (0, 0)
    with pytest.raises(CursorReleasedError):
        anyio.run(kept[0].execute, "SELECT 1")
    with pytest.raises(CursorReleasedError):
        anyio.run(kept[0].fetchall)


def test_every_result_shape(db: Database) -> None:
    big = db.create_table("big", "id INT PRIMARY KEY, filler CHAR(40)")
    db.query(f"INSERT INTO {big} SELECT seq, REPEAT('x', 40) FROM seq_1_to_100000")
    db.query(
        f"CREATE PROCEDURE {big}_proc() BEGIN SELECT 1 AS a; SELECT 2 AS b, 3 AS c; END"
    )
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.get("/big")
    async def read_big(cursor: AsyncCursor) -> list[int]:
        count = await cursor.execute(f"SELECT * FROM {big}")
        rows = await cursor.fetchall()
        return [count, len(rows), rows[-1][0]]

    @app.get("/multi")
    async def multi(cursor: AsyncCursor) -> list[Any]:
        results = []
        await cursor.execute("SELECT 1; SELECT 2, 3; DO 4")
        results.append(await cursor.fetchall())
        while await cursor.nextset():
            results.append(await cursor.fetchall())
        await cursor.callproc(f"{big}_proc")
        results.append(await cursor.fetchall())
        await cursor.nextset()
        results.append(await cursor.fetchall())
        # The procedure's status result is left unread: drained at the end.
        return results

    @app.get("/error")
    async def error(cursor: AsyncCursor) -> Any:
        with pytest.raises(MySQLdb.ProgrammingError):
            await cursor.execute("SELEC 1")
        await cursor.execute("SELECT 'still in step'")  # same connection
        return await cursor.fetchone()

    with TestClient(app) as client:
        assert client.get("/big").json() == [100000, 100000, 100000]
        assert client.get("/multi").json() == [[[1]], [[2, 3]], [], [[1]], [[2, 3]]]
        assert client.get("/error").json() == ["still in step"]
        stats = get_pool(app).stats()
    # Nothing discarded. (callproc changes the session: that connection was
    # reset, and /error, not waiting for it, may have opened another.)
    assert (stats.closed, stats.errors, stats.resets) == (0, 0, 1)


def test_a_connection_dying_mid_query_is_a_503_and_is_discarded(
    db: Database,
) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.get("/slow")
    async def slow(cursor: AsyncCursor) -> None:
        await cursor.execute("SELECT CONNECTION_ID()")
        (own,) = await cursor.fetchone()  # type: ignore[misc]
        killer = threading.Thread(
            target=db.kill_when_running, args=(own, "SELECT SLEEP")
        )
        killer.start()
        await cursor.execute("SELECT SLEEP(5)")

    @app.get("/ok")
    async def ok(cursor: AsyncCursor) -> int:
        await cursor.execute("SELECT 1")
        return int((await cursor.fetchone())[0])  # type: ignore[index]

    with TestClient(app) as client:
        response = client.get("/slow")
        assert response.status_code == 503
        assert response.json()["code"] == 1
        assert client.get("/ok").json() == 1
        stats = get_pool(app).stats()
    assert stats.closed >= 1


def test_large_statements_are_sent_without_blocking(db: Database) -> None:
    table = db.create_table("blob", "id INT PRIMARY KEY, body MEDIUMTEXT")
    body = "x" * (3 * 1024 * 1024)
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.post("/")
    async def store(cursor: AsyncCursor) -> int:
        await cursor.execute(f"INSERT INTO {table} VALUES (1, %s)", (body,))
        await cursor.execute(f"SELECT LENGTH(body) FROM {table}")
        return int((await cursor.fetchone())[0])  # type: ignore[index]

    with TestClient(app) as client:
        assert client.post("/").json() == len(body)


def test_async_background_tasks_get_an_async_cursor(db: Database, items: str) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    kinds: list[str] = []

    async def bump(cursor: AsyncPoolCursor[Any], id: int, by: int) -> None:
        kinds.append(type(cursor).__name__)
        await cursor.execute(
            f"UPDATE {items} SET price = price + %s WHERE id = %s", (by, id)
        )

    @app.post("/")
    async def route(background: BackgroundTasks) -> None:
        add_pool_task(background, bump, 1, by=5)

    with TestClient(app) as client:
        client.post("/")
    assert kinds == ["AsyncPoolCursor"]
    assert db.scalar(f"SELECT price FROM {items} WHERE id = 1") == 15


@pytest.mark.anyio
async def test_pool_cursor_outside_requests(db: Database, items: str) -> None:
    pool = get_pool_for(db)
    try:
        async with pool.cursor(dict_rows=True) as cursor:
            await cursor.execute(f"SELECT name FROM {items} WHERE id = 3")
            assert await cursor.fetchone() == {"name": "x"}
            await cursor.execute(f"DELETE FROM {items} WHERE id = 3")

        async def delete_all_then_fail() -> None:
            async with pool.cursor() as cursor:
                await cursor.execute(f"DELETE FROM {items}")
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            await delete_all_then_fail()
    finally:
        await pool.aclose()
    assert db.scalar(f"SELECT COUNT(*) FROM {items}") == 2


class LoopWatch:
    """Ticks on the event loop; records the longest it was kept waiting."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self, done: anyio.Event) -> None:
        last = time.perf_counter()
        while not done.is_set():
            await anyio.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now


async def read_big_result(pool: Any, table: str) -> tuple[int, float]:
    """(rows, longest loop stall) for a 100,000-row SELECT.

    The cyclic garbage collector is paused meanwhile: a full collection, which
    200,000 new objects trigger whoever creates them, stops every thread for
    tens of milliseconds in a process as big as pytest's. What is measured is
    what the cursor itself holds the loop for.
    """
    watch = LoopWatch()
    done = anyio.Event()
    gc.disable()
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(watch.run, done)
            async with pool.cursor() as cursor:
                await cursor.execute(f"SELECT * FROM {table}")
                rows = len(await cursor.fetchall())
            done.set()
    finally:
        gc.enable()
    return rows, watch.longest


@pytest.fixture
def big(db: Database) -> str:
    table = db.create_table("big", "id INT PRIMARY KEY, filler CHAR(40)")
    db.query(f"INSERT INTO {table} SELECT seq, REPEAT('x', 40) FROM seq_1_to_100000")
    return table


@pytest.mark.anyio
async def test_a_large_result_never_holds_the_loop(db: Database, big: str) -> None:
    """100,000 rows (about 5 MB) are read in a worker thread: the loop goes on."""
    pool = get_pool_for(db)
    try:
        rows, longest = await read_big_result(pool, big)
    finally:
        await pool.aclose()
    assert rows == 100_000
    # Reading them all takes ~50 ms; the loop waits at most a GIL switch
    # interval (5 ms) at a time.
    assert longest < 0.020, longest


@pytest.mark.anyio
async def test_a_result_arriving_in_pieces_never_holds_the_loop(
    db: Database, big: str
) -> None:
    """Over a network an answer arrives in segments: the first wakes the loop
    long before the rest is there. Only a complete answer is read on the loop."""
    with Proxy(db.server.host, db.server.port, trickle=1400, pause=0.0002) as proxy:
        pool = Pool(proxy.config(db.cfg), size=1, max_size=1)
        try:
            started = time.perf_counter()
            rows, longest = await read_big_result(pool, big)
            elapsed = time.perf_counter() - started
        finally:
            await pool.aclose()
    assert rows == 100_000
    assert elapsed > 0.3  # the transfer is slow...
    assert longest < 0.020, longest  # ...and the loop never waits for it


def get_pool_for(db: Database) -> Any:
    return Pool(db.cfg, size=1, max_size=2)


@pytest.mark.anyio
async def test_the_event_loop_never_waits_for_the_database(db: Database) -> None:
    """While SELECT SLEEP(1) runs, another request on the same worker is
    answered as fast as usual (real uvicorn, one event loop)."""
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=2))

    @app.get("/sleep")
    async def sleep(cursor: AsyncCursor) -> None:
        await cursor.execute("SELECT SLEEP(1)")

    @app.get("/fast")
    async def fast(cursor: AsyncCursor) -> int:
        await cursor.execute("SELECT 1")
        return int((await cursor.fetchone())[0])  # type: ignore[index]

    async def latency(client: httpx.AsyncClient) -> float:
        started = time.perf_counter()
        assert (await client.get("/fast")).status_code == 200
        return time.perf_counter() - started

    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for _ in range(10):  # warm up
                await latency(client)
            usual = statistics.median([await latency(client) for _ in range(21)])
            async with anyio.create_task_group() as group:
                group.start_soon(client.get, "/sleep")
                await anyio.sleep(0.2)  # /sleep is now waiting on the server
                during = [await latency(client) for _ in range(21)]
    # A loop blocked by the sleeping query would hold every one of these ~1 s.
    assert statistics.median(during) < usual + 0.020, (usual, during)
    assert max(during) < 0.5, during


def test_a_cancelled_query_is_discarded_and_its_session_killed(db: Database) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1, max_size=1))
    app.add_middleware(Deadline, seconds=0.3)  # mid-query

    @app.get("/slow")
    async def slow(cursor: AsyncCursor) -> None:
        await cursor.execute("SELECT SLEEP(30)")

    @app.get("/next")
    async def next_user(cursor: AsyncCursor) -> list[Any]:
        await cursor.execute("SELECT 'fresh'")
        return list(await cursor.fetchall())

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/slow").status_code == 504
        # The next user never reads the stale SLEEP result...
        assert client.get("/next").json() == [["fresh"]]
        # ...and the abandoned query does not run on for 30 s: its session is
        # KILLed, so the server holds no more than max_size sessions for us.
        wait_until(lambda: db.connection_count() == 1)
        stats = get_pool(app).stats()
    # Opened: the first, the KILL's own, the replacement; closed: the first two.
    assert (stats.opened, stats.closed) == (3, 2)


def test_a_statement_cut_off_mid_flight_never_answers_the_next_one(
    db: Database,
) -> None:
    """An UPDATE waiting on a row lock is cancelled; the lock goes a moment
    later, so its answer does come. The statements after it on the pool must
    get their own answers, never the cut-off one's."""
    table = db.create_table("counter", "id INT PRIMARY KEY, v INT")
    db.query(f"INSERT INTO {table} VALUES (1, 0)")
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1, max_size=1))
    app.add_middleware(Deadline, seconds=0.3)
    waiting: list[int] = []

    @app.post("/bump")
    async def bump(cursor: AsyncCursor) -> int:
        await cursor.execute("SELECT CONNECTION_ID()")
        waiting.append((await cursor.fetchone())[0])  # type: ignore[index]
        return await cursor.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1")

    @app.get("/value")
    async def value(cursor: AsyncCursor) -> list[Any]:
        await cursor.execute(f"SELECT v FROM {table} WHERE id = 1")
        return list(await cursor.fetchall())

    locker = MySQLdb.connect(**db.cfg)
    locker.query(f"SELECT v FROM {table} WHERE id = 1 FOR UPDATE".encode())
    locker.store_result()

    def release_the_lock_later() -> None:
        while not waiting:
            time.sleep(0.005)
        db.wait_running(waiting[0], "UPDATE")
        time.sleep(1.0)  # the timing under test: after the cancellation
        locker.rollback()

    releaser = threading.Thread(target=release_the_lock_later)
    releaser.start()
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.post("/bump").status_code == 504
            releaser.join()
            assert client.get("/value").json() == [[0]]  # the UPDATE never ran
            assert client.post("/bump").json() == 1
            assert client.get("/value").json() == [[1]]
    finally:
        releaser.join()
        locker.close()
    assert db.scalar(f"SELECT v FROM {table}") == 1


def test_a_swallowed_cancellation_cannot_reuse_the_connection(db: Database) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1, max_size=1))

    @app.get("/")
    async def route(cursor: AsyncCursor) -> None:
        with anyio.move_on_after(0.2):
            await cursor.execute("SELECT SLEEP(5)")
        await cursor.execute("SELECT 1")  # the SLEEP's answer is still to come

    @app.get("/next")
    async def next_one(cursor: AsyncCursor) -> list[Any]:
        await cursor.execute("SELECT 'mine'")
        return list(await cursor.fetchall())

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/")
        assert response.json()["code"] == 0
        assert client.get("/next").json() == [["mine"]]


def test_a_cancellation_during_commit_waits_for_its_answer(db: Database) -> None:
    """Cancelled while the COMMIT's answer is on its way: the answer is read
    before the cancellation goes on, so the commit is never left in doubt and
    the connection is reused, not closed and KILLed."""
    table = db.create_table("t", "id INT PRIMARY KEY")
    finished_body = False

    with Proxy(db.server.host, db.server.port) as proxy:
        pool = Pool(proxy.config(db.cfg), size=1, max_size=1, open=False)

        async def cancel_once_commit_is_sent(scope: anyio.CancelScope) -> None:
            sent = await anyio.to_thread.run_sync(proxy.spoke_while_held.wait, 10)
            assert sent
            scope.cancel()
            proxy.release()  # the answer arrives after the cancellation

        async def main() -> None:
            nonlocal finished_body
            await pool.aopen()
            async with anyio.create_task_group() as group:
                with anyio.CancelScope() as scope:
                    group.start_soon(cancel_once_commit_is_sent, scope)
                    async with pool.cursor() as cursor:
                        await cursor.execute(f"INSERT INTO {table} VALUES (1)")
                        proxy.hold()
                    finished_body = True  # not reached: cancelled in the COMMIT
            stats = pool.stats()
            await pool.aclose()
            assert (stats.opened, stats.closed, stats.idle) == (1, 0, 1)

        anyio.run(main)
    assert not finished_body
    assert db.scalar(f"SELECT COUNT(*) FROM {table}") == 1


def test_read_timeout_bounds_every_wait(db: Database) -> None:
    """A partition: nothing comes back, the socket stays open. With read_timeout
    set, the request gets a 503 after it instead of hanging."""
    with Proxy(db.server.host, db.server.port) as proxy:
        cfg = {**proxy.config(db.cfg), "read_timeout": 1}
        app = FastAPI(lifespan=mysql_pool_lifespan(cfg, size=1, max_size=1))

        @app.get("/")
        async def route(cursor: AsyncCursor) -> None:
            await cursor.execute("SELECT 1")
            proxy.sever(blackhole=True)
            await cursor.execute("SELECT 2")

        with TestClient(app) as client:
            started = time.monotonic()
            response = client.get("/")
            elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert response.json()["code"] == 1
        assert 1 <= elapsed < 3


def test_compressed_connections_work(db: Database, big: str) -> None:
    """Compressed packets are not plain MySQL ones: never read on the loop."""
    app = FastAPI(lifespan=mysql_pool_lifespan({**db.cfg, "compress": True}, size=1))

    @app.get("/")
    async def route(cursor: AsyncCursor) -> list[Any]:
        await cursor.execute("SELECT 1, 'x'")
        small = await cursor.fetchall()
        await cursor.execute(f"SELECT COUNT(*) FROM {big}")
        count = await cursor.fetchone()
        await cursor.execute(f"SELECT id FROM {big}")
        return [small, count, len(await cursor.fetchall())]

    with TestClient(app) as client:
        assert client.get("/").json() == [[[1, "x"]], [100000], 100000]
