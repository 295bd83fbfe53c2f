"""AsyncPoolCursor defects of issue 16: an unawaited execute, large statements,
answers that fail partway, executemany of multi-result statements, and the
description of answers read in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import MySQLdb
import MySQLdb.converters
import pytest
from fastapi import FastAPI

from fastapi_mysqlpool import (
    AsyncCursor,
    CursorReleasedError,
    Pool,
    _aio,
    get_pool,
    mysql_pool_lifespan,
)

from .servers import Database, serve

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
