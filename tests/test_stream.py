"""pool.stream(): a result read unbuffered, a batch at a time, on a connection
of its own; committed when read to its end, closed (its query KILLed) when
cut off; the event loop never waits for the server."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import MySQLdb
import pytest

from fastapi_mysqlpool import Pool, RowStream
from fastapi_mysqlpool._stream import AHEAD, KILL_STUCK_AFTER

from .servers import Database
from .test_async_cursor import LoopWatch

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pool(db: Database) -> AsyncIterator[Pool]:
    pool = Pool(db.cfg, size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.aclose()


def running_queries(db: Database) -> list[Any]:
    """This user's sessions running a statement (none once a stream ends)."""
    return list(
        db.query(
            "SELECT id, info FROM information_schema.processlist "
            "WHERE user = %s AND command = 'Query'",
            (db.user,),
        )
    )


async def test_rows_arrive_in_batches(pool: Pool, numbers: str) -> None:
    stream = pool.stream(f"SELECT n, n * 2 FROM {numbers} ORDER BY n", batch=300)
    assert isinstance(stream, RowStream)
    sizes = [len(rows) async for rows in stream.batches()]
    assert sizes == [300, 300, 300, 100]
    rows = [row async for row in pool.stream(f"SELECT n FROM {numbers} WHERE n < 3")]
    assert rows == [(0,), (1,), (2,)]
    stats = pool.stats()
    assert (stats.in_use, stats.idle, stats.opened) == (0, 1, 1)  # reused


async def test_dict_rows_and_description(pool: Pool, numbers: str) -> None:
    async with pool.stream(
        f"SELECT n AS number, 'x' AS letter FROM {numbers} WHERE n < %s ORDER BY n",
        (2,),
        dict_rows=True,
    ) as stream:
        rows = [row async for row in stream]
        assert stream.columns == ("number", "letter")
    assert rows == [{"number": 0, "letter": "x"}, {"number": 1, "letter": "x"}]


async def test_a_statement_without_rows_is_committed(
    pool: Pool, db: Database, numbers: str
) -> None:
    rows = [row async for row in pool.stream(f"DELETE FROM {numbers} WHERE n >= 10")]
    assert rows == []
    assert db.scalar(f"SELECT COUNT(*) FROM {numbers}") == 10  # committed
    assert pool.stats().in_use == 0


async def test_a_stream_read_to_its_end_commits(
    pool: Pool, db: Database, numbers: str
) -> None:
    # The transaction's row lock is held until the stream ends: then committed.
    async with pool.stream(
        f"SELECT n FROM {numbers} WHERE n < 5 FOR UPDATE", batch=2
    ) as stream:
        assert len([row async for row in stream]) == 5
    assert db.open_transactions() == 0
    assert pool.stats().idle == 1


async def test_stopping_early_kills_the_query(
    pool: Pool, db: Database, numbers: str
) -> None:
    million = f"SELECT a.n, b.n FROM {numbers} a CROSS JOIN {numbers} b"
    async with pool.stream(million) as stream:
        async for _ in stream:
            break
        assert running_queries(db)  # the server is still sending
    started = time.monotonic()
    await wait_for(lambda: not running_queries(db))
    assert time.monotonic() - started < 5
    assert pool.stats().in_use == 0
    await no_leak(db, pool)
    # The pool goes on.
    assert [row async for row in pool.stream("SELECT 1")] == [(1,)]


async def test_aclose_and_garbage_end_an_unfinished_stream(
    pool: Pool, db: Database, numbers: str
) -> None:
    million = f"SELECT a.n, b.n FROM {numbers} a CROSS JOIN {numbers} b"
    stream = pool.stream(million)
    assert await stream.next_batch()
    await stream.aclose()
    assert await stream.next_batch() is None  # closed: no more rows
    abandoned = pool.stream(million)
    async for _ in abandoned:
        break  # and never closed: dropping it closes the connection
    del abandoned
    gc.collect()
    await wait_for(lambda: pool.stats().in_use == 0 and not running_queries(db))


