"""``pool.stream()``: a result read unbuffered, a batch at a time, on a
connection of its own.

The statement is sent on the loop, and the loop waits for the first bytes of
its answer (see _aio); then the batches are read by the C client
(``mysql_use_result``, ``fetch_row(batch)``) in a worker thread. Never on the
loop: ``fetch_row`` blocks until its rows arrive, and whether they have cannot
be told from outside (the client library's own read-ahead buffer, 16 KB,
hides where the socket's bytes start within a row).

The thread reads ahead while fewer than ``AHEAD`` batches wait, then lets go
(a slow consumer holds no thread); a consumer that keeps up never waits for a
thread to start, which on a busy machine costs a scheduler's time slice per
batch (benchmarks/stream.py). Memory holds a few batches: the server waits
(its socket's buffers full) while the consumer is slow.

A stream cut off before its end (a client gone, an error, ``aclose()`` early)
closes its connection, and the pool KILLs the server's query (see
Slots.checkin); one read to its end commits and goes back to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
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
from ._telemetry import Timing

RowT = TypeVar("RowT")
#: A result's DB-API description (as a cursor's).
Description = tuple[tuple[Any, ...], ...]
#: What a batch becomes in the worker thread that read it: (rows, the
#: description) -> anything (stream_rows encodes the batch there).
Convert = Callable[[Sequence[Any], Description], Any]

#: Batches read ahead of the consumer before the reading thread lets go.
AHEAD = 2
#: A stream cut off while its thread waits this long for rows has its session
#: KILLed, which ends the wait (else it lasts until the rows come).
KILL_STUCK_AFTER = 1.0


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
    :meth:`batches` gives the rows a batch at a time. One task at a time.
    """

    __slots__ = (
        "_ahead",
        "_args",
        "_arrived",
        "_batch",
        "_closing",
        "_conn",
        "_convert",
        "_done",
        "_error",
        "_header",
        "_how",
        "_index",
        "_killing",
        "_lock",
        "_loop",
        "_pool",
        "_reader",
        "_reading",
        "_result",
        "_rows",
        "_sql",
        "_started",
        "_stop",
        "_timing",
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
        self._conn: PooledConnection | None = None
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch!r}")
        self._pool = pool
        self._sql = sql
        self._args = args
        self._how = 1 if dict_rows else 0  # fetch_row()'s: dicts or tuples
        self._batch = batch
        self._convert = convert
        self._result: Any = None  # the unbuffered result, until read or cut off
        self._rows: Sequence[Any] = ()  # the batch __anext__ hands out
        self._index = 0
        self._started = False
        # Shared with the reading thread, under _lock:
        self._lock = threading.Lock()
        self._ahead: deque[Any] = deque()  # batches read, not yet taken
        self._reading = False  # a thread is reading (or about to)
        self._done = False  # every row read, the connection in step
        self._stop = False  # cut off: the thread stops at its next batch
        self._closing: tuple[BaseException | None] | None = None  # left to it
        self._error: BaseException | None = None  # the thread's
        self._header = False
        self._reader: asyncio.Future[None] | None = None
        self._killing: asyncio.Future[Any] | None = None
        self._arrived: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timing: Timing | None = None  # the statement's span, until it ends
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
        if not self._started:
            self._started = True
            try:
                await self._send()
            except BaseException as exc:
                self._cut_off(exc)
                raise
        arrived = self._arrived
        while arrived is not None:
            arrived.clear()  # before looking: a later set() is for us
            with self._lock:
                got = self._ahead.popleft() if self._ahead else None
                error, self._error = self._error, None
                done, reading, stop = self._done, self._reading, self._stop
            if stop:
                break
            if got is not None:
                if not (reading or done or stop):
                    self._read_ahead()
                return got
            if error is not None:
                self._cut_off(error)
                raise error
            if done and not reading:
                break
            if not reading:
                self._read_ahead()
            try:
                await arrived.wait()
            except BaseException as exc:  # cancelled
                self._cut_off(exc)
                raise
        await self.aclose()
        return None

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
        with self._lock:
            done = self._done and not self._reading
        conn = self._conn
        if conn is None or not done:
            self._cut_off(None)
            return
        self._conn = None
        self._stop = True
        await self._commit(conn)

    async def _commit(self, conn: PooledConnection) -> None:
        """Every row read: commit, and give the connection back."""
        pool = self._pool
        try:
            if conn.used:
                # Shielded: a COMMIT cut in two (sent, unread) is in doubt.
                await _aio.query(conn, b"COMMIT", shield=True, timed=True)
        except BaseException as error:
            conn.in_step_after(error)  # as Lease.afinish
            reusable = not conn.pending and not isinstance(error, MySQLdb.Error)
            pool.checkin(conn, reusable=reusable)
            raise
        pool.checkin(conn, reusable=True)

    def _cut_off(self, exc: BaseException | None) -> None:
        """Stop; close the connection, now or (if a thread is reading) when
        the thread stops. Nothing to await."""
        with self._lock:
            self._stop = True
            self._ahead.clear()
            reading = self._reading
            if reading:
                self._closing = (exc,)  # the thread closes it when it stops
        if not reading:
            self._close(exc)
        elif self._loop is not None:
            self._loop.call_later(KILL_STUCK_AFTER, self._kill_stuck)

    def _kill_stuck(self) -> None:
        """Cut off, its thread still waiting for rows (a slow query): KILL
        the session, which ends that wait (on the loop)."""
        conn = self._conn
        with self._lock:
            if not self._reading or conn is None or conn.killer is None:
                return
        # Reads only the session's id and address: the thread keeps conn.
        kill = conn.killer.akill_after_timeout(conn, KILL_STUCK_AFTER)
        self._killing = asyncio.ensure_future(kill)  # (kept referenced)
        self._killing.add_done_callback(_quiet)

    def _close(self, exc: BaseException | None) -> None:
        """Close the connection: a query still running (``pending``) is
        KILLed by the pool. Only then is the result freed, which on an open
        connection would read every row left."""
        conn = self._conn
        self._conn = None
        self._rows = ()
        self._timed(exc)
        if conn is not None:
            if isinstance(exc, MySQLdb.Error):
                if is_connection_broken(exc):
                    conn.broken = True  # its session is gone: nothing to KILL
                else:
                    conn.in_step_after(exc)  # the server's error: none running
            self._pool.checkin(conn, reusable=False)
        self._result = None

    def __del__(self) -> None:
        # Dropped unfinished (a loop broken out of without aclose()): closed.
        # (Never while a thread reads: it holds a reference.)
        if self._conn is not None:
            self._close(None)

    # -- reading -------------------------------------------------------------------

    async def _send(self) -> None:
        """Borrow a connection, send the statement, wait on the loop until
        the server starts answering (a sort may take long)."""
        pool = self._pool
        self._loop = asyncio.get_running_loop()
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
        if conn.telemetry is not None:  # a span from the send to the last row
            self._timing = conn.telemetry.start(conn, sql)
        conn.pending = True  # until every row is read: else closed and KILLed
        if len(statement) > SEND_INLINE_MAX:
            await anyio.to_thread.run_sync(conn.send_query, statement)
        else:
            conn.send_query(statement)
        await _aio.wait_readable(conn, conn.read_timeout)
        self._arrived = asyncio.Event()
        if conn.checkin_to is not None:
            # A test's one connection (mysql_rollback): read it all now and
            # give it back, so the test's next borrow (a cursor inside the
            # loop over the rows, a stream cut off) finds it free and in step.
            # Memory is not bounded here: test data is small.
            await anyio.to_thread.run_sync(self._read_all)
            self._conn = None
            await self._commit(conn)

    def _read_all(self) -> None:
        """In a worker thread: every batch, into ``_ahead``."""
        self._header = True
        got = self._read_header()
        while True:
            with self._lock:
                if got:
                    self._ahead.append(got)
                if self._done:
                    return
            got = self._read_batch()

    def _read_ahead(self) -> None:
        """Start a thread reading batches ahead (on the loop)."""
        with self._lock:
            if self._reading:
                return
            self._reading = True
        self._reader = asyncio.ensure_future(anyio.to_thread.run_sync(self._reads))

    def _reads(self) -> None:
        """In a worker thread: batches, until ``AHEAD`` wait, the result
        ends, an error, or a cut-off (then the connection is closed here)."""
        error = None
        try:
            while not self._stop:
                if self._header:
                    got = self._read_batch()
                else:
                    self._header = True
                    got = self._read_header()
                with self._lock:
                    if got and not self._stop:
                        self._ahead.append(got)
                    if self._done or self._stop or len(self._ahead) >= AHEAD:
                        break
                self._notify()
        except BaseException as exc:
            error = exc
        with self._lock:
            self._reading = False
            self._error = error
            closing = self._closing
        if closing is not None:
            # Cut off while reading: closed here; a read ended by a KILL
            # (see _kill_stuck) left no session to KILL again.
            self._close(error if isinstance(error, MySQLdb.Error) else closing[0])
        self._notify()

    def _notify(self) -> None:
        loop, arrived = self._loop, self._arrived
        assert loop is not None
        assert arrived is not None
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(arrived.set)

    def _read_header(self) -> Any:
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
        assert conn is not None
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
        with self._lock:
            self._done = True
        self._timed(None)

    def _timed(self, exc: BaseException | None) -> None:
        """The statement's span and duration end (once: the last row read,
        or the stream cut off or failed)."""
        with self._lock:
            timing, self._timing = self._timing, None
        if timing is not None:
            timing.end(exc)

    def _converted(self, rows: Sequence[Any]) -> Any:
        convert = self._convert
        return rows if convert is None else convert(rows, self.description)


def _quiet(future: asyncio.Future[Any]) -> None:
    """A KILL's outcome: nothing to report (it failing, the rows end the
    thread's wait anyway)."""
    if not future.cancelled():
        future.exception()
