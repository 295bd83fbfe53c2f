"""_wire.answer_complete, on real answers: complete at full length, at no prefix."""

from __future__ import annotations

import ctypes
import select
from typing import Any

import MySQLdb
import pytest

from fastapi_mysqlpool._socket import peek
from fastapi_mysqlpool._wire import answer_complete

from .servers import Database

STATEMENTS = [
    "DO 1",  # OK
    "SELEC 1",  # ERR
    "SELECT 1 FROM DUAL WHERE 0",  # a result without rows
    "SELECT 1, 'x', NULL, ''",  # NULL (0xFB) and an empty string
    "SELECT '' AS a, 2 AS b",  # a row that starts with 0x00
    "SELECT seq, REPEAT('y', seq % 50) FROM seq_1_to_200",  # many rows
    "SELECT 1; SELECT 2",  # a first result, more to come
    "SHOW VARIABLES LIKE 'net_%'",
]


def raw_answer(conn: Any, sql: str) -> bytes:
    """The bytes of the answer, as the server sent them (one write, on loopback)."""
    conn.send_query(sql.encode())
    assert select.select([conn.fileno()], [], [], 10)[0]
    buffer = ctypes.create_string_buffer(1 << 20)
    size = peek(conn.fileno(), buffer)
    return buffer.raw[:size]


def consume(conn: Any) -> None:
    """Let the C client read the answer (and any further ones)."""
    try:
        conn.read_query_result()
        conn.store_result()
    except MySQLdb.ProgrammingError:
        pass
    while conn.more_results() and conn.next_result() == 0:
        conn.store_result()


@pytest.mark.parametrize("sql", STATEMENTS)
def test_complete_exactly_at_the_end(db: Database, sql: str) -> None:
    conn = MySQLdb.connect(**db.cfg)
    try:
        data = raw_answer(conn, sql)
        consume(conn)
    finally:
        conn.close()
    assert answer_complete(memoryview(data))
    for end in range(len(data)):
        # A multi-statement answer is complete at its first result's end.
        if answer_complete(memoryview(data[:end])):
            assert ";" in sql
            assert answer_complete(memoryview(data[:end]))
            break
    else:
        return
    first_end = end
    for end in range(first_end):
        assert not answer_complete(memoryview(data[:end])), end


def test_what_is_not_a_plain_mysql_answer() -> None:
    tls_record = b"\x17\x03\x03\x00\x40" + bytes(64)
    assert not answer_complete(memoryview(tls_record))
    assert not answer_complete(memoryview(b""))
    local_infile = b"\x06\x00\x00\x01\xfbfile"
    assert not answer_complete(memoryview(local_infile))


def packets(*payloads: bytes) -> bytes:
    return b"".join(
        len(p).to_bytes(3, "little") + bytes([i]) + p for i, p in enumerate(payloads)
    )


# A column definition: catalog "def", empty schema/table names, column "a", the
# fixed-length tail (charset 63, length 1, type 3 = LONG).
DEFINITION = (
    b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x01\x00\x00\x00\x03\x00\x00\x00\x00\x00"
)
EOF_PACKET = b"\xfe\x00\x00\x02\x00"
OK_AS_EOF = b"\xfe\x00\x00\x02\x00\x00\x00"  # what ends a result when EOF is deprecated


@pytest.mark.parametrize(
    "answer",
    [
        packets(b"\x01", DEFINITION, EOF_PACKET, b"\x011", b"\x012", EOF_PACKET),
        packets(b"\x01", DEFINITION, EOF_PACKET, EOF_PACKET),  # no rows
        packets(b"\x01", DEFINITION, b"\x011", b"\xfb", OK_AS_EOF),  # deprecated EOF
        packets(b"\x01", DEFINITION, OK_AS_EOF),  # deprecated EOF, no rows
        packets(b"\x01", DEFINITION, EOF_PACKET, b"\x011", b"\xff\x15\x04#HY000x"),
    ],
    ids=["eof", "eof-no-rows", "deprecated-eof", "deprecated-eof-no-rows", "error"],
)
def test_both_ways_a_result_ends(answer: bytes) -> None:
    """MariaDB and MySQL servers end a result with an EOF or (CLIENT_DEPRECATE_EOF)
    an OK packet headed 0xFE; either ends it, at no earlier point."""
    assert answer_complete(memoryview(answer))
    for end in range(len(answer)):
        assert not answer_complete(memoryview(answer[:end])), end


def test_a_peek_buffer_read_up_to_its_size() -> None:
    """As the async cursor asks: the peek buffer itself (a ctypes array) and
    the size peeked; bytes beyond that size, left from an earlier answer,
    count for nothing."""
    answer = packets(b"\x01", DEFINITION, EOF_PACKET, b"\x011", b"\x012", EOF_PACKET)
    buffer = ctypes.create_string_buffer(answer + EOF_PACKET * 4, 4096)
    assert answer_complete(buffer, len(answer))
    for end in range(len(answer)):
        assert not answer_complete(buffer, end), end
