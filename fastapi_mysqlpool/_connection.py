"""The pool's connection class."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import select
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import MySQLdb
from MySQLdb.connections import Connection
from MySQLdb.constants import CLIENT

from . import _session, _telemetry
from ._config import ConnectConfig
from ._errors import errno_of, server_answered
from ._session import REPORTED, SESSION_STATE_CHANGED, STATUS_AUTOCOMMIT, UNREPORTED
from ._socket import readable_check

# What the pool asks a new connection, in the same round trip as turning on
# the server's session tracking (see _session): how long the server keeps an
# idle session, how it sees this client (a KILL is only ever sent to a session
# that is still this connection's), and what a reset must restore.
_TRACK = b"SET session_track_state_change = ON; "
_INTROSPECT = (
    b"SELECT @@wait_timeout, (SELECT host FROM information_schema.processlist "
    b"WHERE id = CONNECTION_ID()), DATABASE(), @@character_set_client, "
    b"@@collation_connection, @@sql_mode, @@global.init_connect, "
    b"@@max_allowed_packet"
)
# COM_RESET_CONNECTION keeps the role a borrower SET: checked after a reset.
# (MariaDB >= 10.0.5 and MySQL 8 have roles; older servers have none.)
_ROLE = b"CURRENT_ROLE()"
_ER_UNKNOWN_SYSTEM_VARIABLE = 1193

# The methods overridden below, called without super(): some run for every
# statement. (Typed here: MySQLdb's stubs leave them unannotated.)
_query: Callable[[Any, str | bytes | bytearray], None] = Connection.query
_next_result: Callable[[Any], int] = Connection.next_result
_close: Callable[[Any], None] = Connection.close

#: Idle for longer than this, a connection gets a round trip before use (HikariCP:
#: 500 ms); a peer that vanished without closing the socket shows no other sign.
CHECK_IDLE_AFTER: Final = 0.5
#: How long a check of a connection (a round trip) may take before the
#: connection counts as dead: the C client's own ping has no limit.
CHECK_TIMEOUT: Final = 5.0

#: CR_SERVER_GONE_ERROR, CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED.
_LOST_ERRNOS = frozenset({2006, 2013, 2055})


# A read timeout is seen after read_timeout seconds (libmariadb reads once;
# libmysqlclient retries, taking up to three times as long); allow for clocks.
_TIMED_OUT = 0.99


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class SessionKiller(Protocol):
    """What a connection needs of its pool after a read timeout."""

    def kill_after_timeout(
        self, conn: PooledConnection, timeout: float
    ) -> MySQLdb.OperationalError | None:
        """KILL *conn*'s session, if the server can be reached and the session
        is still there, and wait until it is gone (blocking). The error to
        raise then (:class:`QueryTimeout`); None if nothing was killed."""

    async def akill_after_timeout(
        self, conn: PooledConnection, timeout: float
    ) -> MySQLdb.OperationalError | None:
        """:meth:`kill_after_timeout` without blocking the event loop."""


def close_quietly(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def close_all(conns: Iterable[Connection]) -> None:
    for conn in conns:
        close_quietly(conn)


def closed_while_waiting() -> MySQLdb.InterfaceError:
    """The error of a statement whose connection was closed under it."""
    return MySQLdb.InterfaceError(
        0,
        "the connection was closed while a statement waited for its answer: its "
        "request or task ended first (was the statement not awaited?)",
    )


#: An event loop's wait for a connection's socket: (loop, fd, waiter).
SelectorWait = tuple[asyncio.AbstractEventLoop, int, asyncio.Future[None]]


def _select_row(conn: Connection, sql: bytes) -> tuple[Any, ...]:
    _query(conn, sql)
    while not conn.field_count():  # the SET before the SELECT
        if _next_result(conn) != 0:
            raise MySQLdb.InterfaceError("no row")  # pragma: no cover
    ((row),) = conn.store_result().fetch_row()
    return row  # type: ignore[no-any-return]


def _run_all(conn: Connection, sql: str | bytes) -> tuple[Any, ...] | None:
    """Run *sql* (statements), read every answer; the last row read."""
    _query(conn, sql)
    row = None
    while True:
        if conn.field_count():
            rows = conn.store_result().fetch_row()
            row = rows[0] if rows else None
        if _next_result(conn) != 0:
            return row


def _restore_sql(
    conn: PooledConnection, database: str, charset: str, collation: str, sql_mode: str
) -> bytes:
    """What reset_session() runs after COM_RESET_CONNECTION (see there)."""

    def literal(value: str) -> bytes:
        # (Bytes in, bytes out: the stubs say str.)
        return cast(bytes, conn.string_literal(value.encode(conn.encoding)))

    name = database.encode(conn.encoding).replace(b"`", b"``")
    track = b", session_track_state_change = ON" if conn.tracked else b""
    # Ends with a statement that changes nothing (DO 0, or the SELECT of
    # the role), so that the last answer's status is clean: the next
    # borrower starts without a change noted.
    return (
        b"SET NAMES %s COLLATE %s, sql_mode = %s, autocommit = %d%s; "
        b"USE `%s`; DO 0"
        % (
            literal(charset),
            literal(collation),
            literal(sql_mode),
            conn.autocommit_mode,
            track,
            name,
        )
    )


class PooledConnection(Connection):
    """A ``MySQLdb`` connection with the pool's bookkeeping (times are
    ``time.monotonic()`` seconds)."""

    expires_at: float
    #: Last given back by a caller: what ``max_idle`` counts from.
    returned_at: float
    #: Last proven alive (used, or pinged by the pool): what the check before
    #: use, the keepalive and the server's ``wait_timeout`` count from.
    alive_at: float
    #: The session's ``wait_timeout``: idle longer than this, the server dropped it.
    wait_timeout: float
    #: Autocommit mode as opened; a different mode on return means a changed session.
    autocommit_mode: bool
    read_mode = False  # switched to autocommit by a read lease (_read_lease)
    #: The session may hold state a later borrower would inherit (see _session):
    #: reset (or closed) before reuse.
    session_changed = False
    #: Something a reset cannot restore changed (the client-side character
    #: set, the user): closed on return.
    client_changed = False
    #: The server reports session changes (see _session); else the templates
    #: are scanned for the statements that make them too.
    tracked = False
    #: The template flags (see _session) that count as a change here.
    counted_flags = UNREPORTED | REPORTED
    #: SQL that restores what connecting set up, after a reset; None: closed
    #: instead (see :meth:`reset_session`).
    restore: bytes | None = None
    _role: str | None = None
    #: A statement was sent and its answer not read (cancelled mid-query): the
    #: server may still be running it, and its answer would be read as the
    #: next statement's. Such a connection is closed, and its session KILLed.
    pending: bool
    #: A connection-level error happened: the session is gone already.
    broken: bool
    #: A statement ran since the last borrow, so a transaction may be open.
    used = False
    #: A cursor method whose template was scanned is sending statements:
    #: :meth:`query` leaves their text alone (the parameter values are in it).
    in_cursor_call = False
    #: Plain MySQL packets on the socket (not compressed), so _wire can tell
    #: whether an answer is complete (TLS it detects by itself).
    plain_wire: bool
    #: How the server sees this client (processlist HOST, "ip:port"): a KILL is
    #: only sent to a session that is still ours.
    server_host: str | None
    #: With several hosts, the one's config it was opened to (its KILLs go there).
    origin: ConnectConfig | None = None
    #: The session's ``max_allowed_packet``: a statement that size or larger
    #: makes the server close the connection (see :meth:`too_large`). Until
    #: the pool learns it, the client's own limit (1 GB).
    max_packet: int = 1 << 30
    #: cfg's read_timeout, which async waits honour too (None: no limit). (Class
    #: defaults: Connection.__init__ may run queries before ours sets them.)
    read_timeout: float | None = None
    #: Ends the session of a statement that timed out (set by the pool).
    killer: SessionKiller | None = None
    telemetry: _telemetry.Telemetry | None = None  # where statements report
    #: A test's pinned connection goes back here, not to the pool (_pinning).
    checkin_to: Callable[..., None] | None = None
    #: The server's id of this session: thread_id() fails once the client
    #: library has closed the connection, which it does after a timeout.
    session_id: int
    #: Whether the socket has something to read now (no syscall releasing the
    #: GIL, see _socket); only for a connection still open.
    readable: Callable[[], bool]
    #: The status flags of the last answer read (no I/O; see _session).
    _server_status: Callable[[], int] = staticmethod(_session.no_status)
    _mysql: ctypes.c_void_p | None = None
    #: The event loop's registration for this socket while a statement waits
    #: on it (see _aio.wait_selector), which closing removes first.
    selector_wait: SelectorWait | None = None

    if TYPE_CHECKING:  # the C methods relied on, typed (MySQLdb's stubs are not)

        def send_query(self, query: bytes, /) -> None: ...
        def read_query_result(self) -> None: ...
        def fileno(self) -> int: ...
        def store_result(self) -> Any: ...
        def use_result(self) -> Any: ...
        def field_count(self) -> int: ...
        def more_results(self) -> bool: ...
        def discard_result(self) -> None: ...
        def affected_rows(self) -> int: ...
        def insert_id(self) -> int: ...
        def warning_count(self) -> int: ...
        def literal(self, o: Any) -> bytes: ...
        def get_character_set_info(self) -> dict[str, Any]: ...
        def escape_string(self, s: bytes, /) -> bytes: ...
        def get_autocommit(self) -> bool: ...
        def thread_id(self) -> int: ...

        client_flag: int
        encoding: str
        _server_version: tuple[int, ...]

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
        self.client_changed = False
        self.pending = False
        self.broken = False
        self.used = False
        self.plain_wire = True
        self.server_host = None
        self.session_id = self.thread_id()
        self.autocommit_mode = bool(self.get_autocommit())
        self.readable = readable_check(self.fileno())
        self._mysql = _session.native_handle(self)
        # A reset replays cfg's init_command; options read from a file may
        # hold one it cannot know: then changed connections are closed.
        self._init_command: str | None = kwargs.get("init_command") or None
        self._resettable_cfg = not (
            kwargs.get("read_default_file") or kwargs.get("read_default_group")
        )

    # -- what connecting sets up -------------------------------------------------

    def setup_session(self) -> tuple[int, str | None]:
        """Turn on the server's session tracking and read what the pool needs,
        in one round trip; returns ``(wait_timeout, server host)``."""
        multi = bool(self.client_flag & CLIENT.MULTI_STATEMENTS)
        has_roles = self._server_version >= (8, 0)
        select = _INTROSPECT + (b", " + _ROLE if has_roles else b"")
        reader = None
        if multi and self._mysql is not None:
            reader = _session.status_reader(self._mysql)
        row = None
        if reader is not None:
            try:
                row = _select_row(self, _TRACK + select)
            except MySQLdb.Error as exc:  # a server without the variable
                if errno_of(exc) != _ER_UNKNOWN_SYSTEM_VARIABLE:
                    raise
                reader = None
        if row is None:
            row = _select_row(self, select)
        wait_timeout, server_host, database, charset, collation, sql_mode = row[:6]
        init_connect, self.max_packet = row[6], int(row[7])
        self._role = row[8] if has_roles else None
        # Both read the same status field: a mismatch means the pointer or
        # the library is not what _session expects.
        if reader is not None and bool(reader() & STATUS_AUTOCOMMIT) != bool(
            self.get_autocommit()
        ):
            reader = None  # pragma: no cover
        if reader is not None:
            self._server_status = reader
            self.tracked = True
            self.counted_flags = UNREPORTED
        # A reset cannot bring back "no database", and the server does not
        # run its init_connect again after one: then close instead.
        if multi and database is not None and not init_connect and self._resettable_cfg:
            self.restore = _restore_sql(self, database, charset, collation, sql_mode)
            if has_roles:
                self.restore += b"; SELECT " + _ROLE
        self.session_changed = False
        return int(wait_timeout), server_host

    def reset_session(self, configure: Callable[[Any], object] = id) -> bool:
        """Reset a changed session to what connecting set up (blocking: two round
        trips, three with an ``init_command``): COM_RESET_CONNECTION (rolls back,
        drops temporary tables, prepared statements and user variables, releases
        table and named locks, sets every session variable back to its default),
        then ``init_command``, *configure*, the character set and collation,
        ``sql_mode``, autocommit, tracking and the database, as after connecting;
        the role must be the one connecting got. False if not: close it."""
        mysql = self._mysql
        if self.restore is None or mysql is None or not self.open:
            return False
        try:
            if not _session.reset_connection(mysql):
                return False
            if self._init_command is not None:
                _run_all(self, self._init_command)
            configure(self)  # the pool's (id: none), as after connecting
            role = _run_all(self, self.restore)
            # Nothing the borrower ran counts any more.
            self.session_changed = False
            self.read_mode = False  # the restore set the mode as opened
            return bool(self.get_autocommit()) == self.autocommit_mode and (
                role is None or role == (self._role,)
            )
        except Exception:
            return False

    # -- noticing session changes --------------------------------------------------

    def note_status(self) -> None:
        """Record whether the last answer read says the session changed."""
        if self._server_status() & SESSION_STATE_CHANGED:
            self.session_changed = True

    def note_template(self, template: str | bytes) -> None:
        """Record what *template*, a statement before its parameters are bound,
        may change that the server does not report (see _session)."""
        if _session.template_flags(template) & self.counted_flags:
            self.session_changed = True

    def start_statement(self) -> None:
        """A statement is about to be sent: its answer will overwrite the last
        one's status (the final packet of a result's rows), so look first."""
        if self.used:
            self.note_status()
        else:
            self.used = True

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
        # Never read the status of a closed connection's MYSQL again.
        self._server_status = _session.no_status
        _close(self)

    def end_selector_wait(self, wait: SelectorWait) -> None:
        """Remove *wait*'s registration; its waiter, if still waiting, gets
        :func:`closed_while_waiting`. (On *wait*'s loop.)"""
        self.selector_wait = None
        loop, fd, waiter = wait
        loop.remove_reader(fd)
        if not waiter.done():
            waiter.set_exception(closed_while_waiting())

    def query(self, query: str | bytes | bytearray) -> None:
        # Every statement of a cursor ends here, and cfg's SET statements
        # (Connection.__init__, as str). Raw SQL from elsewhere is its own
        # template: it has no parameters.
        if self.used:
            self.note_status()
        else:
            self.used = True
        if not self.in_cursor_call:
            self.note_template(bytes(query) if isinstance(query, bytearray) else query)
        try:
            if self.read_timeout is None:
                _query(self, query)
            else:
                self._query_or_kill(query, self.read_timeout)
        except MySQLdb.OperationalError as exc:
            too_large = self.too_large(exc, len(query))
            if too_large is None:
                raise
            raise too_large from exc
        if self.field_count():
            self.note_status()  # a result's header: reading its rows overwrites it

    def _query_or_kill(self, query: str | bytes | bytearray, timeout: float) -> None:
        """query() under read_timeout. The C client gives up waiting with 2013
        (as for a lost connection) and closes the socket, but the server runs
        the statement on, row locks and all: its session is KILLed first."""
        started = time.monotonic()
        try:
            _query(self, query)
        except MySQLdb.OperationalError as exc:
            killer = self.killer
            if (
                killer is None
                or exc.args[0] != 2013
                # Sooner, the connection was lost: no timeout, nothing running.
                or time.monotonic() - started < timeout * _TIMED_OUT
            ):
                raise
            self.broken = True
            error = killer.kill_after_timeout(self, timeout)
            if error is None:
                raise
            raise error from exc

    def next_result(self) -> int:
        if not self.more_results():
            return _next_result(self)
        self.note_status()  # the current result's last packet
        found = _next_result(self)
        self.note_status()
        return found

    def commit(self) -> None:
        self.note_status()
        _telemetry.timed(self, "COMMIT", Connection.commit)

    def rollback(self) -> None:
        self.note_status()
        _telemetry.timed(self, "ROLLBACK", Connection.rollback)

    def select_db(self, db: str) -> None:
        self.session_changed = True
        super().select_db(db)  # type: ignore[no-untyped-call]

    def set_character_set(self, charset: Any, collation: Any = None) -> None:
        # Also changes how the client escapes and decodes: not resettable.
        self.client_changed = True
        super().set_character_set(charset, collation)

    def change_user(self, *args: Any, **kwargs: Any) -> Any:
        self.client_changed = True
        return super().change_user(*args, **kwargs)  # type: ignore[no-untyped-call]

    def too_large(
        self, exc: BaseException, size: int
    ) -> MySQLdb.OperationalError | None:
        """ER_NET_PACKET_TOO_LARGE (1153) in place of *exc*, if *exc* is this
        connection lost over a statement of *size* bytes at or above the
        session's max_allowed_packet; else None.

        The server closes the connection on such a statement, usually before
        the client has sent all of it: the client sees 2006 or 2013, a lost
        connection (code 1, "retry"), for a statement that can never succeed.
        Only on that error path: no cost per statement.
        """
        if errno_of(exc) in _LOST_ERRNOS and size + 1 > self.max_packet:
            return MySQLdb.OperationalError(
                1153,
                f"a statement of {size} bytes is over the server's "
                f"max_allowed_packet ({self.max_packet} bytes)",
            )
        return None

    def set_server_option(self, option: int) -> Any:
        self.client_changed = True
        return super().set_server_option(option)  # type: ignore[no-untyped-call]

    _peek_buffer: ctypes.Array[ctypes.c_char] | None = None

    def peek_buffer(self, size: int) -> ctypes.Array[ctypes.c_char]:
        """A buffer of its own to look at what the server sent (see _wire)."""
        buffer = self._peek_buffer
        if buffer is None or len(buffer) != size:
            buffer = self._peek_buffer = ctypes.create_string_buffer(size)
        return buffer

    # -- health: is this connection usable? --------------------------------------

    def stale(self, now: float) -> bool:
        """Past its lifetime, or idle so long that the server surely dropped it
        (``wait_timeout``): close it, unchecked."""
        return now >= self.expires_at or now - self.alive_at >= self.wait_timeout

    def alive_at_a_glance(self, now: float) -> bool | None:
        """The check before use, short of a round trip: False if the server
        closed the connection, True if it was in use too recently to need a
        round trip, None if it needs one (:meth:`ping_within`)."""
        if self.looks_dead():
            return False
        if now - self.alive_at <= CHECK_IDLE_AFTER:
            return True
        return None

    def check_alive(self, now: float) -> bool:
        """The check before use, with a round trip if a glance cannot tell
        (blocking: for threads)."""
        alive = self.alive_at_a_glance(now)
        return self.ping_within(CHECK_TIMEOUT) if alive is None else alive

    def in_step_after(self, exc: BaseException) -> bool:
        """True if *exc* is the server's answer (an error it sent: a user's
        query limit, a KILL QUERY): then no answer is pending, the connection
        is in step with the server. False if the answer may never have come."""
        if server_answered(exc):
            self.pending = False
            return True
        return False

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
        except MySQLdb.Error as exc:
            return self.in_step_after(exc)  # an error answered: alive
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
        if self.pending or self.broken:
            return False
        self.note_status()  # the last answer (a COMMIT's, usually)
        if self.session_changed or self.client_changed or now >= self.expires_at:
            return False
        try:
            # Reads a flag of the last server answer: no round trip.
            mode = self.autocommit_mode or self.read_mode
            return bool(self.get_autocommit()) == mode
        except Exception:
            return False

    def resettable(self, now: float) -> bool:
        """Not reusable as is, but :meth:`reset_session` can make it so."""
        return (
            self.restore is not None
            and not (self.pending or self.broken or self.client_changed)
            and now < self.expires_at
            and bool(self.open)
        )
