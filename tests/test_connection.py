"""PooledConnection: what it notices about the session, and cfg it must accept."""

from __future__ import annotations

import math

import MySQLdb
import pytest

from fastapi_mysqlpool import Pool
from fastapi_mysqlpool._connection import (
    CHECK_IDLE_AFTER,
    CHECK_TIMEOUT,
    PooledConnection,
)
from fastapi_mysqlpool._session import scan

from .servers import Database


@pytest.mark.parametrize(
    ("statement", "changes"),
    [
        (b"SELECT 1", False),
        (b"UPDATE t SET a = 1", False),  # SET inside a statement: not a change
        (b"INSERT INTO t VALUES ('a@b.example')", False),
        (b"SET @x = 1", True),
        (b"  set session sql_mode = ''", True),
        (b"/* note */ USE other", True),
        (b"/*!40101 SET NAMES utf8 */", True),
        (b"SELECT 1; SET @x = 1", True),
        (b"SELECT a INTO @v FROM t", True),
        (b"SELECT @v := 1", True),
        (b"LOCK TABLES t WRITE", True),
        (b"FLUSH TABLES WITH READ LOCK", True),
        (b"CREATE TEMPORARY TABLE t (id INT)", True),
        (b"PREPARE s FROM 'SELECT 1'", True),
        (b"XA START 'x'", True),
        (b"HANDLER t OPEN", True),
    ],
)
def test_statements_that_leave_session_state(statement: bytes, changes: bool) -> None:
    """What the template scan counts where the server's flag cannot be read
    (tests/test_session_state.py has the rest)."""
    assert bool(scan(statement)) is changes


def test_cfg_that_runs_statements_while_connecting(db: Database) -> None:
    """sql_mode and collation make MySQLdb send str queries while connecting."""
    cfg = {**db.cfg, "sql_mode": "ANSI_QUOTES", "collation": "utf8mb4_unicode_ci"}
    with Pool(cfg, size=1) as pool:
        with pool.fetch() as cursor:
            cursor.execute("SELECT @@sql_mode, @@collation_connection")
            sql_mode, collation = cursor.fetchone()
        # What connecting ran is not a session change: the connection is kept.
        assert (pool.stats().idle, pool.stats().closed) == (1, 0)
    assert "ANSI_QUOTES" in sql_mode
    assert collation == "utf8mb4_unicode_ci"


# -- health, without a server: the methods on a stand-in's attributes -------------


class _Health:
    """The attributes PooledConnection's health methods read."""

    def __init__(self, *, dead: bool = False) -> None:
        self.expires_at = 100.0
        self.alive_at = 10.0
        self.wait_timeout = 28800.0
        self.pending = True
        self.looks_dead = lambda: dead
        self.pings: list[float] = []

    def alive_at_a_glance(self, now: float) -> bool | None:
        return PooledConnection.alive_at_a_glance(self, now)  # type: ignore[arg-type]

    def ping_within(self, timeout: float) -> bool:
        self.pings.append(timeout)
        return True


def test_stale_past_its_lifetime_or_the_servers_wait_timeout() -> None:
    conn = _Health()
    stale = PooledConnection.stale
    assert not stale(conn, 99.9)  # type: ignore[arg-type]
    assert stale(conn, 100.0)  # type: ignore[arg-type]
    conn.expires_at, conn.wait_timeout = math.inf, 60.0
    assert not stale(conn, 69.9)  # type: ignore[arg-type]
    assert stale(conn, 70.0)  # type: ignore[arg-type]


def test_a_glance_tells_dead_recent_or_unknown() -> None:
    assert _Health(dead=True).alive_at_a_glance(10.0) is False
    conn = _Health()
    assert conn.alive_at_a_glance(10.0 + CHECK_IDLE_AFTER) is True
    assert conn.alive_at_a_glance(10.1 + CHECK_IDLE_AFTER) is None
    # Unknown: a round trip decides, within CHECK_TIMEOUT.
    assert PooledConnection.check_alive(conn, 20.0)  # type: ignore[arg-type]
    assert conn.pings == [CHECK_TIMEOUT]
    assert PooledConnection.check_alive(conn, 10.0)  # type: ignore[arg-type]
    assert conn.pings == [CHECK_TIMEOUT]


def test_an_error_the_server_sent_leaves_the_connection_in_step() -> None:
    conn = _Health()
    in_step_after = PooledConnection.in_step_after
    assert not in_step_after(conn, MySQLdb.OperationalError(2013, "lost"))  # type: ignore[arg-type]
    assert conn.pending
    assert in_step_after(conn, MySQLdb.OperationalError(1226, "limit"))  # type: ignore[arg-type]
    assert not conn.pending
