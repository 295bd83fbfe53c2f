"""_statements: what decides where a statement is built, and the packed
INSERT ... VALUES statements of executemany(), on a real connection."""

from __future__ import annotations

import pytest

from fastapi_mysqlpool._connection import PooledConnection
from fastapi_mysqlpool._statements import (
    MAX_STATEMENT,
    SEND_INLINE_MAX,
    insert_values,
    large_arguments,
    mogrify,
    packed_inserts,
)

from .servers import Database


@pytest.mark.parametrize(
    ("args", "large"),
    [
        (None, False),
        ((1, "x" * SEND_INLINE_MAX), False),
        ((b"x" * SEND_INLINE_MAX, "y"), True),
        ([bytearray(SEND_INLINE_MAX + 1)], True),
        ({"a": "x" * (SEND_INLINE_MAX // 2), "b": "y" * SEND_INLINE_MAX}, True),
        # Only text and bytes count; anything else is iterated once, later.
        ((10**100,) * 1000, False),
        (iter(["x" * (SEND_INLINE_MAX + 1)]), False),
    ],
)
def test_large_arguments_count_text_and_bytes(args: object, large: bool) -> None:
    assert large_arguments(args) is large


def test_insert_values_matches_str_and_bytes_alike() -> None:
    for query in ("INSERT INTO t (a) VALUES (%s)", b"insert into t values (%s, %s)"):
        assert insert_values(query) is not None
    assert insert_values("UPDATE t SET a = %s") is None


def test_packed_inserts_fill_statements_up_to_the_limit(db: Database) -> None:
    table = db.create_table("packed", "id INT PRIMARY KEY, body TEXT")
    conn = PooledConnection(**db.cfg)
    try:
        update = b" ON DUPLICATE KEY UPDATE body = VALUES(body)"
        match = insert_values(
            f"INSERT INTO {table} (id, body) VALUES (%s, %s){update.decode()}"
        )
        assert match is not None
        rows = [(i, "x" * 1000) for i in range(200)]
        statements = list(packed_inserts(conn, match, rows, mogrify))
        assert len(statements) > 2
        assert all(len(s) <= MAX_STATEMENT for s in statements)
        assert all(s.endswith(update) for s in statements)
        for statement in statements:
            conn.query(statement)
        conn.commit()
    finally:
        conn.close()
    assert db.scalar(f"SELECT COUNT(*) FROM {table}") == len(rows)
