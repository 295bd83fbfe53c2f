"""AsyncPoolCursor defects of issue 16: an unawaited execute, large statements,
answers that fail partway, executemany of multi-result statements, and the
description of answers read in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import MySQLdb
import MySQLdb.converters
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from MySQLdb.constants import FIELD_TYPE

from fastapi_mysqlpool import (
    AsyncCursor,
    AsyncPoolCursor,
    Cursor,
    CursorReleasedError,
    Pool,
    _aio,
    get_pool,
    mysql_pool_lifespan,
)

from .servers import Database, serve
from .test_async_cursor import LoopWatch

#: Bounds every wait on a request in these tests: a regression fails, it does
#: not hang the suite.
REQUEST_TIMEOUT = 10.0


@contextlib.asynccontextmanager
async def in_process(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan, and a client calling it on this event loop."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def let_orphans_wait() -> None:
    """Loop iterations enough for a statement sent by a task of its own to stop
    looking for its answer and register with the selector (see _aio.LOOKS)."""
    for _ in range(_aio.LOOKS + 3):
        await asyncio.sleep(0)


def forgetful_app(db: Database) -> tuple[FastAPI, list[asyncio.Task[Any]]]:
    """/forgot runs a statement in a task it never awaits (a missing await);
    /slow needs a wait on the selector; /orphans reports how the tasks ended."""
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1, max_size=1))
    orphans: list[asyncio.Task[Any]] = []

    @app.get("/forgot")
    async def forgot(cursor: AsyncCursor) -> None:
        orphans.append(asyncio.create_task(cursor.execute("SELECT SLEEP(0.5)")))
        await let_orphans_wait()

    @app.get("/slow")
    async def slow(cursor: AsyncCursor) -> int:
        await cursor.execute("SELECT SLEEP(0.05), 7")
        return int((await cursor.fetchone())[1])  # type: ignore[index]

    @app.get("/orphans")
    async def ended() -> list[str | None]:
        with anyio.fail_after(REQUEST_TIMEOUT):
            await asyncio.wait(orphans)
        return [type(task.exception()).__name__ for task in orphans]

    return app, orphans


# -- an unawaited execute (section 3) ------------------------------------------


@pytest.mark.anyio
async def test_an_unawaited_execute_never_hangs_a_later_request(db: Database) -> None:
    """The orphan's connection is closed with its request; the replacement gets
    the same file descriptor, and its waits must still wake (max_size=1)."""
    app, orphans = forgetful_app(db)
    async with in_process(app) as client:
        for _ in range(3):
            with anyio.fail_after(REQUEST_TIMEOUT):
                forgot = await client.get("/forgot")
                assert (forgot.status_code, forgot.json()["code"]) == (500, 0)
                assert (await client.get("/slow")).json() == 7
        # Each orphan was woken with an error when its connection closed,
        # instead of waiting forever on a descriptor no longer its own.
        for orphan in orphans:
            with anyio.fail_after(REQUEST_TIMEOUT), pytest.raises(MySQLdb.Error):
                await orphan
        stats = get_pool(app).stats()
    assert stats.in_use == 0


def test_an_unawaited_execute_never_hangs_a_later_request_under_uvicorn(
    db: Database,
) -> None:
    app, _ = forgetful_app(db)
    with (
        serve(app, timeout_graceful_shutdown=1) as url,
        httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as client,
    ):
        for _ in range(4):
            assert client.get("/forgot").status_code == 500
            assert client.get("/slow").json() == 7
        ended = client.get("/orphans").json()
    assert ended == ["InterfaceError"] * 4


@pytest.mark.anyio
async def test_a_connection_closed_by_another_thread_mid_wait(db: Database) -> None:
    """Only the loop may touch its selector: a close from another thread is
    handed to it, which removes the registration, wakes the wait with an
    error, and closes; the next connection (same fd) is waited on as usual."""
    pool = Pool(db.cfg, size=1, max_size=1)
    closed: list[Any] = []

    async def wait_while_a_thread_closes() -> None:
        async with pool.cursor() as cursor, anyio.create_task_group() as group:
            conn = cursor.connection
            closed.append(conn)

            async def close_from_a_thread() -> None:
                await let_orphans_wait()
                assert conn.selector_wait is not None
                await anyio.to_thread.run_sync(conn.close)

            group.start_soon(close_from_a_thread)
            with anyio.fail_after(REQUEST_TIMEOUT):
                with pytest.raises(MySQLdb.InterfaceError, match="closed while"):
                    await cursor.execute("SELECT SLEEP(5)")

    try:
        with pytest.raises(MySQLdb.InterfaceError):  # left pending: refused
            await wait_while_a_thread_closes()
        conn = closed[0]
        assert (conn.open, conn.selector_wait) == (0, None)
        with anyio.fail_after(REQUEST_TIMEOUT):
            async with pool.cursor() as cursor:
                await cursor.execute("SELECT SLEEP(0.05), 8")
                assert await cursor.fetchall() == [(0, 8)]
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_a_statement_started_after_its_request_never_touches_the_connection(
    db: Database,
) -> None:
    """execute()'s coroutine, made in the request and awaited after it: the
    connection went back to the pool meanwhile, so it is refused, unsent."""
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1, max_size=1))
    kept: list[Any] = []

    @app.get("/")
    async def route(cursor: AsyncCursor) -> int:
        kept.append(cursor.execute("SELECT 'late'"))
        await cursor.execute("SELECT CONNECTION_ID()")
        return int((await cursor.fetchone())[0])  # type: ignore[index]

    async with in_process(app) as client:
        first = (await client.get("/")).json()
        with pytest.raises(CursorReleasedError):
            await kept[0]
        assert (await client.get("/")).json() == first  # the same, in step
        kept[1].close()
        stats = get_pool(app).stats()
    assert (stats.opened, stats.closed) == (1, 0)


# -- large statements are built in a worker thread (section 5) ----------------


@pytest.fixture
def large_packets(db: Database) -> Iterator[None]:
    """max_allowed_packet raised for the test's new sessions (then restored)."""
    before = db.scalar("SELECT @@GLOBAL.max_allowed_packet")
    db.query("SET GLOBAL max_allowed_packet = %s", (64 * 1024 * 1024,))
    try:
        yield
    finally:
        db.query("SET GLOBAL max_allowed_packet = %s", (before,))


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bytes", "str"])
@pytest.mark.usefixtures("large_packets")
async def test_a_large_statement_never_holds_the_loop(db: Database, kind: str) -> None:
    """A 15 MB value is escaped, and its statement built, in a worker thread,
    in pieces: the event loop goes on meanwhile (escaping it on the loop held
    it ~70 ms for text, ~200 ms for random bytes)."""
    rng = random.Random(16)
    value: bytes | str
    if kind == "bytes":
        # Any bytes: the scan for session changes reads the template only.
        value = rng.randbytes(15 * 1024 * 1024)
        digest = hashlib.md5(value).hexdigest()  # noqa: S324
    else:
        value = "".join(rng.choices("ab'\\\0\"é€😀", k=5 * 1024 * 1024))
        digest = hashlib.md5(value.encode()).hexdigest()  # noqa: S324

    async def work(cursor: AsyncPoolCursor[Any]) -> None:
        await cursor.execute("SELECT MD5(%s)", (value,))
        assert await cursor.fetchall() == [(digest,)]

    stalls = await loop_stalls(db, work)
    assert min(stalls) < 0.020, stalls


