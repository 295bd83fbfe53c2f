"""Building the statements an :class:`AsyncPoolCursor` sends: arguments
escaped (large ones in a worker thread, a piece at a time), and
``INSERT ... VALUES`` rows packed for executemany()."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import MySQLdb
import MySQLdb.cursors

from ._connection import PooledConnection

#: Statements larger than this are sent from a worker thread: sending them can
#: wait for the server to read (a socket's send buffer starts at about 16 KB).
SEND_INLINE_MAX = 8 * 1024
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


def mogrify(
    conn: PooledConnection,
    query: str | bytes,
    args: Any,
    literal: Callable[[Any], bytes] | None = None,
) -> bytes:
    """*query* with *args* escaped (by *literal*, ``conn.literal`` by default).
    As MySQLdb's BaseCursor._mogrify, with public connection methods only."""
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


def large_arguments(args: Any) -> bool:
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


def mogrify_in_pieces(conn: PooledConnection, query: str | bytes, args: Any) -> bytes:
    """:func:`mogrify` for large arguments, in a worker thread:
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

    statement = mogrify(conn, query, args, literal)
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


def insert_values(query: str | bytes) -> re.Match[Any] | None:
    """*query*'s parts if it is an ``INSERT ... VALUES`` whose rows
    executemany() may pack (as MySQLdb does), else None."""
    if isinstance(query, bytes):
        return _INSERT_VALUES_BYTES.match(query)
    return _INSERT_VALUES.match(query)


def packed_inserts(
    conn: PooledConnection,
    match: re.Match[Any],
    batch: list[Any],
    build: Callable[[PooledConnection, bytes, Any], bytes],
) -> Iterator[bytes]:
    """The statements that insert *batch*'s rows, as few as fit in
    MAX_STATEMENT bytes; each row's values made by *build* (:func:`mogrify`
    or :func:`mogrify_in_pieces`)."""

    def encoded(part: str | bytes) -> bytes:
        return part.encode(conn.encoding) if isinstance(part, str) else part

    prefix = encoded(match.group(1) % ())
    values = encoded(match.group(2).rstrip())
    postfix = encoded(match.group(3) or b"")
    statement = bytearray(prefix)
    for i, item in enumerate(batch):
        row = build(conn, values, item)
        if i and len(statement) + len(row) + len(postfix) + 1 > MAX_STATEMENT:
            yield bytes(statement + postfix)
            statement = bytearray(prefix)
        elif i:
            statement += b","
        statement += row
    yield bytes(statement + postfix)


def next_statement(statements: Iterator[bytes]) -> bytes | None:
    """The next of *statements* (built in a worker thread), None after the last."""
    return next(statements, None)
