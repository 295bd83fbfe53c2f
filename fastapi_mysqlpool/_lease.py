"""Lending a connection: the lease behind every cursor the pool hands out."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, NoReturn, Protocol

import anyio
import anyio.lowlevel
import anyio.to_thread
import MySQLdb
from MySQLdb.cursors import BaseCursor

from . import _aio
from ._async_cursor import AsyncPoolCursor
from ._connection import PooledConnection
from ._errors import ImplicitCommitError, is_connection_broken, refuses_writes

#: Bound on the rollback of a request that failed or was cancelled; past it the
#: connection is closed, and the server rolls back by itself.
RESET_TIMEOUT = 5.0


class LendingPool(Protocol):
    """What a lease needs of its pool (:class:`Pool`)."""

    acquire_timeout: float

    def take_idle(self) -> PooledConnection | None:
        """An idle connection, unchecked, if one can be had at once."""

    def acquire(self, timeout: float) -> PooledConnection:
        """Borrow a checked connection (blocking)."""

    async def aacquire(self, timeout: float, *, check: bool = True) -> PooledConnection:
        """Borrow a connection without blocking the loop; *check*: checked."""

    def checkin(
        self, conn: PooledConnection, *, reusable: bool, failed: bool = False
    ) -> None:
        """Give *conn* back (*reusable*: may be lent again)."""

    def refused_writes(self, conn: PooledConnection, exc: BaseException) -> None:
        """*conn*'s server refused a statement: it takes no writes."""


