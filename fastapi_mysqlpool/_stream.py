"""``pool.stream()``: a result read unbuffered, a batch at a time, on a
connection of its own.

The statement is sent on the loop, and the loop waits for the first bytes of
its answer (see _aio); then each batch is read by the C client
(``mysql_use_result``, ``fetch_row(batch)``) in a worker thread. A batch is
read on the loop only if it has all arrived, and the client library's own
read-ahead buffer (16 KB, not visible from here) hides where the socket's
bytes start within a row: peeking at the socket cannot tell. A worker thread
per batch costs ~60 µs: ~6% at 1,000 small rows a batch (benchmarks/stream.py).

Memory holds one batch: the server waits (its socket's buffers full) while
the consumer is slow. A stream cut off before its end (a client gone, an
error, ``aclose()`` early) closes its connection, and the pool KILLs the
server's query (see Slots.checkin); one read to its end commits and goes back
to the pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread
import MySQLdb

from . import _aio
from ._answers import describe
from ._connection import PooledConnection
from ._errors import is_connection_broken
from ._lease import LendingPool
from ._session import CACHED_TEMPLATE_MAX
from ._statements import SEND_INLINE_MAX, large_arguments, mogrify, mogrify_in_pieces

RowT = TypeVar("RowT")
#: A result's DB-API description (as a cursor's).
Description = tuple[tuple[Any, ...], ...]
#: What a batch becomes in the worker thread that read it: (rows, the
#: description) -> anything (stream_rows encodes the batch there).
Convert = Callable[[Sequence[Any], Description], Any]

STREAMED = (
    "read a result unbuffered, a batch at a time: pool.stream(sql) "
    "(or fastapi_mysqlpool.stream_rows() for a StreamingResponse)"
)


def stream(
    pool: LendingPool,
    sql: str | bytes,
    args: Any = None,
    *,
    dict_rows: bool = False,
    batch: int = 1000,
) -> RowStream[Any]:
    """``async for row in pool.stream(sql, args)``: the rows of one
    statement, read unbuffered (server-side) on a connection of their own,
    *batch* rows at a time as the server sends them (as dicts with
    *dict_rows*). Memory holds one batch whatever the result's size, and the
    event loop never waits for the server.

    Read to its end, the transaction commits and the connection goes back to
    the pool. To stop early, use ``async with pool.stream(...) as rows`` (or
    ``aclose()``): the connection is closed and the query KILLed. (This is
    :meth:`Pool.stream`.)
    """
    return RowStream(pool, sql, args, dict_rows=dict_rows, batch=batch)


class RowStream(Generic[RowT]):
    """The rows of one statement, read as the server sends them (see
    :meth:`Pool.stream`).

    ``async for row in stream`` reads it all; ``async with`` ends it at the
    block's end whatever happened (rows left unread: the connection is closed
    and the query KILLed; all read: committed, the connection given back).
    :meth:`batches` gives the rows a batch at a time.
    """

    __slots__ = (
        "_args",
        "_batch",
        "_conn",
        "_convert",
        "_done",
        "_how",
        "_index",
        "_pool",
        "_result",
        "_rows",
        "_sql",
        "_started",
        "description",
    )

    def __init__(
        self,
        pool: LendingPool,
        sql: str | bytes,
        args: Any = None,
        *,
        dict_rows: bool = False,
        batch: int = 1000,
        convert: Convert | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch!r}")
        self._pool = pool
        self._sql = sql
        self._args = args
        self._how = 1 if dict_rows else 0  # fetch_row()'s: dicts or tuples
        self._batch = batch
        self._convert = convert
        self._conn: PooledConnection | None = None
        self._result: Any = None  # the unbuffered result, until read or cut off
        self._rows: Sequence[Any] = ()
        self._index = 0
        self._started = False
        self._done = False  # every row read, the connection in step
        #: The result's DB-API description, as a cursor's: known once the
        #: first batch is read (empty for a statement without rows).
        self.description: Description = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """The result's column names (see :attr:`description`)."""
        return tuple(column[0] for column in self.description)

    # -- iteration ---------------------------------------------------------------

    def __aiter__(self) -> RowStream[RowT]:
        return self

    async def __anext__(self) -> RowT:
        index = self._index
        rows = self._rows
        while index >= len(rows):
            got = await self.next_batch()
            if got is None:
                raise StopAsyncIteration
            rows, index = got, 0
            self._rows = rows
        self._index = index + 1
        return rows[index]  # type: ignore[no-any-return]

    async def batches(self) -> AsyncIterator[Sequence[RowT]]:
        """The rows, a batch (at most ``batch`` rows) at a time."""
        while (rows := await self.next_batch()) is not None:
            yield rows

    async def next_batch(self) -> Any:
        """The next batch, or None after the last (the stream then ends)."""
        self._rows = ()
        if self._done:
            await self.aclose()
            return None
        try:
            if self._started:
                got = await anyio.to_thread.run_sync(self._read_batch)
            else:
                self._started = True
                got = await self._first_batch()
        except BaseException as exc:
            self._cut_off(exc)
            raise
        if not got and self._read_all():  # (set by the worker thread)
            await self.aclose()
            return None
        return got

    def _read_all(self) -> bool:
        return self._done

    # -- the end ----------------------------------------------------------------------

    async def __aenter__(self) -> RowStream[RowT]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._cut_off(exc)
        else:
            await self.aclose()

    async def aclose(self) -> None:
        """End the stream: commit and give the connection back if every row
        was read; else close it (the pool KILLs the query)."""
        conn = self._conn
        if conn is None:
            self._done = True  # closed before (or after) its end: no more rows
            return
        if not self._done:
            self._cut_off(None)
            return
        self._conn = None
        pool = self._pool
        try:
            if conn.used:
                # Shielded: a COMMIT cut in two (sent, unread) is in doubt.
                await _aio.query(conn, b"COMMIT", shield=True)
        except BaseException as error:
            conn.in_step_after(error)  # as Lease.afinish
            reusable = not conn.pending and not isinstance(error, MySQLdb.Error)
            pool.checkin(conn, reusable=reusable)
            raise
        pool.checkin(conn, reusable=True)

    def _cut_off(self, exc: BaseException | None) -> None:
        """Close the connection (no I/O to wait for): a query still running
        (``pending``) is KILLed by the pool. Only then is the result freed,
        which on an open connection would read every row left."""
        conn = self._conn
        self._conn = None
        self._done = True
        if conn is not None:
            if isinstance(exc, MySQLdb.Error):
                if is_connection_broken(exc):
                    conn.broken = True  # its session is gone: nothing to KILL
                else:
                    conn.in_step_after(exc)  # the server's error: none running
            self._pool.checkin(conn, reusable=False)
        self._result = None
        self._rows = ()

    def __del__(self) -> None:
        # Dropped unfinished (a loop broken out of without aclose()): closed.
        if getattr(self, "_conn", None) is not None:
            self._cut_off(None)

    # -- reading -------------------------------------------------------------------

    async def _first_batch(self) -> Any:
        """Borrow a connection, send the statement, wait for the answer on
        the loop, read the first batch in a worker thread."""
        pool = self._pool
        conn = await pool.aacquire(pool.acquire_timeout)  # checked, never blocking
        conn.used = False  # as a Lease: no transaction yet
        self._conn = conn
        sql, args = self._sql, self._args
        if len(sql) > CACHED_TEMPLATE_MAX or (
            args is not None and large_arguments(args)
        ):
            # Scanning a long template, escaping large arguments: a while.
            await anyio.to_thread.run_sync(conn.note_template, sql)
            statement = await anyio.to_thread.run_sync(
                mogrify_in_pieces, conn, sql, args
            )
        else:
            conn.note_template(sql)  # the template: never the parameters
            statement = mogrify(conn, sql, args)
        conn.start_statement()
        conn.pending = True  # until every row is read: else closed and KILLed
        if len(statement) > SEND_INLINE_MAX:
            await anyio.to_thread.run_sync(conn.send_query, statement)
        else:
            conn.send_query(statement)
        # The server may take long to start answering (a sort): on the loop.
        await _aio.wait_readable(conn, conn.read_timeout)
        return await anyio.to_thread.run_sync(self._read_first_batch)

    def _read_first_batch(self) -> Any:
        """In a worker thread: the answer's header, then the first batch."""
        conn = self._conn
        assert conn is not None
        conn.read_query_result()
        if not conn.field_count():  # no result set (an UPDATE...)
            self._end(conn)
            return self._converted(())
        conn.note_status()  # the header's: reading the rows overwrites it
        self._result = result = conn.use_result()
        self.description = describe(result)
        del result
        return self._read_batch()

    def _read_batch(self) -> Any:
        """In a worker thread: up to ``batch`` rows. Fewer: the result's end.

        The result is only ever freed in this thread or after its connection
        is closed: freeing it takes the connection's lock, which fetch_row()
        holds (see _answers._stream_answer).
        """
        conn = self._conn
        if conn is None:  # cut off meanwhile
            return self._converted(())
        rows = self._result.fetch_row(self._batch, self._how)
        if len(rows) < self._batch:
            self._result = None  # all read: freeing it reads nothing
            self._end(conn)
        return self._converted(rows)

    def _end(self, conn: PooledConnection) -> None:
        """Every row read: later result sets (a procedure's) are dropped."""
        while conn.next_result() == 0:
            conn.discard_result()
        conn.pending = False
        self._done = True

    def _converted(self, rows: Sequence[Any]) -> Any:
        convert = self._convert
        return rows if convert is None else convert(rows, self.description)
