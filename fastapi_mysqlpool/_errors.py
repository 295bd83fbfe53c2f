"""Exceptions, and the one place that maps MySQL errors to what they mean.

The pool raises mysqlclient-pool's two errors (or subclasses of them), so code
written against ``ConnectionPool`` keeps working::

    ConnectionError
    ├── ConnectionPool.DrainedError       no connection: server down or unreachable
    │   ├── PoolClosed                    the pool is closed (app shutting down)
    │   └── NoReplicaAvailable            no healthy replica, and no fallback
    ├── ConnectionRefusedError
    │   └── ConnectionPool.OverflowError  the server refused: too many connections
    │       └── PoolTimeout               none free within acquire_timeout
    └── PoolStartupError                  startup could not open the first connections
    MySQLdb.InterfaceError
    └── CursorReleasedError               cursor used after its connection went back
    MySQLdb.ProgrammingError
    └── ReadOnlyError                     a read cursor refused a possible write
    MySQLdb.OperationalError
    └── QueryTimeout                      no answer within read_timeout: KILLed
    RuntimeError
    └── ImplicitCommitError               a test's transaction would be committed

Every database error a client can see is one of five :class:`ErrorKind` s.
"""

from __future__ import annotations

import enum

import MySQLdb
from mysqlclient_pool import ConnectionPool

DrainedError = ConnectionPool.DrainedError
BusyError = ConnectionPool.OverflowError  # not the builtin OverflowError


class PoolClosed(DrainedError):
    """The pool is closed: the app is shutting down or has shut down."""

    def __init__(self, message: str = "the connection pool is closed") -> None:
        ConnectionError.__init__(self, message)


class NoReplicaAvailable(DrainedError):
    """No replica can take a read (stopped, lagging, unreachable) and
    ``replica_fallback`` is off: answered 503, code 1."""

    def __init__(
        self, message: str = "no healthy replica for a read, and no fallback"
    ) -> None:
        ConnectionError.__init__(self, message)


class PoolTimeout(BusyError):
    """No connection became free within ``acquire_timeout``."""

    def __init__(self, message: str) -> None:
        ConnectionRefusedError.__init__(self, message)


class PoolStartupError(ConnectionError):
    """Startup could not open the pool's first connections within ``timeout``."""


class CursorReleasedError(MySQLdb.InterfaceError):
    """A cursor was used after its request or task gave its connection back."""


class ReadOnlyError(MySQLdb.ProgrammingError):
    """A read cursor refused a statement that may write, before sending it
    (answered 500, code 0): write through ``Cursor`` / ``AsyncCursor``."""


class QueryTimeout(MySQLdb.OperationalError):
    """No answer within ``read_timeout``, and the server was reachable: the
    statement was slow, and its session was KILLed (its transaction rolled
    back, unless it was a COMMIT: then the outcome is unknown).

    ``args[0]`` is 2013, the client library's error (lost connection): the
    connection is closed.
    """


class ImplicitCommitError(RuntimeError):
    """A statement that commits implicitly (DDL, ``LOCK TABLES``...) in a test
    that runs in one transaction rolled back at its end (``mysql_rollback``).

    Not a ``MySQLdb.Error``: no error handler turns it into a 500 answer, so
    the test itself fails with the reason.
    """


class ErrorKind(enum.IntEnum):
    """The stable ``code`` of an error response."""

    ERROR = 0
    UNAVAILABLE = 1
    BUSY = 2
    CONFLICT = 3
    TIMEOUT = 4

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @property
    def status_code(self) -> int:
        return _STATUS_CODES[self]


_MESSAGES = {
    ErrorKind.ERROR: "Something Went Wrong",
    ErrorKind.UNAVAILABLE: "Database Server Is Not Available",
    ErrorKind.BUSY: "Database Server Is Busy",
    ErrorKind.CONFLICT: "Database Conflict, Try Again",
    ErrorKind.TIMEOUT: "Database Query Timed Out",
}
_STATUS_CODES = {
    ErrorKind.ERROR: 500,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.BUSY: 503,
    ErrorKind.CONFLICT: 503,
    ErrorKind.TIMEOUT: 504,
}

#: ER_CON_COUNT_ERROR, ER_TOO_MANY_USER_CONNECTIONS, ER_USER_LIMIT_REACHED.
BUSY_ERRNOS = frozenset({1040, 1203, 1226})