async def loop_stalls(
    db: Database, work: Callable[[AsyncPoolCursor[Any]], Awaitable[None]]
) -> list[float]:
    """The longest the event loop waited while *work* ran on a pooled cursor,
    up to five times until it stays under 20 ms: on a busy machine the OS
    itself stops the loop now and then; what is tested stopped it every time."""
    pool = Pool(db.cfg, size=1, max_size=1)
    stalls: list[float] = []
    try:
        while len(stalls) < 5 and (not stalls or stalls[-1] >= 0.020):
            watch = LoopWatch()
            done = anyio.Event()
            gc.disable()  # as in read_big_result: the cursor's own stall counts
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(watch.run, done)
                    await anyio.lowlevel.checkpoint()  # it ticks: stalls count
                    async with pool.cursor() as cursor:
                        await work(cursor)
                    done.set()
            finally:
                gc.enable()
            stalls.append(watch.longest)
    finally:
        await pool.aclose()
    return stalls


def tricky_text(rng: random.Random, size: int, alphabet: str) -> str:
    """Text whose characters needing escapes fall on every kind of boundary."""
    return "".join(rng.choices(alphabet + "'\\\0\"\n\r\x1a", k=size))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("charset", "alphabet"),
    [("utf8mb4", "aé€😀"), ("latin1", "aéÿ"), ("gbk", "a中文字")],
)
async def test_values_escaped_in_pieces_arrive_intact(
    db: Database, charset: str, alphabet: str
) -> None:
    """Escaping a value in pieces must give what escaping it whole gives, in
    any connection character set (in GBK a byte of a character can be a
    backslash: not cut), for text and for bytes (which may hold any
    sequence): the same bytes, and the same data stored."""
    table = db.create_table(
        "pieces",
        f"id INT PRIMARY KEY, body LONGTEXT CHARACTER SET {charset}, raw LONGBLOB",
    )
    rng = random.Random(charset)
    codec = {"utf8mb4": "utf-8"}.get(charset, charset)
    values = []
    for i in range(3):
        text = tricky_text(rng, 300_000, alphabet)
        raw = rng.randbytes(200_000) + b"\x80" * 150_000 + text.encode(codec)
        values.append((i, text, raw))
    pool = Pool({**db.cfg, "charset": charset}, size=1, max_size=1)
    try:
        async with pool.cursor() as cursor:
            await cursor.execute(f"INSERT INTO {table} VALUES (%s, %s, %s)", values[0])
            await cursor.execute(
                f"INSERT INTO {table} VALUES (%(id)s, %(body)s, %(raw)s)",
                dict(zip(("id", "body", "raw"), values[1], strict=True)),
            )
            await cursor.executemany(
                f"INSERT INTO {table} VALUES (%s, %s, %s)", values[2:]
            )
            await cursor.execute(f"SELECT id, body, raw FROM {table} ORDER BY id")
            assert await cursor.fetchall() == values
            # How: the same escaped bytes as conn.literal() gives.
            from fastapi_mysqlpool._statements import (
                _escape_in_pieces,
                _piece_starts,
            )

            conn = cursor.connection
            starts = _piece_starts(conn)
            if charset == "gbk":
                assert starts is None
            else:
                assert starts is not None
                for value in (*values[0][1:], b"a" + b"\xc3\xa9" * 40_000 + b"'"):
                    pieces = _escape_in_pieces(conn, value, starts)
                    assert len(pieces) > 3
                    assert b"".join(pieces) == conn.literal(value)
    finally:
        await pool.aclose()


