"""PooledConnection: what it notices about the session, and cfg it must accept."""

from __future__ import annotations

import pytest

from fastapi_mysqlpool import Pool
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