async def test_an_error_mid_stream_closes_the_connection(
    pool: Pool, db: Database, numbers: str
) -> None:
    # The subquery fails at n = 500, after rows went out.
    failing = f"SELECT n, IF(n = 500, (SELECT 1 UNION SELECT 2), 0) FROM {numbers}"
    seen: list[Any] = []

    async def read() -> None:
        async for row in pool.stream(failing, batch=100):
            seen.append(row)

    with pytest.raises(MySQLdb.OperationalError) as raised:
        await read()
    assert raised.value.args[0] == 1242
    assert 0 < len(seen) <= 500
    stats = pool.stats()
    assert (stats.in_use, stats.closed) == (0, 1)
    await no_leak(db, pool)
    assert [row async for row in pool.stream("SELECT 2")] == [(2,)]


async def test_an_error_before_the_rows_is_raised_at_the_first_batch(
    pool: Pool, db: Database
) -> None:
    stream = pool.stream("SELECT * FROM no_such_table")
    with pytest.raises(MySQLdb.ProgrammingError):
        await stream.next_batch()
    assert pool.stats().in_use == 0
    await no_leak(db, pool)


async def test_a_slow_consumer_holds_no_thread_and_few_batches(
    pool: Pool, numbers: str
) -> None:
    """The reading thread stops once ``AHEAD`` batches wait, and lets go of
    its worker thread: a slow client's export holds a connection, not a
    thread, and memory for a few batches."""
    million = f"SELECT a.n, b.n FROM {numbers} a CROSS JOIN {numbers} b"
    async with pool.stream(million, batch=100) as stream:
        assert len(await stream.next_batch()) == 100
        await wait_for(lambda: not stream._reading)
        assert len(stream._ahead) == AHEAD
        assert anyio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
        taken = 1
        while await stream.next_batch():
            taken += 1
            if taken == 50:
                break
    # Closed by the thread reading, once its batch is in.
    await wait_for(lambda: pool.stats().in_use == 0)


async def test_a_stream_cut_off_while_the_server_is_slow_is_killed_soon(
    pool: Pool, db: Database, numbers: str
) -> None:
    """After 100,000 rows the server sleeps 30 s: a consumer cancelled while
    the thread waits for the next rows has the session KILLed after
    KILL_STUCK_AFTER, which ends the wait."""
    slow = (
        f"SELECT a.n, b.n, SLEEP(IF(a.n = 100 AND b.n = 0, 30, 0)) FROM {numbers} a "
        f"STRAIGHT_JOIN {numbers} b ON b.n <= a.n + 1000"
    )
    taken = 0
    async with pool.stream(slow) as stream:
        with anyio.move_on_after(2):  # then waiting for the rows after the sleep
            while await stream.next_batch():
                taken += 1
    assert 90 <= taken <= 100  # (the server holds back its last 16 KB)
    started = time.monotonic()
    await wait_for(lambda: pool.stats().in_use == 0 and not running_queries(db))
    assert time.monotonic() - started < KILL_STUCK_AFTER + 3
    await no_leak(db, pool)


async def test_batch_must_be_positive(pool: Pool) -> None:
    with pytest.raises(ValueError, match="batch"):
        pool.stream("SELECT 1", batch=0)


async def test_the_loop_never_waits_for_the_server(pool: Pool, numbers: str) -> None:
    """200,000 rows, the server slow to start (SLEEP): the loop keeps ticking.
    Read on the loop, each batch would hold it (and the sleep all of it)."""
    sql = (
        f"SELECT a.n, SLEEP(IF(a.n + b.n = 0, 0.3, 0)) FROM {numbers} a "
        f"CROSS JOIN {numbers} b WHERE a.n < 200"
    )
    stalls = []
    for _ in range(5):  # a busy machine stops the loop now and then
        watch = LoopWatch()
        done = anyio.Event()
        gc.disable()  # a full collection stops every thread: not ours to count
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(watch.run, done)
                await anyio.lowlevel.checkpoint()
                count = 0
                async for rows in pool.stream(sql, batch=1000).batches():
                    count += len(rows)
                done.set()
        finally:
            gc.enable()
        assert count == 200_000
        stalls.append(watch.longest)
        if watch.longest < 0.020:
            break
    assert min(stalls) < 0.020, stalls


async def no_leak(db: Database, pool: Pool) -> None:
    """Until the server sees as many sessions of this user as the pool has."""
    await wait_for(lambda: db.connection_count() == pool.stats().size)


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        await anyio.sleep(0.01)