# -- answers that fail partway (section 7) ------------------------------------

# Run in a process of its own: if a worker thread deadlocks on the connection's
# lock, nothing can end it but the end of the process.
_HALF_READ_RESULT = """
import gc, json, sys
from decimal import Decimal
import anyio, httpx, MySQLdb, MySQLdb.converters
from MySQLdb.constants import FIELD_TYPE
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_mysqlpool import AsyncCursor, mysql_pool_lifespan

cfg, table = json.loads(sys.argv[1]), sys.argv[2]
collect = []

def decimal(value):
    # The collector runs here when it runs while rows are converted: inside
    # fetch_row(), in the thread that holds the connection's lock.
    if collect:
        collect.clear()
        gc.collect()
    return Decimal(value)

conv = {**MySQLdb.converters.conversions, FIELD_TYPE.NEWDECIMAL: decimal}
app = FastAPI(lifespan=mysql_pool_lifespan({**cfg, "conv": conv}, size=1, max_size=1))

@app.get("/")
async def route(cursor: AsyncCursor):
    try:  # rows stream in (20 KB each), then error 1969 ends the answer
        await cursor.execute(
            "SET STATEMENT max_statement_time=0.2 FOR "
            "SELECT REPEAT('x', 20000), SLEEP(0.05) FROM seq_1_to_100"
        )
    except MySQLdb.OperationalError as exc:
        assert exc.args[0] == 1969, exc
    await cursor.execute(f"SELECT COUNT(*) FROM {table}")
    collect.append(True)
    await cursor.execute(f"SELECT id, price, filler FROM {table} LIMIT 5000")
    return len(await cursor.fetchall())

async def main():
    gc.disable()  # the cycles wait for the collection in decimal()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            for _ in range(3):
                print((await c.get("/")).json(), flush=True)

anyio.run(main)
"""


