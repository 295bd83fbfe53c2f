"""``AsyncPoolCursor``: ``await cursor.execute(...)`` on mysqlclient, no thread.

A statement is sent with ``send_query``; the event loop waits for the socket
(see _aio); the answer is then read by the C client, on the loop only when all
of it has arrived (see _wire) and is at most ``LOOP_READ_MAX`` bytes: reading
it is then bounded work that cannot wait on the server. Anything else (a large
or still streaming result, TLS) is read in a worker thread, as are further
result sets and very large statements.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio.to_thread
import MySQLdb
import MySQLdb.cursors

from . import _aio
from ._connection import PooledConnection, closed_while_waiting
from ._cursors import RELEASED_MESSAGE
from ._errors import CursorReleasedError, is_connection_broken
from ._socket import peek
from ._wire import answer_complete

if TYPE_CHECKING:
    from ._lease import Lease

RowT = TypeVar("RowT")

#: Statements larger than this are sent from a worker thread: sending them can
#: wait for the server to read (a socket's send buffer starts at about 16 KB).
SEND_INLINE_MAX = 8 * 1024
#: The largest answer read on the event loop (parsing it takes well under 1 ms);
#: larger ones are read in a worker thread.
LOOP_READ_MAX = 64 * 1024
#: executemany() packs INSERT ... VALUES rows into statements up to this size
#: (as MySQLdb does: max_allowed_packet is at least 1 MB).
MAX_STATEMENT = 64 * 1024
#: Statements whose arguments hold more text or bytes than SEND_INLINE_MAX are
#: built in a worker thread (escaping 15 MB held the loop ~70 ms; random
#: bytes, ~200 ms), and values longer than this escaped a piece at a time: the
#: C escape keeps the GIL, which the loop gets back between pieces.
ESCAPE_PIECE = 64 * 1024
#: executemany() builds the statements of more rows than this in a worker
#: thread too (a few microseconds of escaping each).
LOOP_ROWS_MAX = 100

_INSERT_VALUES = MySQLdb.cursors.RE_INSERT_VALUES
_INSERT_VALUES_BYTES = re.compile(
    _INSERT_VALUES.pattern.encode("ascii"), re.IGNORECASE | re.DOTALL
)

_TEXT = (str, bytes, bytearray)
# Where a value escaped in pieces may be cut (see _piece_starts).
_ANY_BYTE = re.compile(rb".", re.DOTALL)
_NOT_UTF8_CONTINUATION = re.compile(rb"[^\x80-\xbf]")
# Stands for a value escaped in pieces while the statement is formatted: a NUL
# byte never appears in an escaped literal.
_PIECES = re.compile(rb"\0(\d+)\0")


def _large(args: Any) -> bool:
    """True if *args* are better escaped in a worker thread: more than
    SEND_INLINE_MAX bytes (or characters) of text and bytes, unescaped."""
    values: Iterable[Any]
    if type(args) is tuple or type(args) is list:
        values = args
    elif isinstance(args, Mapping):
        values = args.values()
    else:  # None; anything else is only iterated once, by the formatting
        return False
    size = 0
    for value in values:
        if isinstance(value, _TEXT):
            size += len(value)
    return size > SEND_INLINE_MAX


def _mogrify_in_pieces(conn: PooledConnection, query: str | bytes, args: Any) -> bytes:
    """:meth:`AsyncPoolCursor._mogrify` for large arguments, in a worker thread:
    values over ESCAPE_PIECE escaped a piece at a time (the loop gets the GIL
    in between), and the statement joined once (bytes.join lets go of the GIL
    above 1 MB)."""
    if isinstance(query, str):
        query = query.encode(conn.encoding)
    starts = _piece_starts(conn) if b"\0" not in query else None
    escaped: list[list[bytes]] = []

    def literal(value: Any) -> bytes:
        large = isinstance(value, _TEXT) and len(value) > ESCAPE_PIECE
        if large and starts is not None:
            escaped.append(_escape_in_pieces(conn, value, starts))
            return b"\0%d\0" % (len(escaped) - 1)
        return conn.literal(value)

    statement = AsyncPoolCursor._mogrify(conn, query, args, literal)
    if not escaped:
        return statement
    parts: list[bytes] = []
    for i, part in enumerate(_PIECES.split(statement)):
        if i % 2:
            parts += escaped[int(part)]
        else:
            parts.append(part)
    return b"".join(parts)


def _piece_starts(conn: PooledConnection) -> re.Pattern[bytes] | None:
    """Where in encoded text a piece may start so that escaping the pieces
    gives what escaping the whole gives; None: nowhere.

    The C client escapes the bytes of a complete multibyte character as one:
    a cut must not fall inside one. In a single-byte character set any byte
    may start a piece; in UTF-8 any but a continuation byte. In other
    multibyte sets (GBK, SJIS, ...) a character's second byte can be any
    ASCII byte, a backslash included: not cut.
    """
    info = conn.get_character_set_info()
    if info["mbmaxlen"] == 1:
        return _ANY_BYTE
    if info["name"].startswith("utf8"):
        return _NOT_UTF8_CONTINUATION
    return None


def _escape_in_pieces(
    conn: PooledConnection, value: str | bytes | bytearray, starts: re.Pattern[bytes]
) -> list[bytes]:
    """``conn.literal(value)`` as pieces to join (see :func:`_piece_starts`)."""
    empty = conn.literal(value[:0])  # the quotes, and a _binary prefix if any
    pieces = [empty[:-1]]
    escape = conn.escape_string
    if isinstance(value, str):
        # Cut between characters: each piece starts with a character's first byte.
        encoding = conn.encoding
        for i in range(0, len(value), ESCAPE_PIECE):
            pieces.append(escape(value[i : i + ESCAPE_PIECE].encode(encoding)))
            time.sleep(0)  # lets go of the GIL: the loop need not ask for it
    else:
        end = len(value)
        i = 0
        while i < end:
            start = starts.search(value, i + ESCAPE_PIECE)
            cut = end if start is None else start.start()
            pieces.append(escape(bytes(value[i:cut])))
            time.sleep(0)
            i = cut
    pieces.append(empty[-1:])
    return pieces


def _next(statements: Iterator[bytes]) -> bytes | None:
    return next(statements, None)


# An answer: (rows, its description or the result object to compute it from,
# or None; rowcount, lastrowid, warning_count). A tuple: this runs for every
# statement.
_Answer = tuple[Sequence[Any], Any, int, int | None, int]
_NO_ROWS: Sequence[Any] = ()


def _no_result(conn: PooledConnection) -> _Answer:
    """The answer to a statement without a result set (INSERT, UPDATE...)."""
    conn.pending = False
    return _NO_ROWS, None, conn.affected_rows(), conn.insert_id(), conn.warning_count()


def _read_answer(conn: PooledConnection, how: int) -> _Answer:
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


def _stream_answer(conn: PooledConnection, how: int) -> _Answer:
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
    description = _description(result)
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


def _description(result: Any) -> tuple[tuple[Any, ...], ...]:
    """*result*'s DB-API description, the same whichever way it was read.

    The display size (the third item) is None, as in aiomysql and asyncmy
    (PEP 249: "no meaningful value"): mysqlclient reports the longest value's
    length for a stored result only (its Cursor), 0 for a streamed one (its
    SSCursor), and a large answer is streamed.
    """
    return tuple((d[0], d[1], None, *d[3:]) for d in result.describe())


def _read_query_answer(conn: PooledConnection, how: int) -> _Answer:
    conn.read_query_result()
    return _read_answer(conn, how)


def _stream_query_answer(conn: PooledConnection, how: int) -> _Answer:
    conn.read_query_result()
    return _stream_answer(conn, how)


def _stream_next_answer(conn: PooledConnection, how: int) -> _Answer:
    conn.next_result()
    return _stream_answer(conn, how)


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
        "_lease",
        "_result",
        "_rows",
        "arraysize",
        "lastrowid",
        "rowcount",
        "rownumber",
        "warning_count",
    )

    def __init__(self, lease: Lease, dict_rows: bool = False, checked: bool = True):
        self.arraysize = 1
        self._lease: Lease | None = lease  # None once released
        self._how = 1 if dict_rows else 0
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
        self._result = description = _description(result)
        return description

    @property
    def connection(self) -> PooledConnection:
        """The connection, for ``commit()`` / ``rollback()`` mid-request. These
        block the loop for one round trip; and a reference kept beyond the
        request bypasses the pool: do not keep one."""
        return self._conn()

    def _conn(self) -> PooledConnection:
        lease = self._lease
        if lease is None:
            raise CursorReleasedError(RELEASED_MESSAGE)
        if self._closed:
            raise MySQLdb.ProgrammingError("cursor closed")
        conn = lease.conn
        if conn is None:  # the lease ended without one (no live replacement)
            raise CursorReleasedError(RELEASED_MESSAGE)
        return conn

    def release(self) -> None:
        """Called when the lease ends: refuse any later use. (Letting go of
        the lease also spares the garbage collector a cycle per request.)"""
        self._lease = None
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
        return self._mogrify(conn, query, args).decode(conn.encoding)

    @staticmethod
    def _mogrify(
        conn: PooledConnection,
        query: str | bytes,
        args: Any,
        literal: Callable[[Any], bytes] | None = None,
    ) -> bytes:
        # As MySQLdb's BaseCursor._mogrify, with public connection methods only.
        if isinstance(query, str):
            query = query.encode(conn.encoding)
        if args is None:
            return query
        if literal is None:
            literal = conn.literal
        if isinstance(args, Mapping):
            literal_args: Any = {
                (k.encode(conn.encoding) if isinstance(k, str) else k): literal(v)
                for k, v in args.items()
            }
        else:
            literal_args = tuple(map(literal, args))
        try:
            return bytes(query % literal_args)
        except TypeError as exc:
            raise MySQLdb.ProgrammingError(str(exc)) from None

    def execute(self, query: str | bytes, args: Any = None) -> Coroutine[Any, Any, int]:
        """Run one statement and read its rows; returns the affected row count.

        Used as a coroutine function (``await cursor.execute(...)``). Not one
        itself: when the connection is ready, it hands over the coroutine
        that runs the statement (one coroutine less per query)."""
        conn = self._ready_now()
        if conn is None or (args is not None and _large(args)):
            return self._execute_when_ready(query, args)
        conn.note_template(query)  # the template: never the parameters
        return self._run(conn, self._mogrify(conn, query, args))

    async def _execute_when_ready(self, query: str | bytes, args: Any) -> int:
        conn = await self._ready()
        conn.note_template(query)  # the template: never the parameters
        return await self._run(conn, await self._statement(conn, query, args))

    async def _statement(
        self, conn: PooledConnection, query: str | bytes, args: Any
    ) -> bytes:
        """The statement to send, built in a worker thread if *args* are large."""
        if _large(args):
            return await anyio.to_thread.run_sync(_mogrify_in_pieces, conn, query, args)
        return self._mogrify(conn, query, args)

    async def executemany(self, query: str | bytes, args: Iterable[Any]) -> int | None:
        """Run *query* once per set of arguments; ``INSERT ... VALUES`` rows are
        packed into as few statements as fit (as MySQLdb does)."""
        batch = list(args)
        if not batch:
            return None
        conn = self._ready_now() or await self._ready()
        conn.note_template(query)
        match = (
            _INSERT_VALUES_BYTES.match(query)
            if isinstance(query, bytes)
            else _INSERT_VALUES.match(query)
        )
        total = 0
        if match is None:
            for item in batch:
                # Results the last statement left (a procedure's, several
                # statements') are read first, as MySQLdb's execute() does.
                conn = self._ready_now() or await self._ready()
                await self._run(conn, await self._statement(conn, query, item))
                total += self.rowcount
        elif len(batch) <= LOOP_ROWS_MAX and not any(map(_large, batch)):
            for statement in self._packed_inserts(conn, match, batch, self._mogrify):
                await self._run(conn, statement)
                total += self.rowcount
        else:
            # Each statement built in a worker thread (see _mogrify_in_pieces).
            statements = self._packed_inserts(conn, match, batch, _mogrify_in_pieces)
            while built := await anyio.to_thread.run_sync(_next, statements):
                await self._run(conn, built)
                total += self.rowcount
        self.rowcount = total
        return total

    @staticmethod
    def _packed_inserts(
        conn: PooledConnection,
        match: re.Match[Any],
        batch: list[Any],
        mogrify: Callable[[PooledConnection, bytes, Any], bytes],
    ) -> Iterator[bytes]:
        def encoded(part: str | bytes) -> bytes:
            return part.encode(conn.encoding) if isinstance(part, str) else part

        prefix = encoded(match.group(1) % ())
        values = encoded(match.group(2).rstrip())
        postfix = encoded(match.group(3) or b"")
        statement = bytearray(prefix)
        for i, item in enumerate(batch):
            row = mogrify(conn, values, item)
            if i and len(statement) + len(row) + len(postfix) + 1 > MAX_STATEMENT:
                yield bytes(statement + postfix)
                statement = bytearray(prefix)
            elif i:
                statement += b","
            statement += row
        yield bytes(statement + postfix)

    async def callproc(self, procname: str, args: Sequence[Any] = ()) -> Sequence[Any]:
        """Call a stored procedure (as MySQLdb: IN values through ``@_name_n``
        variables). Use :meth:`nextset` to read all of its result sets."""
        conn = self._ready_now() or await self._ready()
        conn.session_changed = True  # any CALL counts (see LeasedCursorMixin)
        name = procname.encode(conn.encoding).replace(b"`", b"``")
        if args:
            assignments = b",".join(
                b"@`_%s_%d`=%s" % (name, i, conn.literal(arg))
                for i, arg in enumerate(args)
            )
            await self._run(conn, b"SET " + assignments)
        params = b",".join(b"@`_%s_%d`" % (name, i) for i in range(len(args)))
        await self._run(conn, b"CALL `%s`(%s)" % (name, params))
        return args

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
            answer = await anyio.to_thread.run_sync(
                _stream_next_answer, conn, self._how
            )
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
            assert self._lease is not None  # or _conn() would have raised
            checked = self._lease.checked_at_a_glance()
            if checked is None:
                return None
            self._checked = True
            conn = checked
        return None if conn.more_results() else conn

    async def _ready(self) -> PooledConnection:
        """The connection, checked before the first statement; results the
        last statement left unread are discarded first."""
        conn = self._conn()
        lease = self._lease
        assert lease is not None  # or _conn() would have raised
        if not self._checked:
            self._checked = True
            conn = await lease.acheck()
        if conn.more_results():
            try:
                await lease.adrain(conn)
            except BaseException as exc:
                # A later statement's error ended them: raised here, as by
                # MySQLdb's execute(), the connection in step.
                self._failed(conn, exc)
                raise
        return conn

    async def _run(self, conn: PooledConnection, statement: bytes) -> int:
        """Run *statement*; its affected row count (set as ``rowcount``)."""
        if self._lease is None:
            # Made in a request, run after it: the connection is another's now.
            raise CursorReleasedError(RELEASED_MESSAGE)
        if conn.pending:  # a cut-off statement: its answer would be read as ours
            raise _aio.in_progress()
        conn.start_statement()
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
                complete = 0 < size < LOOP_READ_MAX and answer_complete(
                    memoryview(buffer).cast("B")[:size]
                )
            else:
                await _aio.wait_readable(conn, conn.read_timeout)
                complete = False
            if complete:
                answer = _read_query_answer(conn, self._how)
            else:
                answer = await anyio.to_thread.run_sync(
                    _stream_query_answer, conn, self._how
                )
        except BaseException as exc:
            self._failed(conn, exc)
            too_large = conn.too_large(exc, len(statement))
            if too_large is not None:
                raise too_large from exc
            raise
        # (The readers above cleared conn.pending once they had the answer.)
        self._executed = statement
        self._set(answer)
        return self.rowcount

    def _failed(self, conn: PooledConnection, exc: BaseException) -> None:
        self._set((_NO_ROWS, None, -1, None, 0))  # no stale rows from before
        if isinstance(exc, MySQLdb.Error):
            if is_connection_broken(exc):
                conn.broken = True  # its session is gone: nothing to KILL
            else:
                conn.pending = False  # the server answered: still in step
        # Anything else leaves it pending (closed, KILLed) unless the answer
        # was read first (the readers then cleared it): a cancellation
        # mid-wait does, a converter's error does not.

    def _set(self, answer: _Answer) -> None:
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
