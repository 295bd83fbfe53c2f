"""What fastapi_mysqlpool relies on in mysqlclient, beyond its documented API.

pyproject.toml pins mysqlclient to the versions these tests pass on. If one of
them fails after an upgrade, the upgrade changed something the pool uses: read
the test's docstring for what, and where.
"""

from __future__ import annotations

import importlib.metadata
import re
import threading
from typing import Any

import MySQLdb
import MySQLdb.cursors
import pytest
from MySQLdb.constants import CLIENT

from fastapi_mysqlpool import _session
from fastapi_mysqlpool._connection import PooledConnection
from fastapi_mysqlpool._cursors import leased_cursor_class
from fastapi_mysqlpool._socket import peek, readable_now
from fastapi_mysqlpool._wire import answer_complete

from .servers import Database


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_installed_mysqlclient_is_in_the_pinned_range() -> None:
    (spec,) = [
        r
        for r in importlib.metadata.requires("fastapi-mysqlpool") or []
        if r.startswith("mysqlclient") and not r.startswith("mysqlclient-pool")
    ]
    (low,) = re.findall(r">=\s*([\d.]+)", spec)
    (high,) = re.findall(r"<\s*([\d.]+)", spec)
    installed = _version(importlib.metadata.version("mysqlclient"))
    assert _version(low) <= installed < _version(high)
    assert tuple(MySQLdb.version_info[:3]) == installed


class Spy(PooledConnection):
    statements: list[bytes]
    thread_id_at_open: int

    def query(self, query: Any) -> None:
        self.statements.append(bytes(query))
        super().query(query)


@pytest.fixture
def conn(db: Database) -> Any:
    connection = Spy(**db.cfg)
    connection.statements = []
    # thread_id() itself takes the connection's lock: read it while it is free.
    connection.thread_id_at_open = connection.thread_id()
    yield connection
    connection.close()


def test_every_cursor_statement_goes_through_connection_query(
    conn: Any, db: Database
) -> None:
    """PooledConnection.query sees all SQL: session-change detection and the
    'a statement ran' flag (which decides COMMIT) depend on it."""
    table = db.create_table("t", "id INT PRIMARY KEY, v INT")
    db.query(f"CREATE PROCEDURE {table}_p(x INT) SELECT x")
    for cursor_class in (MySQLdb.cursors.Cursor, MySQLdb.cursors.SSDictCursor):
        cursor = conn.cursor(cursor_class)
        cursor.execute("SELECT 1")
        cursor.fetchall()
        cursor.executemany(f"INSERT INTO {table} VALUES (%s, %s)", [(1, 1), (2, 2)])
        cursor.executemany(f"UPDATE {table} SET v = %s WHERE id = %s", [(3, 1)])
        cursor.callproc(f"{table}_p", (7,))
        cursor.close()
        conn.rollback()
    sent = b"\n".join(conn.statements)
    for fragment in (b"SELECT 1", b"INSERT INTO", b"UPDATE", b"CALL", b"SET @"):
        assert fragment in sent
    assert conn.used


def test_cursor_hooks_guard_every_statement_and_every_fetch(conn: Any) -> None:
    """LeasedCursorMixin overrides BaseCursor._get_db (every statement) and
    _check_executed (every fetch) to refuse a released cursor; release() resets
    .connection, ._result and ._rows."""
    for base in (MySQLdb.cursors.Cursor, MySQLdb.cursors.SSCursor):
        cursor = conn.cursor(leased_cursor_class(base))
        cursor.execute("SELECT 1")
        assert hasattr(cursor, "_result")
        assert hasattr(cursor, "_rows")
        leftover = cursor.release()  # an unbuffered cursor's unread result
        if leftover is not None:
            leftover.discard()
        calls = {
            "execute": lambda c: c.execute("SELECT 1"),
            "executemany insert": lambda c: c.executemany(
                "INSERT INTO x VALUES (%s)", [(1,)]
            ),
            "executemany other": lambda c: c.executemany("DO %s", [(1,)]),
            "callproc": lambda c: c.callproc("p", (1,)),
            "mogrify": lambda c: c.mogrify("SELECT %s", (1,)),
            "nextset": lambda c: c.nextset(),
            "fetchone": lambda c: c.fetchone(),
            "fetchmany": lambda c: c.fetchmany(),
            "fetchall": lambda c: c.fetchall(),
            "iteration": lambda c: next(iter(c)),
        }
        for name, call in calls.items():
            with pytest.raises(MySQLdb.InterfaceError, match="went back"):
                call(cursor)
            assert name
        with pytest.raises(MySQLdb.InterfaceError, match="went back"):
            cursor.connection.commit()
        cursor.close()  # harmless


