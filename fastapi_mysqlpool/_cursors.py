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
        telemetry = conn.telemetry
        timing = None if telemetry is None else telemetry.start(conn, query)
        conn.in_cursor_call = True
        try:
            result = super().execute(query, args)  # type: ignore[misc]
        except BaseException as exc:
            if timing is not None:
                timing.end(exc)
            raise
        finally:
            conn.in_cursor_call = False
        if timing is not None:
            timing.end(None)
        return result

    def executemany(self, query: Any, args: Any) -> Any:
        conn = self._pooled()
        conn.note_template(query)
        if not isinstance(args, (list, tuple)):
            args = list(args)  # counted for the span, then sent
        call = super().executemany  # type: ignore[misc]
        return _unscanned(conn, query, len(args), call, query, args)

    def callproc(self, procname: Any, args: Any = ()) -> Any:
        conn = self._pooled()
        # Any CALL counts (see _session): a procedure can assign user variables
        # with SELECT ... INTO, which the server does not report.
        conn.session_changed = True
        text = call_template(procname, len(args))
        call = super().callproc  # type: ignore[misc]
        return _unscanned(conn, text, 1, call, procname, args)

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


def _unscanned(
    conn: PooledConnection,
    text: Any,
    batch: int,
    method: Callable[..., Any],
    *args: Any,
) -> Any:
    """``method(*args)``, the statements it sends left out of the scan (their
    template was noted already), timed as one of *text* (see _telemetry)."""
    conn.in_cursor_call = True
    try:
        telemetry = conn.telemetry
        if telemetry is None:
            return method(*args)
        return telemetry.timed(conn, text, method, *args, batch=batch)
    finally:
        conn.in_cursor_call = False


def call_template(procname: str | bytes, count: int) -> str:
    """What telemetry shows of a procedure's call: ``CALL name(%s, %s)``."""
    if isinstance(procname, bytes):
        procname = procname.decode("utf-8", "replace")
    return f"CALL {procname}({', '.join(['%s'] * count)})"


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