def test_an_answer_failing_partway_is_freed_where_it_fails(db: Database) -> None:
    """Error 1969 mid-result, read in a worker thread: the half-read result
    must be freed there and then. Left in a reference cycle, the collector
    freed it later inside a thread reading another large result on the same
    connection, which then waited forever for the lock it held itself."""
    table = db.create_table(
        "listing", "id INT PRIMARY KEY, price DECIMAL(10,2), filler CHAR(40)"
    )
    db.query(f"INSERT INTO {table} SELECT seq, seq / 7, 'x' FROM seq_1_to_5000")
    root = Path(__file__).resolve().parent.parent
    try:
        finished = subprocess.run(
            [sys.executable, "-c", _HALF_READ_RESULT, json.dumps(db.cfg), table],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"deadlocked; it printed {exc.stdout!r}") from None
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["5000"] * 3


def strict_decimal(value: str) -> Decimal:
    if value == "13.0":
        raise ValueError("unlucky")
    return Decimal(value)


@pytest.mark.parametrize("rows", [20, 20_000], ids=["on the loop", "in a thread"])
def test_a_conversion_error_leaves_the_connection_in_step(
    db: Database, rows: int
) -> None:
    """A converter raising (or text that cannot be decoded) once the answer is
    read is the route's to handle; the connection stays in step, and what the
    route does next is committed, as with the sync cursor."""
    table = db.create_table("log", "id INT PRIMARY KEY")
    conv = {**MySQLdb.converters.conversions, FIELD_TYPE.NEWDECIMAL: strict_decimal}
    app = FastAPI(lifespan=mysql_pool_lifespan({**db.cfg, "conv": conv}, size=1))

    @app.post("/async")
    async def async_route(cursor: AsyncCursor) -> list[Any]:
        with pytest.raises(ValueError, match="unlucky"):
            await cursor.execute(
                f"SELECT seq, CAST(seq AS DECIMAL(10,1)), REPEAT('x', 10) "
                f"FROM seq_1_to_{rows}"
            )
        await cursor.execute(f"INSERT INTO {table} VALUES (1)")
        await cursor.execute("SELECT 'after'")
        return list(await cursor.fetchall())

    @app.post("/sync")
    def sync_route(cursor: Cursor) -> None:
        with pytest.raises(ValueError, match="unlucky"):
            cursor.execute(f"SELECT CAST(seq AS DECIMAL(10,1)) FROM seq_1_to_{rows}")
        cursor.execute(f"INSERT INTO {table} VALUES (2)")

    with TestClient(app) as client:
        assert client.post("/async").json() == [["after"]]
        assert client.post("/sync").status_code == 200
        stats = get_pool(app).stats()
    assert db.query(f"SELECT id FROM {table} ORDER BY id") == ((1,), (2,))
    assert (stats.opened, stats.closed) == (1, 0)


# -- executemany of statements with several results (section 7) ---------------


@pytest.mark.anyio
async def test_executemany_reads_every_result_between_statements(
    db: Database,
) -> None:
    """A procedure returning a result, or several statements in one: each
    statement's pending results are read before the next is sent, as
    MySQLdb's executemany does (it returns 3 for three calls)."""
    table = db.create_table("calls", "id INT PRIMARY KEY")
    db.query(
        f"CREATE PROCEDURE {table}_p(x INT) "
        f"BEGIN INSERT INTO {table} VALUES (x); SELECT x; END"
    )
    rows = [(1,), (2,), (3,)]
    statements = [f"CALL {table}_p(%s)", "SELECT %s; SELECT 2"]
    expected = []
    theirs = db.admin.cursor()
    for statement in statements:
        count = theirs.executemany(statement, [(10 + n,) for (n,) in rows])
        expected.append((count, theirs.fetchall()))
        while theirs.nextset():
            pass
    db.query(f"DELETE FROM {table}")

    pool = Pool(db.cfg, size=1, max_size=1)
    got = []
    try:
        async with pool.cursor() as cursor:
            for statement in statements:
                count = await cursor.executemany(statement, rows)
                got.append((count, await cursor.fetchall()))
            await cursor.execute("SELECT 'in step'")
            assert await cursor.fetchall() == [("in step",)]
        stats = pool.stats()
    finally:
        await pool.aclose()
    assert got == [(3, [(3,)]), (3, [(3,)])]
    assert [(count, list(fetched)) for count, fetched in expected] == [
        (3, [(13,)]),
        (3, [(13,)]),
    ]
    assert db.query(f"SELECT id FROM {table} ORDER BY id") == tuple(rows)
    assert (stats.opened, stats.closed) == (1, 0)