def test_the_nonblocking_round_trip(conn: Any) -> None:
    """_aio and AsyncPoolCursor: send_query, fileno, read_query_result,
    field_count, store_result, fetch_row(n, how), describe, affected_rows,
    insert_id, warning_count, more_results, next_result, discard_result."""
    conn.send_query(b"SELECT 1 AS a, 'x' AS b UNION SELECT 2, 'y'")
    fd = conn.fileno()
    import select

    assert select.select([fd], [], [], 10)[0]
    assert readable_now(fd)
    buffer = conn.peek_buffer(4096)
    size = peek(fd, buffer)
    assert answer_complete(memoryview(buffer).cast("B")[:size])
    conn.read_query_result()
    assert conn.field_count() == 2
    result = conn.store_result()
    assert result.fetch_row(0, 1) == ({"a": 1, "b": "x"}, {"a": 2, "b": "y"})
    assert [column[0] for column in result.describe()] == ["a", "b"]
    assert conn.affected_rows() == 2
    assert not conn.more_results()

    conn.send_query(b"SELECT 1; SELECT 2; DO 3")
    select.select([fd], [], [], 10)
    conn.read_query_result()
    assert conn.store_result().fetch_row(0) == ((1,),)
    assert conn.more_results()
    assert conn.next_result() == 0
    conn.discard_result()
    while conn.next_result() == 0:
        conn.discard_result()
    assert not conn.more_results()
    assert conn.get_autocommit() is False or conn.get_autocommit() == 0
    assert isinstance(conn.thread_id(), int)
    assert conn.literal("it's") == b"'it\\'s'"
    assert conn.encoding == "utf8mb4" or conn.encoding.startswith("utf8")


def test_use_from_two_threads_at_once_is_refused(conn: Any, db: Database) -> None:
    """mysqlclient >= 2.3 raises instead of corrupting a connection used by two
    threads at once: the last line of defence behind the pool's own rules."""
    sleeper = threading.Thread(target=conn.query, args=(b"SELECT SLEEP(1)",))
    sleeper.start()
    try:
        db.wait_running(conn.thread_id_at_open, "SELECT SLEEP")
        with pytest.raises(MySQLdb.ProgrammingError, match="another thread"):
            conn.query(b"SELECT 2")
    finally:
        sleeper.join()
    conn.store_result()


def test_insert_values_regex_is_public() -> None:
    """executemany() packs INSERT rows with MySQLdb.cursors.RE_INSERT_VALUES."""
    match = MySQLdb.cursors.RE_INSERT_VALUES.match(
        "INSERT INTO t (a, b) VALUES (%s, %s) ON DUPLICATE KEY UPDATE a = 1"
    )
    assert match is not None
    assert match.group(2) == "(%s, %s)"


def test_generic_attribute_access_keeps_closed(db: Database) -> None:
    """PooledConnection swaps mysqlclient's own attribute hooks for the generic
    ones (which CPython specializes), re-adding the one thing they did: the
    ``closed`` attribute. If mysqlclient's hooks ever do more, this fails."""
    base = MySQLdb._mysql.connection
    assert base.__getattribute__ is not object.__getattribute__  # its own hook
    plain = MySQLdb.connect(**db.cfg)
    pooled = PooledConnection(**db.cfg)
    try:
        names = {n for n in dir(plain) if not n.startswith("__")} | {"closed"}
        for name in sorted(names):
            if callable(getattr(plain, name)):
                assert callable(getattr(pooled, name)), name
            elif name not in ("_server_version", "messages", "cursorclass"):
                assert type(getattr(plain, name)) is type(getattr(pooled, name)), name
        assert (plain.closed, pooled.closed) == (0, 0)
    finally:
        plain.close()
        pooled.close()
    assert (plain.closed, pooled.closed) == (1, 1)
    with pytest.raises(AttributeError):
        _ = pooled.no_such_attribute


def test_the_native_connection_and_the_client_library(db: Database) -> None:
    """_session reads the server status with libmariadb's mariadb_get_infov, and
    resets with mysql_reset_connection, on the MYSQL* held by the capsule that
    _get_native_connection() returns (named "_mysql.connection.native_connection",
    the same pointer every time: mysqlclient embeds the MYSQL struct). Its
    autocommit bit must be the one get_autocommit() reads. PooledConnection
    relies on multi-statements being on by default (one round trip at connect)
    and on discard_result() accepting an answer without rows."""
    conn = PooledConnection(**db.cfg)
    try:
        assert conn.client_flag & CLIENT.MULTI_STATEMENTS
        mysql = _session.native_handle(conn)
        assert mysql is not None
        again = _session.native_handle(conn)
        assert again is not None
        assert mysql.value == again.value
        read = _session.status_reader(mysql)
        assert read is not None
        for mode in (True, False):
            conn.autocommit(mode)
            assert bool(read() & _session.STATUS_AUTOCOMMIT) is mode
            assert bool(conn.get_autocommit()) is mode
        conn.query(b"SET @x = 1")
        conn.discard_result()
        assert _session.reset_connection(mysql)
        conn.query(b"SELECT @x")
        assert conn.store_result().fetch_row() == ((None,),)
    finally:
        conn.close()
