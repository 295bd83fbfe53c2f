"""The pool's connection class and the cursors it lends out."""

from __future__ import annotations

import asyncio
import ctypes
import re
import select
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import MySQLdb
from MySQLdb.connections import Connection
from MySQLdb.cursors import BaseCursor

from ._errors import CursorReleasedError
from ._socket import readable_check

# Statements that leave state in the session for the next borrower: variables and
# isolation level, the default database, locks (LOCK TABLES, FLUSH ... WITH READ
# LOCK), temporary tables, prepared statements, XA, HANDLER. A connection that
# ran one is closed on return instead of reused. Checked at the start of the
# text and after each ";" (several statements in one), executable comments
# (/*!40101 SET ...*/) included; user variables set by SELECT ... INTO @v or
# @v := ... anywhere. A best effort, not a parser: a false alarm costs one
# reconnection.
_STATEMENT = (
    rb"(?:/\*(?!!).*?\*/\s*)*(?:/\*!\d*\s*)?"
    rb"(?:SET|USE|LOCK|UNLOCK|FLUSH|PREPARE|XA|HANDLER|CREATE\s+TEMPORARY)\b"
)
_CHANGE_AT_START = re.compile(rb"\s*" + _STATEMENT, re.IGNORECASE | re.DOTALL)
_CHANGE_ANYWHERE = re.compile(
    rb";\s*" + _STATEMENT + rb"|\bINTO\s+@|:=", re.IGNORECASE | re.DOTALL
)

_SEMICOLON, _AT, _COLON = b";@:"


def changes_session(statement: bytes | bytearray) -> bool:
    """True if *statement* may leave session state behind (see above)."""
    if _CHANGE_AT_START.match(statement):
        return True
    # The scan of the whole text only when it may find something. (Looking
    # for an int is a memchr; for b";", ten times slower.)
    if _SEMICOLON in statement or _AT in statement or _COLON in statement:
        return _CHANGE_ANYWHERE.search(statement) is not None
    return False


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


RELEASED_MESSAGE = (
    "this cursor's connection went back to the pool when its request or task "
    "ended; use the cursor only inside it (for work after the response, use "
    "add_pool_task(), which gives the task a connection of its own)"
)


def closed_while_waiting() -> MySQLdb.InterfaceError:
    """The error of a statement whose connection was closed under it."""
    return MySQLdb.InterfaceError(
        0,
        "the connection was closed while a statement waited for its answer: its "
        "request or task ended first (was the statement not awaited?)",
    )


#: An event loop's wait for a connection's socket: (loop, fd, waiter).
SelectorWait = tuple[asyncio.AbstractEventLoop, int, asyncio.Future[None]]