@pytest.mark.anyio
async def test_an_error_among_results_left_unread_leaves_the_connection_in_step(
    db: Database,
) -> None:
    """The second of two statements fails: its error comes with the next
    statement, which reads the first's results (as with MySQLdb); then the
    connection is in step, and the transaction goes on."""
    table = db.create_table("after", "id INT PRIMARY KEY")
    theirs = db.admin.cursor()
    theirs.execute("SELECT 1; SELEC 2")
    with pytest.raises(MySQLdb.ProgrammingError):
        theirs.execute("SELECT 3")
    theirs.execute("SELECT 3")
    assert theirs.fetchall() == ((3,),)

    pool = Pool(db.cfg, size=1, max_size=1)
    try:
        async with pool.cursor() as cursor:
            await cursor.execute(f"INSERT INTO {table} VALUES (1)")
            await cursor.execute("SELECT 1; SELEC 2")
            with pytest.raises(MySQLdb.ProgrammingError):
                await cursor.execute("SELECT 3")
            await cursor.execute("SELECT 3")
            assert await cursor.fetchall() == [(3,)]
        stats = pool.stats()
    finally:
        await pool.aclose()
    assert db.query(f"SELECT id FROM {table}") == ((1,),)
    assert (stats.opened, stats.closed) == (1, 0)


# -- description (section 7) ---------------------------------------------------


@pytest.mark.anyio
async def test_the_same_statement_is_described_the_same_on_either_path(
    db: Database,
) -> None:
    """An answer read on the loop (store_result) knew each column's longest
    value; one read in a worker thread as it streams (use_result) cannot: the
    display size is None on both (PEP 249's "no meaningful value", as in
    aiomysql and asyncmy); every other field is MySQLdb's."""
    table = db.create_table(
        "wide", "id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, price DECIMAL(8,2)"
    )
    db.query(f"INSERT INTO {table} SELECT seq, 'name', seq / 3 FROM seq_1_to_5000")
    small = f"SELECT id, name, price FROM {table} WHERE id <= 3"
    large = f"SELECT id, name, price FROM {table}"  # > 64 KB: read in a thread
    theirs = db.admin.cursor()
    theirs.execute(small)
    reference = tuple((d[0], d[1], None, *d[3:]) for d in theirs.description)

    descriptions = []
    for cfg in (db.cfg, {**db.cfg, "compress": True}):  # compressed: in a thread
        pool = Pool(cfg, size=1, max_size=1)
        try:
            async with pool.cursor() as cursor:
                for statement in (small, large):
                    await cursor.execute(statement)
                    descriptions.append(cursor.description)
                await cursor.execute(f"UPDATE {table} SET name = 'x' WHERE id = 1")
                assert cursor.description is None
        finally:
            await pool.aclose()
    assert descriptions == [reference] * 4


@pytest.mark.anyio
@pytest.mark.usefixtures("large_packets")
async def test_a_long_statement_without_parameters_never_holds_the_loop(
    db: Database,
) -> None:
    """Its template is the whole statement, too long to be remembered: the
    scan for session changes runs in a worker thread (it held the loop about
    0.15 s per MB, twice with a backslash in the text)."""
    # "reset" makes the scan lex it (a hint word), the backslash twice.
    values = ",".join(f"({i}, 'reset\\\\{i}')" for i in range(50_000))  # ~1 MB
    table = db.create_table("long", "id INT PRIMARY KEY, t VARCHAR(20)")
    statement = f"INSERT INTO {table} VALUES {values}"

    async def work(cursor: AsyncPoolCursor[Any]) -> None:
        await cursor.execute(statement)
        await cursor.execute(f"DELETE FROM {table}")

    stalls = await loop_stalls(db, work)
    assert min(stalls) < 0.020, stalls