#: The server is unreachable or the connection died (CR_* client errors 2001-2006,
#: 2013 lost, 2026 SSL, 2055 lost at handshake; shutdown in progress 1053, aborted
#: 1152/1184, net read/write interrupted 1159/1161, MariaDB's ER_CONNECTION_KILLED
#: 1927, ER_CLIENT_INTERACTION_TIMEOUT 4031 after wait_timeout).
UNAVAILABLE_ERRNOS = frozenset(
    {2001, 2002, 2003, 2004, 2005, 2006, 2013, 2026, 2055}
    | {1053, 1152, 1159, 1161, 1184, 1927, 4031}
)

#: ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK (also Galera's certification
#: failures and brute-force aborts): the server rolled the transaction (or,
#: for 1205 without innodb_rollback_on_timeout, the statement) back; the
#: whole transaction may be run again.
CONFLICT_ERRNOS = frozenset({1205, 1213})

#: ER_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR, ER_BAD_DB_ERROR,
#: ER_ACCESS_DENIED_NO_PASSWORD_ERROR: retrying the login cannot help.
LOGIN_ERRNOS = frozenset({1044, 1045, 1049, 1698})

# CR_* client errors: whatever the cause, the protocol state is unknown.
_CLIENT_ERRNOS = range(2000, 3000)
# Server errors after which the server closes the session (packet too large...).
_FATAL_SERVER_ERRNOS = frozenset({1053, 1152, 1153, 1159, 1161, 1184, 1927, 4031})


def errno_of(exc: BaseException) -> int | None:
    """The MySQL error number of a MySQLdb error, if it carries one."""
    if isinstance(exc, MySQLdb.Error) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def classify(exc: BaseException) -> ErrorKind | None:
    """What *exc* means to a client; ``None`` if it is no database error."""
    if isinstance(exc, BusyError):
        return ErrorKind.BUSY
    if isinstance(exc, (DrainedError, PoolStartupError)):
        return ErrorKind.UNAVAILABLE
    if not isinstance(exc, MySQLdb.Error):
        return None
    if isinstance(exc, QueryTimeout):
        return ErrorKind.TIMEOUT
    errno = errno_of(exc)
    if errno in BUSY_ERRNOS:
        return ErrorKind.BUSY
    if errno in CONFLICT_ERRNOS:
        return ErrorKind.CONFLICT
    if errno in UNAVAILABLE_ERRNOS or refuses_writes(exc):
        return ErrorKind.UNAVAILABLE
    return ErrorKind.ERROR


def is_conflict(exc: BaseException) -> bool:
    """True if *exc* is the server's answer that the transaction lost a
    conflict (deadlock, lock wait timeout, Galera certification): running the
    whole transaction again may succeed. A lost connection is never one: a
    COMMIT whose answer was lost may have committed."""
    return errno_of(exc) in CONFLICT_ERRNOS


def refuses_writes(exc: BaseException) -> bool:
    """True if the server refused a statement because it takes no writes (a
    demoted primary: read_only 1290, MariaDB's 1836) or is no usable Galera
    node (1047 "WSREP has not yet prepared node for application use")."""
    errno = errno_of(exc)
    if errno == _ER_READ_ONLY_MODE:
        return True
    if errno not in (_ER_OPTION_PREVENTS_STATEMENT, _ER_UNKNOWN_COM_ERROR):
        return False
    # 1290 also means --secure-file-priv and others; 1047 a plain unknown command.
    message = str(exc.args[1]) if len(exc.args) > 1 else ""
    return "read-only" in message or "read_only" in message or "WSREP" in message


_ER_OPTION_PREVENTS_STATEMENT = 1290
_ER_READ_ONLY_MODE = 1836
_ER_UNKNOWN_COM_ERROR = 1047


def is_connection_broken(exc: BaseException) -> bool:
    """True if the connection that raised *exc* must not be reused."""
    errno = errno_of(exc)
    if errno is None:
        # No number: raised by Python code (CursorReleasedError, "cursor
        # closed"...), which never touched the connection.
        return False
    if errno == 0:
        # mysqlclient's InterfaceError(0, "") for a connection in a bad state.
        return isinstance(exc, MySQLdb.InterfaceError)
    return errno in _CLIENT_ERRNOS or errno in _FATAL_SERVER_ERRNOS


def server_answered(exc: BaseException) -> bool:
    """True if *exc* is the server's answer to a statement (an error packet
    read in full): the connection is still in step, nothing is left running,
    and the session stays open. (Client errors, 2000-2999, are not answers.)"""
    return bool(errno_of(exc)) and not is_connection_broken(exc)
