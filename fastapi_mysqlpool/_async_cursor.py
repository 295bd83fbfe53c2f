"""``AsyncPoolCursor``: ``await cursor.execute(...)`` on mysqlclient, no thread.

A statement is sent with ``send_query``; the event loop waits for the socket
(see _aio); the answer is then read by the C client, on the loop only when all
of it has arrived (see _wire) and is at most ``LOOP_READ_MAX`` bytes: reading
it is then bounded work that cannot wait on the server. Anything else (a large
or still streaming result, TLS) is read in a worker thread, as are further
result sets and very large statements. Reading answers is _answers' job;
building statements, _statements'.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import anyio.to_thread
import MySQLdb

from . import _aio
from ._answers import (
    FAILED,
    LOOP_READ_MAX,
    Answer,
    describe,
    read_query_answer,
    stream_next_answer,
    stream_query_answer,
)
from ._connection import PooledConnection, closed_while_waiting
from ._cursors import RELEASED_MESSAGE, call_template
from ._errors import CursorReleasedError, is_connection_broken
from ._session import CACHED_TEMPLATE_MAX
from ._socket import peek
from ._statements import (
    LOOP_ROWS_MAX,
    SEND_INLINE_MAX,
    insert_values,
    large_arguments,
    mogrify,
    mogrify_in_pieces,
    next_statement,
    packed_inserts,
)
from ._wire import answer_complete

RowT = TypeVar("RowT")


class CursorOwner(Protocol):
    """What an :class:`AsyncPoolCursor` needs of the lease that lent it."""

    @property
    def conn(self) -> PooledConnection | None:
        """The connection lent; None once given back (or if no live one was
        left to replace a dead one)."""

    def checked_at_a_glance(self) -> PooledConnection | None:
        """The connection if a glance proves it alive (nothing to await);
        else None, and :meth:`acheck` must run."""

    async def acheck(self) -> PooledConnection:
        """The connection, checked (a live one swapped in if it was dead)."""

    async def adrain(self, conn: PooledConnection) -> None:
        """Read and drop the results *conn*'s last statement left unread."""