class Lease:
    """One borrowed connection and the cursor lent on it, until given back.

    A connection borrowed on the event loop is lent *unchecked*: the check
    (a poll of the socket, a round trip after idling) runs just before the
    first statement, in the thread or task that runs it, and a dead connection
    is then swapped for a live one that nothing has used yet. A lease that ran
    no statement ends without COMMIT or ROLLBACK: there is no transaction.

    The check also sets the connection's mode: a read lease (see _read_lease)
    wants autocommit, and switches a connection opened without it; a write
    lease switches such a connection back (one round trip, only when the
    mode changes: read-only and write-only traffic never pay it).
    """

    __slots__ = ("conn", "cursor", "pool")

    #: A read lease: its connection in autocommit (see _read_lease).
    reads = False
    #: The class of the async cursors it lends.
    async_cursor_class: type[AsyncPoolCursor[Any]] = AsyncPoolCursor

    def __init__(self, pool: LendingPool, conn: PooledConnection) -> None:
        self.pool = pool
        self.conn: PooledConnection | None = conn
        conn.used = False
        self.cursor: Any = None

    @classmethod
    def of_cursor(
        cls,
        pool: LendingPool,
        conn: PooledConnection,
        *,
        cursor_class: type[BaseCursor],
        checked: bool,
    ) -> Lease:
        """A lease lending a MySQLdb cursor (blocking queries: for threads)."""
        lease = cls(pool, conn)
        lease.cursor = conn.cursor(cursor_class)
        if not checked or lease.wrong_mode(conn):
            lease.cursor.before_first_statement = lease.check
        return lease

    @classmethod
    def of_async_cursor(
        cls,
        pool: LendingPool,
        conn: PooledConnection,
        *,
        dict_rows: bool,
        checked: bool,
    ) -> Lease:
        """A lease lending an :class:`AsyncPoolCursor` (for the event loop)."""
        lease = cls(pool, conn)
        lease.cursor = cls.async_cursor_class(
            lease, dict_rows=dict_rows, checked=checked and not lease.wrong_mode(conn)
        )
        return lease

    # -- the first statement's check ------------------------------------------

    def wrong_mode(self, conn: PooledConnection) -> bool:
        """True if *conn*'s autocommit mode must be switched for this lease."""
        if self.reads:
            return not (conn.read_mode or conn.autocommit_mode)
        return conn.read_mode

    def check(self) -> None:
        """Check the connection (blocking: in the first statement's thread)."""
        conn = self.conn
        if conn is None or conn.used:
            return
        if not conn.check_alive(time.monotonic()):
            self._discard_dead(conn)
            conn = self.pool.acquire(self.pool.acquire_timeout)
            conn.used = False
            self.conn = self.cursor.connection = conn
        if self.wrong_mode(conn):
            # Raw: the pool's statement, not the borrower's (see _mode_sql);
            # through send_query, which a test's pinned connection translates.
            conn.send_query(_mode_sql(on=self.reads))
            conn.read_query_result()
            conn.read_mode = self.reads

    def checked_at_a_glance(self) -> PooledConnection | None:
        """The connection, if a glance proves it alive (no round trip, nothing
        to await: the usual case); else None, and :meth:`acheck` must run."""
        conn = self.conn
        if conn is not None and (
            conn.used
            # (A read lease overrides this: written out for the write path.)
            or (conn.alive_at_a_glance(time.monotonic()) and not conn.read_mode)
        ):
            return conn
        return None

    async def acheck(self) -> PooledConnection:
        """Check the connection without blocking the loop; the one to use."""
        conn = self.conn
        assert conn is not None
        if conn.used:
            return conn
        if not await _aio.check_alive(conn):  # a glance, a round trip
            self._discard_dead(conn)
            conn = await self.pool.aacquire(self.pool.acquire_timeout)
            conn.used = False
            self.conn = conn
        if self.wrong_mode(conn):
            await _aio.query(conn, _mode_sql(on=self.reads))
            conn.read_mode = self.reads
        return conn

    def _discard_dead(self, conn: PooledConnection) -> None:
        self.pool.checkin(conn, reusable=False, failed=True)
        self.conn = None  # if no replacement comes, nothing is left to give back

    async def adrain(self, conn: PooledConnection, leftover: Any = None) -> None:
        """Read and drop results left unread (in a thread: they may be slow)."""
        conn.pending = True
        await anyio.to_thread.run_sync(_drain, conn, leftover)
        conn.pending = False

    # -- the end -------------------------------------------------------------------

    def _release(self) -> tuple[PooledConnection, Any] | None:
        """Take the connection back, (connection, unread result); from now on
        the cursor refuses any use."""
        conn = self.conn
        self.conn = None
        leftover = self.cursor.release()  # bookkeeping only: no I/O, no error
        return None if conn is None else (conn, leftover)

    def finish(self, exc: BaseException | None, commit: bool = True) -> None:
        """End the lease from a thread: commit (or roll back), give back."""
        released = self._release()
        if released is None:
            return
        conn, leftover = released
        if exc is not None:
            if refuses_writes(exc):
                self.pool.refused_writes(conn, exc)
            # Rolling back may first mean reading results without limit: then
            # close the connection instead (the server rolls back by itself).
            reusable = (
                leftover is None
                and not conn.more_results()
                and not is_connection_broken(exc)
                and (not conn.used or _rollback_quietly(conn))
            )
            self.pool.checkin(conn, reusable=reusable)
            return
        try:
            if leftover is not None or conn.more_results():
                _drain(conn, leftover)
            if conn.used:
                conn.commit() if commit else conn.rollback()
        except BaseException:
            # After a failed COMMIT the transaction's fate is the server's:
            # never hand that session to someone else.
            self.pool.checkin(conn, reusable=False)
            raise
        self.pool.checkin(conn, reusable=True)

    async def afinish(self, exc: BaseException | None) -> None:
        """:meth:`finish` on the event loop: nothing in it blocks the loop."""
        released = self._release()
        if released is None:
            return
        conn, leftover = released
        if conn.pending:
            # A statement was cut off (cancelled) before its answer was read: a
            # ROLLBACK or COMMIT sent now would read that answer as its own.
            # Closed instead; its session is KILLed, which rolls back.
            self.pool.checkin(conn, reusable=False)
            if exc is None:  # the cancellation was swallowed: no 2xx for this
                raise _aio.in_progress()
            return
        if (
            exc is None
            and conn.used
            and not isinstance(self.cursor, AsyncPoolCursor)
            and _cancellation_pending()
        ):
            # Cancelled while its route ran in a thread (which anyio cannot
            # stop): the route's answer will never be sent, so nothing of it
            # is committed. (Async code is told at its next await; checking
            # for it here too would cost every request a few microseconds.)
            await self._areset(conn, leftover)
            await _take_cancellation()
        if exc is None:
            try:
                if leftover is not None or conn.more_results():
                    with anyio.CancelScope(shield=True):
                        await self.adrain(conn, leftover)
                if conn.used:
                    # Shielded: a cancellation now must not cut the COMMIT in
                    # two (sent, its answer unread), leaving it in doubt.
                    await _aio.query(conn, b"COMMIT", shield=True, timed=True)
            except BaseException as error:
                # After a failed COMMIT that session goes to no one else (as
                # in finish()). One the server answered with an error is in
                # step, the outcome told: closed (which rolls back whatever is
                # left) with nothing to KILL. A cancellation that came while
                # the answer was awaited, after it was read, leaves a
                # connection to reuse.
                conn.in_step_after(error)
                reusable = not conn.pending and not isinstance(error, MySQLdb.Error)
                self.pool.checkin(conn, reusable=reusable)
                raise
            self.pool.checkin(conn, reusable=True)
            return
        if refuses_writes(exc):
            self.pool.refused_writes(conn, exc)
        if is_connection_broken(exc):
            self.pool.checkin(conn, reusable=False)  # as in finish()
            return
        await self._areset(conn, leftover)

    async def _areset(self, conn: PooledConnection, leftover: Any) -> None:
        """Roll back and give back (closed if that cannot be done quickly)."""
        if leftover is not None or conn.more_results():
            self.pool.checkin(conn, reusable=False)  # as in finish()
            return
        reusable = True
        try:
            if conn.used:
                # Shielded so a cancelled request still rolls back, but
                # bounded: past RESET_TIMEOUT the connection is closed and its
                # session KILLed, which rolls back.
                with anyio.move_on_after(RESET_TIMEOUT, shield=True):
                    try:
                        await _aio.rollback(conn)
                    except MySQLdb.Error as exc:
                        # The transaction may be open still: closed, not
                        # reused. If the server answered, it is in step:
                        # nothing to KILL.
                        reusable = False
                        conn.in_step_after(exc)
                    except ImplicitCommitError:
                        # A test's transaction ended under it (_pinned): the
                        # test's connection goes, and the test hears why.
                        reusable = False
                        raise
        finally:
            # A cut-off rollback leaves conn.pending set: closed and KILLed.
            self.pool.checkin(conn, reusable=reusable)

    async def __aenter__(self) -> Lease:
        # Not entered with `async with`: defined so that a lease is an async
        # context manager for AsyncExitStack.push_async_exit (see __aexit__).
        return self

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Coroutine[Any, Any, None]:
        # So AsyncExitStack.push_async_exit(lease) takes its fast path: a bound
        # method would first fail a lookup of __aexit__ (an exception per call).
        # Not a coroutine itself: it hands over afinish's (one less to run).
        return self.afinish(exc)