class PooledConnection(Connection):
    """A ``MySQLdb`` connection with the pool's bookkeeping.

    Times are ``time.monotonic()`` seconds.
    """

    expires_at: float
    returned_at: float
    #: The session's ``wait_timeout``: idle longer than this, the server dropped it.
    wait_timeout: float
    #: Autocommit mode as opened; a different mode on return means a changed session.
    autocommit_mode: bool
    #: A statement or call changed session state (see ``_SESSION_CHANGE``).
    session_changed: bool
    #: A statement was sent and its answer not read (cancelled mid-query): the
    #: server may still be running it, and its answer would be read as the
    #: next statement's. Such a connection is closed, and its session KILLed.
    pending: bool
    #: A connection-level error happened: the session is gone already.
    broken: bool
    #: A statement ran since the last borrow, so a transaction may be open.
    used: bool
    #: Plain MySQL packets on the socket (not compressed), so _wire can tell
    #: whether an answer is complete (TLS it detects by itself).
    plain_wire: bool
    #: How the server sees this client (processlist HOST, "ip:port"): a KILL is
    #: only sent to a session that is still ours.
    server_host: str | None
    #: cfg's read_timeout, which async waits honour too (None: no limit).
    read_timeout: float | None
    #: Whether the socket has something to read now (no syscall releasing the
    #: GIL, see _socket); only for a connection still open.
    readable: Callable[[], bool]
    #: The event loop's registration for this socket while a statement waits
    #: on it (see _aio.wait_selector), which closing removes first.
    selector_wait: SelectorWait | None = None

    if TYPE_CHECKING:  # the C methods relied on, typed (MySQLdb's stubs are not)

        def send_query(self, query: bytes, /) -> None: ...
        def read_query_result(self) -> None: ...
        def fileno(self) -> int: ...
        def store_result(self) -> Any: ...
        def use_result(self) -> Any: ...
        def next_result(self) -> int: ...
        def field_count(self) -> int: ...
        def more_results(self) -> bool: ...
        def discard_result(self) -> None: ...
        def affected_rows(self) -> int: ...
        def insert_id(self) -> int: ...
        def warning_count(self) -> int: ...
        def literal(self, o: Any) -> bytes: ...
        def commit(self) -> None: ...
        def rollback(self) -> None: ...
        def get_character_set_info(self) -> dict[str, Any]: ...
        def escape_string(self, s: bytes, /) -> bytes: ...
        def get_autocommit(self) -> bool: ...
        def thread_id(self) -> int: ...

    # mysqlclient's connection type looks attributes up in C of its own (to
    # answer `closed`): CPython then cannot specialize `conn.x`, which a
    # request does a hundred times. The generic lookup again, and `closed` as
    # a property (tests/test_mysqlclient_internals.py).
    __getattribute__ = object.__getattribute__

    @property
    def closed(self) -> int:
        """1 once closed, else 0 (as mysqlclient's own ``closed``)."""
        return int(not self.open)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Connection.__init__ itself may run SET statements (sql_mode, charset).
        self.session_changed = False
        self.pending = False
        self.broken = False
        self.used = False
        self.plain_wire = True
        self.server_host = None
        self.read_timeout = None
        self.autocommit_mode = bool(self.get_autocommit())
        self.readable = readable_check(self.fileno())

    def close(self) -> None:
        """Close; a wait registered for the socket is removed first, and its
        waiter woken with an error. Left registered, it would outlive the
        socket: the next socket opened gets the same fd, and the loop's
        selector, still holding the stale entry, never watches the new one
        (an unawaited execute() hung the next request so)."""
        wait = self.selector_wait
        if wait is not None:
            loop = wait[0]
            if loop.is_closed():
                self.selector_wait = None  # nothing looks at its selector again
            elif _running_loop() is loop:
                self.end_selector_wait(wait)
            else:
                # Only the loop may touch its selector: it closes the connection.
                try:
                    loop.call_soon_threadsafe(self.close)
                except RuntimeError:  # closed meanwhile
                    self.selector_wait = None
                else:
                    return
        super().close()  # type: ignore[no-untyped-call]

    def end_selector_wait(self, wait: SelectorWait) -> None:
        """Remove *wait*'s registration; its waiter, if still waiting, gets
        :func:`closed_while_waiting`. (On *wait*'s loop.)"""
        self.selector_wait = None
        loop, fd, waiter = wait
        loop.remove_reader(fd)
        if not waiter.done():
            waiter.set_exception(closed_while_waiting())

    def query(self, query: str | bytes | bytearray) -> None:
        # Every cursor's execute() ends here, so this sees all SQL sent
        # (Connection.__init__ passes str: sql_mode, SET NAMES ... COLLATE).
        self.note_query(
            query.encode("utf-8", "replace") if isinstance(query, str) else query
        )
        super().query(query)

    def note_query(self, query: bytes | bytearray) -> None:
        """Record what :meth:`query` would for SQL sent with ``send_query``."""
        self.used = True
        if changes_session(query):
            self.session_changed = True

    def select_db(self, db: str) -> None:
        self.session_changed = True
        super().select_db(db)  # type: ignore[no-untyped-call]

    def set_character_set(self, charset: Any, collation: Any = None) -> None:
        self.session_changed = True
        super().set_character_set(charset, collation)

    def change_user(self, *args: Any, **kwargs: Any) -> Any:
        self.session_changed = True
        return super().change_user(*args, **kwargs)  # type: ignore[no-untyped-call]

    _peek_buffer: ctypes.Array[ctypes.c_char] | None = None

    def peek_buffer(self, size: int) -> ctypes.Array[ctypes.c_char]:
        """A buffer of its own to look at what the server sent (see _wire)."""
        buffer = self._peek_buffer
        if buffer is None or len(buffer) != size:
            buffer = self._peek_buffer = ctypes.create_string_buffer(size)
        return buffer

    def ping_within(self, timeout: float) -> bool:
        """A round trip that must answer within *timeout* seconds (blocking:
        for threads). The C client's ping has no limit of its own: a peer gone
        silent would hold the caller until TCP gives up."""
        try:
            self.pending = True
            self.send_query(b"DO 1")
            poller = select.poll()
            poller.register(self.fileno(), select.POLLIN)
            if not poller.poll(timeout * 1000):
                return False  # still pending: closed by the pool, not reused
            self.read_query_result()
        except Exception:
            return False
        self.pending = False
        return True

    def looks_dead(self) -> bool:
        """True if the server closed this idle connection (KILL, restart,
        wait_timeout): the socket then has an EOF or a farewell error to read,
        whereas a live idle connection has nothing. No round trip: one poll.
        """
        try:
            self.fileno()  # raises once closed: then its fd may be another's
        except Exception:
            return True
        return self.readable()

    def is_reusable(self, now: float) -> bool:
        """May go back to the idle set as is (no changed session, not expired)."""
        if self.pending or self.broken or self.session_changed:
            return False
        if now >= self.expires_at:
            return False
        try:
            # Reads a flag of the last server answer: no round trip.
            return bool(self.get_autocommit()) == self.autocommit_mode
        except Exception:
            return False


