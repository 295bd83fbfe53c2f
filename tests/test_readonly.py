"""The read cursors' check of a template: reads pass, anything else is refused."""

from __future__ import annotations

import pytest

from fastapi_mysqlpool._readonly import read_only, scan_read_only

READS = [
    "SELECT id FROM t WHERE id=%s",
    "  /* why */ select 1",
    "SHOW TABLES",
    "DESCRIBE t",
    "EXPLAIN SELECT 1",
    "WITH a AS (SELECT 1) SELECT * FROM a",
    "(SELECT 1) UNION (SELECT 2)",
    "SELECT * FROM t FOR UPDATE",
    "SELECT 'DELETE FROM t'",
    "SELECT 1 -- ; DELETE FROM t\n",
    "SELECT 1; SELECT 2",
    b"SELECT 1",
]
WRITES = [
    "INSERT INTO t VALUES (1)",
    "update t set a=1",
    "DELETE FROM t",
    "REPLACE INTO t VALUES (1)",
    "CREATE TABLE x (a INT)",
    "SELECT 1; DELETE FROM t",
    "SELECT * INTO OUTFILE '/tmp/x' FROM t",
    "SELECT 1 INTO @a",
    "WITH a AS (SELECT 1) DELETE FROM t",
    "WITH a AS (SELECT 1) UPDATE t SET x=1",
    "EXPLAIN ANALYZE DELETE FROM t",
    "SELECT NEXTVAL(s)",
    "SELECT NEXT VALUE FOR s",
    "/*!40101 DELETE FROM t */",
    "BEGIN",
    "START TRANSACTION",
    "SET autocommit = 0",
    "CALL p()",
    "LOCK TABLES t WRITE",
    'SELECT "a\\"; DELETE FROM t; "',  # a backslash: read both ways
    b"DROP TABLE t",
]


@pytest.mark.parametrize("template", READS)
def test_reads_pass(template: str | bytes) -> None:
    assert scan_read_only(template)
    assert read_only(template)


@pytest.mark.parametrize("template", WRITES)
def test_anything_else_is_refused(template: str | bytes) -> None:
    assert not scan_read_only(template)
    assert not read_only(template)