def _mode_sql(*, on: bool) -> bytes:
    """Autocommit on for a read lease, or back off for a write lease. Sent
    outside the borrower's statements (``used`` stays false): the first of
    those does not note this answer's status, which says the session changed,
    and a later one's answer overwrites it."""
    return b"SET autocommit = 1" if on else b"SET autocommit = 0"


def _cancellation_pending() -> bool:
    """True if a cancel scope around this task (a timeout, Starlette's task
    groups) was cancelled, though the task is only told at its next await.
    (A plain ``task.cancel()`` interrupts the await on the route's thread, so
    the lease sees that one as its exception.)"""
    return anyio.current_effective_deadline() == -math.inf


async def _take_cancellation() -> NoReturn:
    """Await until the pending cancellation is raised here."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    # Not reached; if it were, returning would let a 2xx follow a rollback.
    raise anyio.get_cancelled_exc_class()()


def _rollback_quietly(conn: PooledConnection) -> bool:
    try:
        conn.rollback()
    except Exception:
        return False
    return True


def _drain(conn: PooledConnection, leftover: Any) -> None:
    """Read and drop what a cursor left: unread rows, further result sets."""
    if leftover is not None:
        leftover.discard()
    while conn.next_result() == 0:
        conn.discard_result()


class CursorContext:
    """``async with``: a cursor on a connection of its own, given back at the end
    (see :meth:`Pool.lease` and :meth:`Pool.cursor`)."""

    __slots__ = ("_lease", "_make", "_pool")

    def __init__(
        self, pool: LendingPool, make: Callable[[LendingPool, PooledConnection], Lease]
    ) -> None:
        self._pool = pool
        self._make = make

    async def _borrow(self) -> tuple[LendingPool, PooledConnection]:
        """Where the cursor's connection comes from, and the connection."""
        pool = self._pool
        conn = pool.take_idle() or await pool.aacquire(
            pool.acquire_timeout, check=False
        )
        return pool, conn

    async def __aenter__(self) -> Any:
        lender, conn = await self._borrow()
        try:
            self._lease = self._make(lender, conn)
        except BaseException:
            lender.checkin(conn, reusable=False)
            raise
        return self._lease.cursor

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._lease.afinish(exc)
