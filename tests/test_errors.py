"""The one map from MySQL errors to what they mean, checked on real errors."""

from __future__ import annotations

import MySQLdb
import pytest
from mysqlclient_pool import ConnectionPool

from fastapi_mysqlpool import (
    CursorReleasedError,
    ErrorKind,
    PoolClosed,
    PoolStartupError,
    PoolTimeout,
)
from fastapi_mysqlpool._errors import classify, is_connection_broken

from .servers import Database


def real_error(db: Database, sql: str) -> MySQLdb.Error:
    conn = MySQLdb.connect(**db.cfg)
    try:
        with pytest.raises(MySQLdb.Error) as raised:
            conn.query(sql.encode())
        return raised.value
    finally:
        conn.close()


def test_sql_errors_are_code_0_and_leave_the_connection_usable(db: Database) -> None:
    table = db.create_table("t", "id INT PRIMARY KEY")
    db.query(f"INSERT INTO {table} VALUES (1)")
    for sql in ("SELEC 1", f"INSERT INTO {table} VALUES (1)", "SELECT * FROM nope"):
        error = real_error(db, sql)
        assert classify(error) is ErrorKind.ERROR
        assert not is_connection_broken(error)


def test_a_dead_connection_is_code_1_and_broken(db: Database) -> None:
    conn = MySQLdb.connect(**db.cfg)
    db.query(f"KILL {conn.thread_id()}")
    with pytest.raises(MySQLdb.OperationalError) as lost:
        conn.query(b"SELECT 1")
    with pytest.raises(MySQLdb.OperationalError) as gone:
        conn.query(b"SELECT 1")
    conn.close()
    for error in (lost.value, gone.value):
        assert error.args[0] in (2006, 2013)
        assert classify(error) is ErrorKind.UNAVAILABLE
        assert is_connection_broken(error)


def test_kill_query_interrupts_but_keeps_the_connection() -> None:
    error = MySQLdb.OperationalError(1317, "Query execution was interrupted")
    assert classify(error) is ErrorKind.ERROR
    assert not is_connection_broken(error)


def test_connection_limits_are_code_2(db: Database) -> None:
    db.query(f"ALTER USER '{db.user}'@'%' WITH MAX_USER_CONNECTIONS 1")
    first = MySQLdb.connect(**db.cfg)
    try:
        with pytest.raises(MySQLdb.OperationalError) as refused:
            MySQLdb.connect(**db.cfg)
    finally:
        first.close()
    assert refused.value.args[0] in (1203, 1226)
    assert classify(refused.value) is ErrorKind.BUSY
    assert classify(MySQLdb.OperationalError(1040, "Too many connections")) is (
        ErrorKind.BUSY
    )


def test_pool_errors() -> None:
    assert classify(ConnectionPool.DrainedError()) is ErrorKind.UNAVAILABLE
    assert classify(PoolClosed()) is ErrorKind.UNAVAILABLE
    assert classify(PoolStartupError("x")) is ErrorKind.UNAVAILABLE
    assert classify(ConnectionPool.OverflowError()) is ErrorKind.BUSY
    assert classify(PoolTimeout("x")) is ErrorKind.BUSY
    assert classify(ValueError()) is None
    released = CursorReleasedError("gone")
    assert classify(released) is ErrorKind.ERROR
    assert not is_connection_broken(released)


def test_kinds_have_stable_codes_statuses_and_messages() -> None:
    assert [(k.value, k.status_code, k.message) for k in ErrorKind] == [
        (0, 500, "Something Went Wrong"),
        (1, 503, "Database Server Is Not Available"),
        (2, 503, "Database Server Is Busy"),
        (3, 503, "Database Conflict, Try Again"),
        (4, 504, "Database Query Timed Out"),
    ]


def test_a_host_refusing_writes_is_unavailable_a_conflict_is_code_3() -> None:
    import MySQLdb

    from fastapi_mysqlpool._errors import is_conflict, refuses_writes

    read_only = MySQLdb.OperationalError(
        1290,
        "The MariaDB server is running with the --read-only option so it "
        "cannot execute this statement",
    )
    secure_file = MySQLdb.OperationalError(
        1290, "The MariaDB server is running with the --secure-file-priv option"
    )
    not_ready = MySQLdb.OperationalError(
        1047, "WSREP has not yet prepared node for application use"
    )
    assert refuses_writes(read_only)
    assert refuses_writes(not_ready)
    assert refuses_writes(MySQLdb.OperationalError(1836, "Running in read-only mode"))
    assert not refuses_writes(secure_file)
    assert classify(read_only) is ErrorKind.UNAVAILABLE
    assert classify(secure_file) is ErrorKind.ERROR
    for errno in (1205, 1213):
        conflict = MySQLdb.OperationalError(errno, "")
        assert is_conflict(conflict)
        assert classify(conflict) is ErrorKind.CONFLICT
    assert not is_conflict(MySQLdb.OperationalError(2013, "Lost connection"))