class AsyncPoolCursor(Generic[RowT]):
    """An aiomysql-style cursor on a pooled connection, for ``async def`` code.

    ``await execute()`` / ``executemany()`` / ``callproc()`` / ``nextset()``, and
    awaitable ``fetchone()`` / ``fetchmany()`` / ``fetchall()`` / ``scroll()``:
    code written for aiomysql or asyncmy ports over unchanged. Rows are read
    when the statement runs, as with their default (buffered) cursors. Once
    its lease ends (the request, the task) the cursor refuses any use.
    """

    __slots__ = (
        "_checked",
        "_closed",
        "_executed",
        "_how",
        "_owner",
        "_result",
        "_rows",
        "arraysize",
        "lastrowid",
        "rowcount",
        "rownumber",
        "warning_count",
    )

    # (dict_rows and checked: positional still, as _lease.py passes them.)
    def __init__(
        self, owner: CursorOwner, *, dict_rows: bool = False, checked: bool = True
    ) -> None:
        self.arraysize = 1
        self._owner: CursorOwner | None = owner  # None once released
        self._how = 1 if dict_rows else 0  # fetch_row()'s: dicts or tuples
        self._checked = checked
        self._closed = False
        self._rows: Sequence[Any] = ()
        # The description, or the result to compute it from when asked for.
        self._result: Any = None
        self._executed: bytes | None = None
        self.rownumber = 0
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.warning_count = 0

    # -- state ---------------------------------------------------------------

    @property
    def description(self) -> tuple[tuple[Any, ...], ...] | None:
        """The DB-API column descriptions of the last result (None without)."""
        result = self._result
        if result is None or type(result) is tuple:
            return result
        # A stored result: described once, then let go of.
        self._result = description = describe(result)
        return description

    @property
    def connection(self) -> PooledConnection:
        """The connection, for ``commit()`` / ``rollback()`` mid-request. These
        block the loop for one round trip; and a reference kept beyond the
        request bypasses the pool: do not keep one."""
        return self._conn()

    def _conn(self) -> PooledConnection:
        owner = self._owner
        if owner is None:
            raise CursorReleasedError(RELEASED_MESSAGE)
        if self._closed:
            raise MySQLdb.ProgrammingError("cursor closed")
        conn = owner.conn
        if conn is None:  # the lease ended without one (no live replacement)
            raise CursorReleasedError(RELEASED_MESSAGE)
        return conn

    def release(self) -> None:
        """Called when the lease ends: refuse any later use. (Letting go of
        the lease also spares the garbage collector a cycle per request.)"""
        self._owner = None
        self._rows = ()
        self._result = None

    async def close(self) -> None:
        """Close this cursor (the connection stays the request's)."""
        self._closed = True
        self._rows = ()
        self._result = None

    async def __aenter__(self) -> AsyncPoolCursor[RowT]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- statements ------------------------------------------------------------

    def mogrify(self, query: str | bytes, args: Any = None) -> str:
        """The statement as it would be sent, arguments escaped."""
        conn = self._conn()
        return mogrify(conn, query, args).decode(conn.encoding)  # _statements

    def execute(self, query: str | bytes, args: Any = None) -> Coroutine[Any, Any, int]:
        """Run one statement and read its rows; returns the affected row count.

        Used as a coroutine function (``await cursor.execute(...)``). Not one
        itself: when the connection is ready, it hands over the coroutine
        that runs the statement (one coroutine less per query)."""
        conn = self._ready_now()
        if (
            conn is None
            or len(query) > CACHED_TEMPLATE_MAX
            or (args is not None and large_arguments(args))
        ):
            return self._execute_when_ready(query, args)
        conn.note_template(query)  # the template: never the parameters
        return self._run(conn, mogrify(conn, query, args), query)

    async def _execute_when_ready(self, query: str | bytes, args: Any) -> int:
        conn = await self._ready()
        await _note_template(conn, query)
        return await self._run(conn, await self._statement(conn, query, args), query)

    async def _statement(
        self, conn: PooledConnection, query: str | bytes, args: Any
    ) -> bytes:
        """The statement to send, built in a worker thread if *args* are large."""
        if large_arguments(args):
            return await anyio.to_thread.run_sync(mogrify_in_pieces, conn, query, args)
        return mogrify(conn, query, args)

    async def executemany(self, query: str | bytes, args: Iterable[Any]) -> int | None:
        """Run *query* once per set of arguments; ``INSERT ... VALUES`` rows are
        packed into as few statements as fit (as MySQLdb does)."""
        batch = list(args)
        if not batch:
            return None
        conn = self._ready_now() or await self._ready()
        await _note_template(conn, query)
        telemetry = conn.telemetry
        work = self._run_many(conn, query, batch)
        if telemetry is not None:
            work = telemetry.atimed(conn, query, work, len(batch))
        self.rowcount = total = await work
        return total

    async def _run_many(
        self, conn: PooledConnection, query: str | bytes, batch: list[Any]
    ) -> int:
        """:meth:`executemany`'s statements (timed there as one); the total
        row count."""
        match = insert_values(query)
        total = 0
        if match is None:
            for item in batch:
                # Results the last statement left (a procedure's, several
                # statements') are read first, as MySQLdb's execute() does.
                conn = self._ready_now() or await self._ready()
                await self._run(conn, await self._statement(conn, query, item))
                total += self.rowcount
        elif len(batch) <= LOOP_ROWS_MAX and not any(map(large_arguments, batch)):
            for statement in packed_inserts(conn, match, batch, mogrify):
                await self._run(conn, statement)
                total += self.rowcount
        else:
            # Each statement built in a worker thread (see mogrify_in_pieces).
            statements = packed_inserts(conn, match, batch, mogrify_in_pieces)
            while built := await anyio.to_thread.run_sync(next_statement, statements):
                await self._run(conn, built)
                total += self.rowcount
        return total

    async def callproc(self, procname: str, args: Sequence[Any] = ()) -> Sequence[Any]:
        """Call a stored procedure (as MySQLdb: IN values through ``@_name_n``
        variables). Use :meth:`nextset` to read all of its result sets."""
        conn = self._ready_now() or await self._ready()
        conn.session_changed = True  # any CALL counts (see LeasedCursorMixin)
        telemetry = conn.telemetry
        work = self._call(conn, procname, args)
        if telemetry is not None:
            work = telemetry.atimed(conn, call_template(procname, len(args)), work)
        await work
        return args

    async def _call(
        self, conn: PooledConnection, procname: str, args: Sequence[Any]
    ) -> None:
        """:meth:`callproc`'s statements (timed there as one)."""
        name = procname.encode(conn.encoding).replace(b"`", b"``")
        if args:
            assignments = b",".join(
                b"@`_%s_%d`=%s" % (name, i, conn.literal(arg))
                for i, arg in enumerate(args)
            )
            await self._run(conn, b"SET " + assignments)
        params = b",".join(b"@`_%s_%d`" % (name, i) for i in range(len(args)))
        await self._run(conn, b"CALL `%s`(%s)" % (name, params))

    async def nextset(self) -> bool | None:
        """Move to the next result set; ``None`` when there is none."""
        conn = self._conn()
        if conn.pending:
            raise _aio.in_progress()
        if not conn.more_results():
            return None
        conn.pending = True
        try:
            # The server may still be computing it: wait in a thread.
            answer = await anyio.to_thread.run_sync(stream_next_answer, conn, self._how)
        except BaseException as exc:
            self._failed(conn, exc)
            raise
        self._set(answer)
        return True

    def _ready_now(self) -> PooledConnection | None:
        """The connection, if :meth:`_ready` would have nothing to await (the
        usual case: written out so, no coroutine is made); else None."""
        conn = self._conn()
        if not self._checked:
            assert self._owner is not None  # or _conn() would have raised
            checked = self._owner.checked_at_a_glance()
            if checked is None:
                return None
            self._checked = True
            conn = checked
        return None if conn.more_results() else conn

    async def _ready(self) -> PooledConnection:
        """The connection, checked before the first statement; results the
        last statement left unread are discarded first."""
        conn = self._conn()
        owner = self._owner
        assert owner is not None  # or _conn() would have raised
        if not self._checked:
            self._checked = True
            conn = await owner.acheck()
        if conn.more_results():
            try:
                await owner.adrain(conn)
            except BaseException as exc:
                # A later statement's error ended them: raised here, as by
                # MySQLdb's execute(), the connection in step.
                self._failed(conn, exc)
                raise
        return conn

    async def _run(
        self,
        conn: PooledConnection,
        statement: bytes,
        template: str | bytes | None = None,
    ) -> int:
        """Run *statement*; its affected row count (set as ``rowcount``). With
        its *template*, the statement is timed (see _telemetry)."""
        if self._owner is None:
            # Made in a request, run after it: the connection is another's now.
            raise CursorReleasedError(RELEASED_MESSAGE)
        if conn.pending:  # a cut-off statement: its answer would be read as ours
            raise _aio.in_progress()
        conn.start_statement()
        telemetry = conn.telemetry
        timing = (
            None
            if telemetry is None or template is None
            else telemetry.start(conn, template)
        )
        conn.pending = True  # until the answer is read; see Lease.afinish
        try:
            if len(statement) > SEND_INLINE_MAX:
                await anyio.to_thread.run_sync(conn.send_query, statement)
            else:
                conn.send_query(statement)
            if conn.plain_wire:
                # Wait for the start of the answer by looking at what has come
                # of it (written out here: one coroutine less). One syscall
                # where a poll and then a look would be two.
                buffer = conn.peek_buffer(LOOP_READ_MAX)
                fd = conn.fileno()
                for _ in range(_aio.LOOKS):
                    await _aio.next_iteration()  # other tasks run meanwhile
                    if not conn.open:  # closed meanwhile: fd may be another's
                        raise closed_while_waiting()
                    size = peek(fd, buffer)
                    if size >= 0:
                        break
                else:
                    await _aio.wait_selector(conn, conn.read_timeout)
                    size = peek(fd, buffer)
                complete = 0 < size < LOOP_READ_MAX and answer_complete(buffer, size)
            else:
                await _aio.wait_readable(conn, conn.read_timeout)
                complete = False
            if complete:
                answer = read_query_answer(conn, self._how)
            else:
                answer = await anyio.to_thread.run_sync(
                    stream_query_answer, conn, self._how
                )
        except BaseException as exc:
            self._failed(conn, exc)
            too_large = conn.too_large(exc, len(statement))
            if timing is not None:
                timing.end(exc if too_large is None else too_large)
            if too_large is not None:
                raise too_large from exc
            raise
        if timing is not None:
            timing.end(None)
        # (The readers above cleared conn.pending once they had the answer.)
        self._executed = statement
        self._set(answer)
        return self.rowcount

    def _failed(self, conn: PooledConnection, exc: BaseException) -> None:
        self._set(FAILED)  # no stale rows from before
        if isinstance(exc, MySQLdb.Error):
            if is_connection_broken(exc):
                conn.broken = True  # its session is gone: nothing to KILL
            else:
                conn.pending = False  # the server answered: still in step
        # Anything else leaves it pending (closed, KILLed) unless the answer
        # was read first (the readers then cleared it): a cancellation
        # mid-wait does, a converter's error does not.

    def _set(self, answer: Answer) -> None:
        (
            self._rows,
            self._result,
            self.rowcount,
            self.lastrowid,
            self.warning_count,
        ) = answer
        self.rownumber = 0

    # -- rows --------------------------------------------------------------------

    def _check_executed(self) -> None:
        self._conn()
        if self._executed is None:
            raise MySQLdb.ProgrammingError("execute() first")

    async def fetchone(self) -> RowT | None:
        self._check_executed()
        if self.rownumber >= len(self._rows):
            return None
        row = self._rows[self.rownumber]
        self.rownumber += 1
        return row  # type: ignore[no-any-return]

    async def fetchmany(self, size: int | None = None) -> list[RowT]:
        self._check_executed()
        end = self.rownumber + (size or self.arraysize)
        rows = list(self._rows[self.rownumber : end])
        self.rownumber = min(end, len(self._rows))
        return rows

    async def fetchall(self) -> list[RowT]:
        self._check_executed()
        rows = list(self._rows[self.rownumber :])
        self.rownumber = len(self._rows)
        return rows

    async def scroll(self, value: int, mode: str = "relative") -> None:
        self._check_executed()
        if mode == "relative":
            position = self.rownumber + value
        elif mode == "absolute":
            position = value
        else:
            raise MySQLdb.ProgrammingError(f"unknown scroll mode {mode!r}")
        if not 0 <= position < len(self._rows):
            raise IndexError("out of range")
        self.rownumber = position

    def __aiter__(self) -> AsyncPoolCursor[RowT]:
        return self

    async def __anext__(self) -> RowT:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


async def _note_template(conn: PooledConnection, template: str | bytes) -> None:
    """conn.note_template(): in a worker thread for a template too long to be
    remembered (a statement built without parameters), whose scan, done each
    time, takes a while (~0.15 s for 1 MB)."""
    if len(template) > CACHED_TEMPLATE_MAX:
        await anyio.to_thread.run_sync(conn.note_template, template)
    else:
        conn.note_template(template)
