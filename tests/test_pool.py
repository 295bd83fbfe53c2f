"""Pool: mysqlclient-pool's ConnectionPool made fit for servers (real MariaDB)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import MySQLdb
import MySQLdb.cursors
import pytest
from mysqlclient_pool import ConnectionPool

from fastapi_mysqlpool import Pool, PoolClosed, PoolTimeout

from .proxy import Proxy
from .servers import Database


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition the pool exposes no event for (a queue length...)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def connection_id(pool: Pool) -> int:
    with pool.fetch() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])


@pytest.fixture
def pool(db: Database) -> Iterator[Pool]:
    with Pool(db.cfg, size=2, max_size=4) as pool:
        yield pool


def test_it_is_a_mysqlclient_pool_connection_pool(pool: Pool, db: Database) -> None:
    assert isinstance(pool, ConnectionPool)
    assert pool.capacity == 2 == db.connection_count()  # filled up at creation
    assert not pool.closed


def test_fetch_commits_or_rolls_back(pool: Pool, db: Database) -> None:
    table = db.create_table("t", "id INT PRIMARY KEY")
    with pool.fetch() as cursor:
        cursor.execute(f"INSERT INTO {table} VALUES (1)")

    def insert_then_fail() -> None:
        with pool.fetch() as cursor:
            cursor.execute(f"INSERT INTO {table} VALUES (2)")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        insert_then_fail()
    # auto_manage=False: work left uncommitted is rolled back on return.
    with pool.fetch(auto_manage=False) as cursor:
        cursor.execute(f"INSERT INTO {table} VALUES (3)")
    with pool.fetch(auto_manage=False) as cursor:
        cursor.execute(f"INSERT INTO {table} VALUES (4)")
        cursor.connection.commit()
    assert db.query(f"SELECT id FROM {table} ORDER BY id") == ((1,), (4,))
    assert db.open_transactions() == 0
    assert pool.stats().closed == 0  # all that went back clean, to be reused


@pytest.mark.parametrize(
    "cursor_type", [MySQLdb.cursors.DictCursor, MySQLdb.cursors.SSCursor]
)
def test_fetch_cursor_types(pool: Pool, cursor_type: type[Any]) -> None:
    with pool.fetch(cursor_type=cursor_type) as cursor:
        assert isinstance(cursor, cursor_type)
        cursor.execute("SELECT 1 AS one")
        row = cursor.fetchone()
    assert row in ({"one": 1}, (1,))
    with pytest.raises(MySQLdb.InterfaceError, match="went back to the pool"):
        cursor.execute("SELECT 1")


@pytest.mark.parametrize(
    "change",
    [
        "SET @secret = 'left over'",
        "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "  /* comment */ set names latin1",
        "USE information_schema",
        "CREATE TEMPORARY TABLE tmp (id INT)",
        "LOCK TABLES {table} WRITE",
        "autocommit",
    ],
)
def test_a_changed_session_is_never_handed_out_again(db: Database, change: str) -> None:
    table = db.create_table("t", "id INT")
    with Pool(db.cfg, size=1, max_size=1) as pool:
        first = connection_id(pool)
        assert connection_id(pool) == first  # a clean session is reused
        with pool.fetch() as cursor:
            if change == "autocommit":
                cursor.connection.autocommit(True)
            else:
                cursor.execute(change.format(table=table))
        with pool.fetch() as cursor:
            cursor.execute(
                "SELECT CONNECTION_ID(), @secret, DATABASE(), @@tx_isolation, "
                "@@character_set_client"
            )
            row = cursor.fetchone()
            cursor.execute("SELECT @@autocommit")
            autocommit = cursor.fetchone()[0]
            cursor.execute(f"INSERT INTO {table} VALUES (1)")  # no lock, no tmp
        # The same connection, its session reset (COM_RESET_CONNECTION).
        assert row[0] == first
        assert row[1:] == (None, db.server.database, "REPEATABLE-READ", "utf8mb4")
        assert autocommit == 0
        assert (pool.stats().closed, pool.stats().resets) == (0, 1)
        assert db.scalar(f"SELECT COUNT(*) FROM {table}") == 1


def test_bounded_fifo_queue_and_acquire_timeout(db: Database) -> None:
    with Pool(db.cfg, size=0, max_size=2, acquire_timeout=10) as pool:
        release = [threading.Event(), threading.Event()]
        served: list[int] = []

        def borrow(tag: int) -> None:
            with pool.fetch() as cursor:
                served.append(tag)
                cursor.execute("SELECT 1")
                if tag < 2:
                    release[tag].wait(10)

        holders = [threading.Thread(target=borrow, args=(tag,)) for tag in (0, 1)]
        for thread in holders:
            thread.start()
        wait_until(lambda: pool.stats().in_use == 2)
        waiters = []
        for tag in (2, 3, 4):
            thread = threading.Thread(target=borrow, args=(tag,))
            thread.start()
            waiters.append(thread)
            wait_until(lambda tag=tag: pool.stats().waiting == tag - 1)
        assert db.connection_count(settle_at=2) == 2

        # Full: one more caller gives up after its acquire_timeout.
        pool.acquire_timeout = 0.2
        started = time.monotonic()
        with pytest.raises(PoolTimeout, match=r"within 0.2 s \(max_size=2"):
            connection_id(pool)
        assert 0.2 <= time.monotonic() - started < 2
        assert pool.stats().timeouts == 1
        assert isinstance(PoolTimeout("x"), ConnectionPool.OverflowError)

        # One connection comes back and goes down the queue, one waiter at a
        # time: the order they get it is the order they came.
        release[0].set()
        for thread in waiters:
            thread.join()
        assert served[2:] == [2, 3, 4]
        release[1].set()
        for thread in holders:
            thread.join()
        stats = pool.stats()
        assert (stats.in_use, stats.waiting, stats.opened) == (0, 0, 2)
        assert stats.wait_time > 0


def test_dead_idle_connections_never_reach_a_caller(pool: Pool, db: Database) -> None:
    """KILL every idle connection, then borrow at once: all succeed."""
    before = {connection_id(pool) for _ in range(2)}
    assert db.kill_connections() == 2
    after = {connection_id(pool) for _ in range(3)}
    assert not before & after
    assert pool.stats().errors >= 1


def test_a_silently_dead_connection_is_caught_by_the_check_after_idle(
    db: Database,
) -> None:
    with Proxy(db.server.host, db.server.port) as proxy:
        cfg = proxy.config(db.cfg)
        with Pool(cfg, size=1, max_size=1) as pool:
            first = connection_id(pool)
            proxy.sever()  # no FIN, nothing to read: only a round trip tells
            time.sleep(0.6)  # the behaviour under test: idle beyond 0.5 s
            assert connection_id(pool) != first
            assert pool.stats().errors == 1
            # Within the trust window the connection is handed out unchecked
            # (as HikariCP does): the caller's query fails, and only that
            # connection is discarded.
            second = connection_id(pool)
            proxy.sever()
            with pytest.raises(MySQLdb.OperationalError) as lost:
                connection_id(pool)
            assert lost.value.args[0] in (2006, 2013)
            assert connection_id(pool) not in (first, second)


@pytest.mark.anyio
async def test_leases_on_the_event_loop_check_too(db: Database) -> None:
    """pool.lease() lends unchecked; the check runs before the first statement."""
    with Proxy(db.server.host, db.server.port) as proxy:
        pool = Pool(proxy.config(db.cfg), size=1, max_size=1)
        try:
            async with pool.lease() as cursor:
                cursor.execute("SELECT CONNECTION_ID()")
                first = cursor.fetchone()[0]
            proxy.sever()
            await anyio.sleep(0.6)  # the behaviour under test
            async with pool.lease() as cursor:
                cursor.execute("SELECT CONNECTION_ID()")
                assert cursor.fetchone()[0] != first
            assert pool.stats().errors == 1
        finally:
            await pool.aclose()
    pool = Pool(db.cfg, size=1, max_size=1)
    try:
        async with pool.lease() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            killed = cursor.fetchone()[0]
        db.query(f"KILL {int(killed)}")
        async with pool.lease() as cursor:  # seen by the poll
            cursor.execute("SELECT CONNECTION_ID()")
            assert cursor.fetchone()[0] != killed
        assert pool.stats().errors == 1
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_async_cursors_check_before_the_first_statement_too(
    db: Database,
) -> None:
    """pool.cursor() lends unchecked too: a glance at the socket, or a round
    trip after idling, runs before the first statement, and a dead connection
    is swapped for a live one there."""
    with Proxy(db.server.host, db.server.port) as proxy:
        pool = Pool(proxy.config(db.cfg), size=1, max_size=1)
        try:
            async with pool.cursor() as cursor:
                await cursor.execute("SELECT CONNECTION_ID()")
                (first,) = await cursor.fetchone()
            proxy.sever()
            await anyio.sleep(0.6)  # the behaviour under test
            async with pool.cursor() as cursor:  # seen by the round trip
                assert await cursor.execute("SELECT CONNECTION_ID()") == 1
                assert (await cursor.fetchone())[0] != first
            assert pool.stats().errors == 1
        finally:
            await pool.aclose()
    pool = Pool(db.cfg, size=1, max_size=1)
    try:
        async with pool.cursor() as cursor:
            await cursor.execute("SELECT CONNECTION_ID()")
            (killed,) = await cursor.fetchone()
        db.query(f"KILL {int(killed)}")
        async with pool.cursor() as cursor:  # seen by the glance
            assert await cursor.execute("SELECT CONNECTION_ID()") == 1
            assert (await cursor.fetchone())[0] != killed
        assert pool.stats().errors == 1
    finally:
        await pool.aclose()


def test_a_lease_that_ran_nothing_sends_nothing(db: Database) -> None:
    """No statement, no transaction: no COMMIT round trip, even on a dead one."""
    with Pool(db.cfg, size=1, max_size=1) as pool:
        killed = connection_id(pool)
        db.query(f"KILL {int(killed)}")

        async def idle_lease() -> None:
            async with pool.lease():
                pass

        anyio.run(idle_lease)  # the dead connection is not touched: no error
        assert pool.stats().errors == 0
        assert connection_id(pool) != killed  # found dead at the next real use
        assert pool.stats().errors == 1


def test_max_lifetime_retires_connections_when_returned(db: Database) -> None:
    with Pool(db.cfg, size=1, max_size=1, max_lifetime=0.3) as pool:
        first = connection_id(pool)
        time.sleep(0.35)  # the behaviour under test: the lifetime runs out
        assert connection_id(pool) != first
        assert pool.stats().errors == 0


def test_fail_fast_with_backoff_while_the_server_is_unreachable() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = {"host": "127.0.0.1", "port": port, "user": "u", "password": "s3cret-pw"}
    with Pool(cfg, size=0, max_size=2, fillup=False) as pool:
        with pytest.raises(ConnectionPool.DrainedError) as first:
            connection_id(pool)
        assert "(2002)" in str(first.value) or "(2003)" in str(first.value)
        with pytest.raises(ConnectionPool.DrainedError, match="next attempt in"):
            connection_id(pool)
        assert pool.stats().errors == 1  # the second caller did not even try
        assert "s3cret-pw" not in str(first.value) + repr(pool) + repr(pool.config)


def test_close_waits_for_borrowed_connections(db: Database) -> None:
    pool = Pool(db.cfg, size=2, max_size=2)
    inside = threading.Event()
    leave = threading.Event()

    def borrow() -> None:
        with pool.fetch() as cursor:
            inside.set()
            leave.wait(10)
            cursor.execute("SELECT 1")  # still works while close() waits

    worker = threading.Thread(target=borrow)
    worker.start()
    inside.wait(10)
    closer = threading.Thread(target=pool.close, kwargs={"timeout": 30})
    closer.start()

    def refused() -> bool:
        try:
            connection_id(pool)
        except PoolClosed:
            return True
        return False

    wait_until(refused)  # closing: no new borrowers meanwhile
    assert closer.is_alive()  # waiting for the borrowed one
    leave.set()
    worker.join()
    closer.join()
    assert db.connection_count(settle_at=0) == 0
    stats = pool.stats()
    assert stats.opened == stats.closed == 2


def test_close_timeout_then_late_returns_are_closed(db: Database) -> None:
    pool = Pool(db.cfg, size=1, max_size=1)
    with pool.fetch() as cursor:
        pool.close(timeout=0.1)
        assert db.connection_count(settle_at=1) == 1
        cursor.execute("SELECT 1")
    assert db.connection_count(settle_at=0) == 0


def test_the_housekeeper_refills_after_the_server_drops_connections(
    pool: Pool, db: Database
) -> None:
    """No traffic needed: dead idle connections are swept and replaced."""
    before = db.connection_ids()
    assert db.kill_connections() == 2
    # Swept within about a second (the housekeeper's longest sleep), replaced.
    wait_until(lambda: (pool.stats().errors, pool.stats().idle) == (2, 2), 3)
    assert len(db.connection_ids() - before) == 2
    assert pool.stats().opened == 4


def test_size_defaults_to_10_or_max_size_if_lower(db: Database) -> None:
    with Pool(db.cfg, max_size=2) as small, Pool(db.cfg, max_size=20) as large:
        assert (small.size, small.max_size) == (2, 2)
        assert (large.size, large.max_size) == (10, 20)


def test_stats_and_repr(pool: Pool, db: Database) -> None:
    connection_id(pool)
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.in_use, stats.waiting) == (2, 2, 0, 0)
    assert (stats.max_size, stats.opened, stats.closed, stats.errors) == (4, 2, 0, 0)
    assert stats.requests == 1
    text = repr(pool) + repr(pool.config) + str(stats)
    assert db.password not in text
    assert f"{db.user}@127.0.0.1:{db.server.port}/{db.server.database}" in repr(pool)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": 3, "max_size": 2}, r"max_size \(2\) must be >= size"),
        ({"max_idle": 0}, "max_idle must be > 0"),
        ({"timeout": -1}, "timeout must be >= 0"),
        ({"acquire_timeout": float("inf")}, "acquire_timeout must be > 0 and finite"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Pool({"host": "127.0.0.1"}, fillup=False, open=False, **options)


@pytest.mark.anyio
async def test_a_late_return_after_aclose_gave_up(db: Database) -> None:
    pool = Pool(db.cfg, size=1, max_size=1)
    async with pool.lease() as cursor:
        await pool.aclose(timeout=0.05)  # gives up waiting for this one
        cursor.execute("SELECT 1")
    # Given back after the close: closed then, without an error.
    assert db.connection_count(settle_at=0) == 0
    stats = pool.stats()
    assert stats.opened == stats.closed


def test_only_a_session_still_ours_is_killed(db: Database) -> None:
    """After a failover, or behind a load balancer, the id of a session the
    pool abandoned may be someone else's: the KILL checks the client address."""
    with Pool(db.cfg, size=0, max_size=2) as pool:
        with pool.fetch() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            (ours,) = cursor.fetchone()
            host = cursor.connection.server_host
        other = db.server.connect()  # another client's session
        other_id = other.thread_id()
        try:
            pool.housekeeper.kill_sessions(
                [(other_id, host, None), (ours, "10.9.9.9:1", None)]
            )
            assert other_id in {row[0] for row in db.query("SHOW PROCESSLIST")}
            assert ours in db.connection_ids()
            pool.housekeeper.kill_sessions([(ours, host, None)])
            assert ours not in db.connection_ids()
        finally:
            other.close()