class LeasedCursorMixin:
    """Makes a cursor unusable once its connection goes back to the pool.

    Hooks into mysqlclient's ``_get_db`` (every statement) and
    ``_check_executed`` (every fetch), pinned by tests/test_mysqlclient_internals.py.
    """

    _released = False
    #: Run once, before the first statement, in the thread that runs it: the
    #: pool's check of a connection it lent out unchecked (see Lease).
    before_first_statement: Callable[[], None] | None = None
    # BaseCursor's attributes this mixin reads and resets.
    connection: Any
    _result: Any
    _rows: Any

    def _get_db(self) -> Connection:
        if self._released:
            raise CursorReleasedError(RELEASED_MESSAGE)
        hook = self.before_first_statement
        if hook is not None:
            self.before_first_statement = None
            hook()
        return super()._get_db()  # type: ignore[misc, no-any-return]

    def _check_executed(self) -> None:
        if self._released:
            raise CursorReleasedError(RELEASED_MESSAGE)
        super()._check_executed()  # type: ignore[misc]

    def release(self) -> Any:
        """Refuse any later use. Does no I/O: returns a result left unread (an
        unbuffered cursor's), which the lease discards before reuse."""
        leftover = self._result
        self.connection = None
        self.before_first_statement = None  # the lease's: no cycle left behind
        self._result = None
        self._rows = None
        self._released = True
        return leftover


_C = TypeVar("_C", bound=BaseCursor)
_leased_classes: dict[type[Any], type[Any]] = {}


def leased_cursor_class(cursor_class: type[_C]) -> type[_C]:
    """*cursor_class* with :class:`LeasedCursorMixin` (one subclass per class)."""
    leased = _leased_classes.get(cursor_class)
    if leased is None:
        if LeasedCursorMixin in cursor_class.__mro__:
            leased = cursor_class
        else:
            name = f"Leased{cursor_class.__name__}"
            bases = (LeasedCursorMixin, cursor_class)
            leased = type(name, bases, {"__module__": __name__})
        # Racing threads may both build one: the dict keeps the last, harmlessly.
        _leased_classes[cursor_class] = leased
    return leased
