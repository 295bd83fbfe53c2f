"""Reading a statement's answer for :class:`AsyncPoolCursor`: on the event
loop when all of it is here and small (see ``AsyncPoolCursor._run``), else in
a worker thread. *how* is fetch_row()'s: rows as tuples (0) or dicts (1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import MySQLdb

from ._connection import PooledConnection
from ._errors import is_connection_broken

#: The largest answer read on the event loop (parsing it takes well under 1 ms);
#: larger ones are read in a worker thread.
LOOP_READ_MAX = 64 * 1024

# An answer: (rows, its description or the result object to compute it from,
# or None; rowcount, lastrowid, warning_count). A tuple: this runs for every
# statement.
Answer = tuple[Sequence[Any], Any, int, int | None, int]
NO_ROWS: Sequence[Any] = ()
#: What a cursor shows after a statement failed: no stale rows from before.
FAILED: Answer = (NO_ROWS, None, -1, None, 0)


def _no_result(conn: PooledConnection) -> Answer:
    """The answer to a statement without a result set (INSERT, UPDATE...)."""
    conn.pending = False
    return NO_ROWS, None, conn.affected_rows(), conn.insert_id(), conn.warning_count()


def _read_answer(conn: PooledConnection, how: int) -> Answer:
    """The current statement's answer, already all here: read on the loop."""
    if not conn.field_count():
        return _no_result(conn)
    conn.note_status()  # the header's: reading the rows overwrites it
    result = conn.store_result()
    # All of it read: in step, whatever converting the rows raises (a
    # converter's error, text the charset cannot decode) for the caller.
    conn.pending = False
    rows = result.fetch_row(0, how)
    return rows, result, conn.affected_rows(), conn.insert_id(), conn.warning_count()


def _stream_answer(conn: PooledConnection, how: int) -> Answer:
    """The current statement's answer, read in a worker thread.

    use_result(), not store_result(): store_result() copies every row before
    converting any, and converting them from it keeps the GIL throughout (for
    100,000 rows: 70% slower, the loop held longer). use_result() lets go of
    the GIL around each row it reads.

    The result never leaves this function: freeing an unbuffered result takes
    its connection's lock (mysqlclient 2.3), which fetch_row() holds while it
    reads. Kept alive (as the description, or in a reference cycle through a
    traceback) it could be freed by the garbage collector inside fetch_row()
    of a later statement on the same connection, in the thread holding that
    lock: that thread would wait for itself forever.
    """
    if not conn.field_count():
        return _no_result(conn)
    conn.note_status()  # the header's: reading the rows overwrites it
    result = conn.use_result()
    try:
        rows = result.fetch_row(0, how)
    except BaseException:
        # Failed partway (a server error such as 1969 or 1317, a converter's
        # error): read the rest and free the result here, now.
        _discard_rest(conn, result)
        del result
        raise
    description = describe(result)
    del result  # freed here, in this thread, the lock free
    conn.pending = False
    return rows, description, len(rows), conn.insert_id(), conn.warning_count()


def _discard_rest(conn: PooledConnection, result: Any) -> None:
    """Read what is left of a result that failed partway, so that the
    connection is in step again (unless it broke)."""
    try:
        result.discard()  # without the GIL
    except MySQLdb.Error as exc:
        # A server error ended the result (the one fetch_row() raised, still
        # reported): in step. A client error: the connection is gone.
        if is_connection_broken(exc):
            conn.broken = True
            return
    conn.pending = False


def describe(result: Any) -> tuple[tuple[Any, ...], ...]:
    """*result*'s DB-API description, the same whichever way it was read.

    The display size (the third item) is None, as in aiomysql and asyncmy
    (PEP 249: "no meaningful value"): mysqlclient reports the longest value's
    length for a stored result only (its Cursor), 0 for a streamed one (its
    SSCursor), and a large answer is streamed.
    """
    return tuple((d[0], d[1], None, *d[3:]) for d in result.describe())


def read_query_answer(conn: PooledConnection, how: int) -> Answer:
    """The answer to the statement sent, all of it here already: on the loop."""
    conn.read_query_result()
    return _read_answer(conn, how)


def stream_query_answer(conn: PooledConnection, how: int) -> Answer:
    """The answer to the statement sent, in a worker thread."""
    conn.read_query_result()
    return _stream_answer(conn, how)


def stream_next_answer(conn: PooledConnection, how: int) -> Answer:
    """The next result set's answer, in a worker thread."""
    conn.next_result()
    return _stream_answer(conn, how)
