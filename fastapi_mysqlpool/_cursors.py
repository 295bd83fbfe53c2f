"""The MySQLdb cursors the pool lends: refused once their connection goes back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from MySQLdb.connections import Connection
from MySQLdb.cursors import BaseCursor

from ._connection import PooledConnection
from ._errors import CursorReleasedError

RELEASED_MESSAGE = (
    "this cursor's connection went back to the pool when its request or task "
    "ended; use the cursor only inside it. A StreamingResponse's body runs "
    "after the route returned: stream rows with "
    "fastapi_mysqlpool.stream_rows(request, sql) or `async for row in "
    "get_pool(request).stream(sql)`, which hold a connection of their own "
    "while the body is sent; for work after the response, use add_pool_task()"
)


class _ReleasedConnection:
    """A released cursor's ``connection``: any use of it raises
    :class:`CursorReleasedError` (None would raise AttributeError)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        raise CursorReleasedError(RELEASED_MESSAGE)

    def __repr__(self) -> str:
        return "<connection given back to the pool>"


RELEASED_CONNECTION: Any = _ReleasedConnection()


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

    def _pooled(self) -> PooledConnection:
        return self._get_db()  # type: ignore[return-value]

    def _check_executed(self) -> None:
        if self._released:
            raise CursorReleasedError(RELEASED_MESSAGE)
        super()._check_executed()  # type: ignore[misc]

    def close(self) -> None:
        if not self._released:  # else BaseCursor.close() would use .connection
            super().close()  # type: ignore[misc]

    # The session-change scan sees the statement's template, never the bound
    # parameters: these note it, and while they run, PooledConnection.query
    # leaves the statements they send (parameters included) alone.

    def execute(self, query: Any, args: Any = None) -> Any:
        conn = self._pooled()  # may swap in a checked one
        if conn.in_cursor_call:  # a statement of executemany(): noted there
            return super().execute(query, args)  # type: ignore[misc]
        conn.note_template(query)
        # As _unscanned(), written out: this runs for every statement.
        conn.in_cursor_call = True
        try:
            return super().execute(query, args)  # type: ignore[misc]
        finally:
            conn.in_cursor_call = False

    def executemany(self, query: Any, args: Any) -> Any:
        conn = self._pooled()
        conn.note_template(query)
        return _unscanned(conn, super().executemany, query, args)  # type: ignore[misc]

    def callproc(self, procname: Any, args: Any = ()) -> Any:
        conn = self._pooled()
        # Any CALL counts (see _session): a procedure can assign user variables
        # with SELECT ... INTO, which the server does not report.
        conn.session_changed = True
        return _unscanned(conn, super().callproc, procname, args)  # type: ignore[misc]

    def release(self) -> Any:
        """Refuse any later use. Does no I/O: returns a result left unread (an
        unbuffered cursor's), which the lease discards before reuse."""
        leftover = self._result
        self.connection = RELEASED_CONNECTION
        self.before_first_statement = None  # the lease's: no cycle left behind
        self._result = None
        self._rows = None
        self._released = True
        return leftover


def _unscanned(conn: PooledConnection, method: Callable[..., Any], *args: Any) -> Any:
    """``method(*args)``, the statements it sends left out of the scan (their
    template was noted already)."""
    conn.in_cursor_call = True
    try:
        return method(*args)
    finally:
        conn.in_cursor_call = False


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
