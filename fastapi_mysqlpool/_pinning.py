"""Tests that roll back: every borrow of a pinned pool gets the test's one
connection, inside one transaction rolled back when the test ends.

A pool is pinned (``pool.pinned``, None in production) while a
:class:`Rollback` is active and the pool serves requests (from the end of
its app's startup to the start of its shutdown, so schema and seed code in a
lifespan commits as usual). Each borrow sets a savepoint; the lease's COMMIT
becomes ``RELEASE SAVEPOINT`` and its ROLLBACK ``ROLLBACK TO SAVEPOINT``, so
each request behaves as in production: a failing one undoes only its own
work, a 2xx's writes are seen by the next. One borrower at a time: others
wait (first come, first served), but a borrow nested in the holder's own
context (two cursors in one request, ``pool.fetch()`` inside a ``def`` route
that has a cursor) goes one savepoint deeper instead of waiting for itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Final, Protocol

import anyio
import anyio.to_thread
import MySQLdb
from MySQLdb.connections import Connection

from . import _aio
from ._connection import PooledConnection, close_quietly
from ._errors import ImplicitCommitError, PoolTimeout, errno_of

_raw_query: Callable[[Any, bytes], None] = Connection.query
_send_query: Callable[[Any, bytes], None] = Connection.send_query
_read_query_result: Callable[[Any], None] = Connection.read_query_result

_SAVEPOINT: Final = b"fastapi_mysqlpool_%d"
#: ER_SP_DOES_NOT_EXIST: our savepoint is gone, so is the test's transaction.
_ER_SP_DOES_NOT_EXIST: Final = 1305

# What commits implicitly (MySQL 8.4 and MariaDB 11 manuals, "Statements That
# Cause an Implicit Commit"), by the template's first words. Temporary tables
# do not (CREATE/DROP TEMPORARY TABLE); BEGIN and START TRANSACTION do, and
# are translated below instead: the current work is committed, as it would be.
_LEADING_COMMENTS = re.compile(
    r"(?:\s+|/\*(?!M?!)[\s\S]*?\*/|(?:--(?=\s)|#)[^\n]*(?:\n|\Z))*"
)
_IMPLICIT_COMMIT = re.compile(
    r"(?:ALTER|CREATE|DROP|RENAME|TRUNCATE|GRANT|REVOKE|LOCK\s+TABLES?|ANALYZE"
    r"|CACHE\s+INDEX|CHECK\s+TABLE|FLUSH|LOAD\s+INDEX|OPTIMIZE|REPAIR|RESET"
    r"|INSTALL|UNINSTALL|CHANGE\s+(?:MASTER|REPLICATION)|(?:START|STOP)\s+"
    r"(?:SLAVE|REPLICA|ALL\s+SLAVES)|SET\s+PASSWORD|XA"
    r"|SET\s+(?:SESSION\s+|LOCAL\s+|@@(?:SESSION\.|LOCAL\.)?)?AUTOCOMMIT)\b",
    re.IGNORECASE,
)
_TEMPORARY = re.compile(
    r"(?:CREATE|DROP)\s+(?:OR\s+REPLACE\s+)?TEMPORARY\b", re.IGNORECASE
)
# Statements that end the transaction, as the library or a route sends them.
_COMMITS = frozenset({b"COMMIT", b"COMMIT WORK", b"BEGIN", b"BEGIN WORK"})
_ROLLBACKS = frozenset({b"ROLLBACK", b"ROLLBACK WORK"})
_START = re.compile(rb"START\s+TRANSACTION\b", re.IGNORECASE)
# As the library sends them (a user's go through note_template: refused).
_AUTOCOMMIT_SWITCHES = frozenset({b"SET AUTOCOMMIT = 1", b"SET AUTOCOMMIT = 0"})


def implicit_commit(template: str | bytes) -> str | None:
    """The statement's first words if *template* commits implicitly, else None."""
    if len(template) > 4096:  # built without parameters: not remembered
        return _implicit_commit(template)
    return _remembered(template)


def _implicit_commit(template: str | bytes) -> str | None:
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    start = _LEADING_COMMENTS.match(text)
    text = text[start.end() if start else 0 :]
    match = _IMPLICIT_COMMIT.match(text)
    if match is None or _TEMPORARY.match(text):
        return None
    return " ".join(text[: match.end() + 40].split()[:4])


_remembered = functools.lru_cache(maxsize=1024)(_implicit_commit)


def _transaction_word(sql: bytes) -> bytes | None:
    """``COMMIT`` or ``ROLLBACK`` if *sql* ends (or restarts) the transaction,
    ``KEEP`` if it would switch autocommit (as a read lease does: on the
    test's connection, reads stay in the test's transaction)."""
    if len(sql) > 64:
        return None
    word = b" ".join(bytes(sql).rstrip(b"; \t\r\n").split()).upper()
    if word in _ROLLBACKS:
        return b"ROLLBACK"
    if word in _COMMITS or _START.match(word):
        return b"COMMIT"
    if word in _AUTOCOMMIT_SWITCHES:
        return b"KEEP"
    return None


class PinnedConnection(PooledConnection):
    """The test's connection: transaction ends become savepoint operations.

    ``levels`` holds one entry per borrow under way (nested borrows: more
    than one), whether that borrow's savepoint is set: a COMMIT releases it,
    and it is set again before the borrower's next statement.
    """

    levels: list[bool]
    _translated = False

    def translate(self, sql: bytes) -> bytes:
        """*sql*, or what stands in for it if it would end the transaction."""
        word = _transaction_word(sql)
        if word is None:
            self.restore_savepoint()
            return sql
        levels = self.levels
        if word == b"KEEP" or not levels or not levels[-1]:
            return b"DO 0"  # nothing since the last commit
        self._translated = True
        name = _SAVEPOINT % len(levels)
        if word == b"COMMIT":
            levels[-1] = False
            return b"RELEASE SAVEPOINT " + name
        return b"ROLLBACK TO SAVEPOINT " + name

    def restore_savepoint(self) -> None:
        """After a commit mid-borrow, set the borrower's savepoint again (one
        blocking round trip, as the commit was)."""
        levels = self.levels
        if levels and not levels[-1]:
            _raw_query(self, b"SAVEPOINT " + _SAVEPOINT % len(levels))
            levels[-1] = True

    def note_template(self, template: str | bytes) -> None:
        words = implicit_commit(template)
        if words is not None:
            raise ImplicitCommitError(
                f"{words} commits implicitly in MySQL: inside a test run with "
                "mysql_rollback (one transaction, rolled back when the test "
                "ends) it would commit the test's data for good. Create the "
                "schema before the test (a session-scoped fixture, or the "
                "app's startup, which runs outside the test's transaction), "
                "or run this test without mysql_rollback."
            )
        super().note_template(template)

    def query(self, query: str | bytes | bytearray) -> None:
        sql = query.encode(self.encoding) if isinstance(query, str) else bytes(query)
        sql = self.translate(sql)
        translated, self._translated = self._translated, False
        try:
            super().query(sql)
        except MySQLdb.OperationalError as exc:
            if translated and errno_of(exc) == _ER_SP_DOES_NOT_EXIST:
                raise _lost_savepoint() from exc
            raise

    def send_query(self, query: bytes, /) -> None:
        _send_query(self, self.translate(query))

    def read_query_result(self) -> None:
        translated, self._translated = self._translated, False
        try:
            _read_query_result(self)
        except MySQLdb.OperationalError as exc:
            if translated and errno_of(exc) == _ER_SP_DOES_NOT_EXIST:
                raise _lost_savepoint() from exc
            raise

    def commit(self) -> None:
        self.query(b"COMMIT")

    def rollback(self) -> None:
        self.query(b"ROLLBACK")


def _lost_savepoint() -> ImplicitCommitError:
    return ImplicitCommitError(
        "the test's transaction was ended by a statement that commits "
        "implicitly where its text could not be checked (in a stored "
        "procedure, a trigger, a prepared statement?): part of the test's "
        "data may have been committed for good"
    )


class PinnablePool(Protocol):
    """What pinning needs of a pool (:class:`Pool`)."""

    pinned: Pin | None

    @property
    def config(self) -> Mapping[str, Any]:
        """The connection settings (pools with the same share a pin)."""

    @property
    def target(self) -> str:
        """The server, as messages name it."""

    def connect(self, connect_timeout: int | None = None) -> PooledConnection:
        """Open one connection (blocking)."""


#: The pins this context holds: (pin, the generation of its holding). A stale
#: entry (the holding ended in another context) never matches again.
_held: ContextVar[tuple[tuple[Pin, int], ...]] = ContextVar(
    "fastapi_mysqlpool_pins", default=()
)


class Pin:
    """The test's connection to one server, lent to every borrower of the
    pools pinned to it: one borrower (and the borrows nested in its own
    context) at a time, the others queued first come, first served."""

    def __init__(self, pool: PinnablePool) -> None:
        self._connect = pool.connect
        self.config = pool.config
        self.target = pool.target
        self.conn: PinnedConnection | None = None
        # Critical section: whose turn it is. Never held around I/O.
        self._lock = threading.Lock()
        self._depth = 0
        self._generation = 0
        self._waiters: deque[concurrent.futures.Future[int]] = deque()
        self._error: str | None = None

    # -- taking turns ------------------------------------------------------

    def _enter(self) -> int | concurrent.futures.Future[int]:
        """0 (a borrow nested in the holder's context), the generation of a
        new holding, or a waiter for one."""
        with self._lock:
            if self._error is not None:
                raise RuntimeError(self._error)
            if not self._depth:
                self._depth = 1
                self._generation += 1
                return self._generation
            if (self, self._generation) in _held.get():
                self._depth += 1
                return 0
            waiter: concurrent.futures.Future[int] = concurrent.futures.Future()
            self._waiters.append(waiter)
            return waiter

    def _leave(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth:
                return
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.set_running_or_notify_cancel():
                    self._depth = 1
                    self._generation += 1
                    waiter.set_result(self._generation)
                    break
        held = _held.get()
        if any(pin is self for pin, _ in held):
            _held.set(tuple(entry for entry in held if entry[0] is not self))

    def _give_up(
        self,
        waiter: concurrent.futures.Future[int],
        timeout: float,
        *,
        cancelled: bool = False,
    ) -> int:
        """Leave the queue; a turn that came meanwhile is taken (timeout) or
        passed on (cancellation)."""
        with self._lock:
            got = None if waiter.cancel() else waiter
            if got is None:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        if got is None:
            if cancelled:
                return 0
            raise PoolTimeout(
                f"the test's connection to {self.target} was not given back "
                f"within {timeout:g} s: under mysql_rollback one borrower uses "
                "it at a time (does a request or task wait for another one?)"
            )
        generation = got.result(0)
        if cancelled:
            self._leave()
        return generation

    def _wait(self, waiter: concurrent.futures.Future[int], timeout: float) -> int:
        try:
            return waiter.result(timeout)
        except concurrent.futures.TimeoutError:
            return self._give_up(waiter, timeout)

    async def _await(
        self, waiter: concurrent.futures.Future[int], timeout: float
    ) -> int:
        try:
            with anyio.fail_after(timeout):
                return await asyncio.wrap_future(waiter)
        except TimeoutError:
            return self._give_up(waiter, timeout)
        except BaseException:
            self._give_up(waiter, timeout, cancelled=True)
            raise

    def _hold(self, generation: int) -> None:
        if generation:
            _held.set((*_held.get(), (self, generation)))

    # -- lending -------------------------------------------------------------

    def _open(self) -> PinnedConnection:
        conn = self._connect()
        try:
            conn.__class__ = PinnedConnection
            assert isinstance(conn, PinnedConnection)
            conn.levels = []
            conn.checkin_to = self.checkin
            _raw_query(conn, b"BEGIN")
        except BaseException:
            close_quietly(conn)
            raise
        self.conn = conn
        return conn

    def borrow(self, timeout: float) -> PinnedConnection:
        """The connection, its borrower's savepoint set (blocking)."""
        got = self._enter()
        if isinstance(got, concurrent.futures.Future):
            got = self._wait(got, timeout)
        try:
            conn = self.conn or self._open()
            conn.levels.append(False)
            try:
                conn.restore_savepoint()
            except BaseException:
                conn.levels.pop()
                raise
        except BaseException:
            self._leave()
            raise
        conn.alive_at = time.monotonic()
        self._hold(got)
        return conn

    async def aborrow(self, timeout: float) -> PinnedConnection:
        """:meth:`borrow` without blocking the event loop."""
        got = self._enter()
        if isinstance(got, concurrent.futures.Future):
            got = await self._await(got, timeout)
        try:
            conn = self.conn
            if conn is None:
                conn = await anyio.to_thread.run_sync(self._open)
            conn.levels.append(True)  # set by this statement:
            try:
                await _aio.query(conn, b"SAVEPOINT " + _SAVEPOINT % len(conn.levels))
            except BaseException:
                conn.levels.pop()
                raise
        except BaseException:
            self._leave()
            raise
        conn.alive_at = time.monotonic()
        self._hold(got)
        return conn

    def checkin(
        self, conn: PooledConnection, *, reusable: bool, failed: bool = False
    ) -> None:
        """A borrow ends: the next borrower's turn (or the holder's again)."""
        assert isinstance(conn, PinnedConnection)
        if not reusable and not _recover(conn):
            self._break(
                f"the test's connection to {self.target} was "
                + ("lost" if failed or conn.broken else "closed")
                + ": a statement on it failed or was cut off (a cancelled "
                "request, a timeout), which ends the test's transaction. "
                "The test's data is rolled back; later borrows in this test fail."
            )
        if conn.levels:
            conn.levels.pop()
        conn.alive_at = conn.returned_at = time.monotonic()
        self._leave()

    def _break(self, reason: str) -> None:
        with self._lock:
            if self._error is None:
                self._error = reason
            waiters = list(self._waiters)
            self._waiters.clear()
        for waiter in waiters:
            if waiter.set_running_or_notify_cancel():
                waiter.set_exception(RuntimeError(reason))
        if self.conn is not None:
            close_quietly(self.conn)

    def close(self) -> None:
        """Roll the test's transaction back and close the connection."""
        with self._lock:
            busy = self._depth
        conn = self.conn
        self._break("the test using this connection has ended")
        self.conn = None
        if conn is not None and not busy and conn.open and not conn.pending:
            with contextlib.suppress(MySQLdb.Error):
                _raw_query(conn, b"ROLLBACK")
        if conn is not None:
            close_quietly(conn)


def _recover(conn: PinnedConnection) -> bool:
    """Roll a failed borrow back to its savepoint; False if that cannot be
    done (the connection is lost, or an answer is still unread)."""
    if conn.pending or conn.broken or not conn.open:
        return False
    try:
        while conn.next_result() == 0:
            conn.discard_result()
        # A round trip either way: it proves the connection alive.
        if conn.levels and conn.levels[-1]:
            _raw_query(conn, b"ROLLBACK TO SAVEPOINT " + _SAVEPOINT % len(conn.levels))
        else:
            _raw_query(conn, b"DO 0")
    except Exception:
        return False
    return True


# -- which pools are pinned -----------------------------------------------------

_registry_lock = threading.Lock()
#: Pools serving requests (between their app's startup and shutdown), with
#: the pool each follows (a read pool follows its primary) or None.
_serving: weakref.WeakKeyDictionary[Any, PinnablePool | None] = (
    weakref.WeakKeyDictionary()
)
_active: Rollback | None = None


def serving(pool: PinnablePool, *, follows: PinnablePool | None = None) -> None:
    """*pool* serves requests now: pinned while a :class:`Rollback` is active.

    A pool that *follows* another (a read replica's, following its primary)
    is pinned to that pool's connection, so reads see the test's writes.
    """
    with _registry_lock:
        _serving[pool] = follows
        active = _active
    if active is not None:
        active.pin(pool, follows=follows)


def stopped(pool: PinnablePool) -> None:
    """*pool* stops serving (its app shuts down): no longer pinned."""
    with _registry_lock:
        _serving.pop(pool, None)
        active = _active
    if active is not None:
        active.unpin(pool)


class Rollback:
    """While active (``with Rollback():``), every pool serving requests, and
    every pool starting to, lends only its test connection, in one
    transaction rolled back at the end. The ``mysql_rollback`` fixture is one.
    """

    def __init__(self) -> None:
        #: Pinned pools by id (held, so an id is not reused meanwhile).
        self._pins: dict[int, tuple[PinnablePool, Pin]] = {}
        self._made: list[Pin] = []  # closed at the end
        self._lock = threading.Lock()

    def pin(self, pool: PinnablePool, *, follows: PinnablePool | None = None) -> None:
        """Pin *pool* (one made without ``mysql_pool_lifespan``, say) until
        the end; with *follows*, to that pool's connection (pinned too)."""
        with self._lock:
            if id(pool) in self._pins:
                return
            if follows is not None and id(follows) not in self._pins:
                self._pins[id(follows)] = (follows, self._pin_locked(follows))
                follows.pinned = self._pins[id(follows)][1]
            pin = self._pin_locked(pool if follows is None else follows)
            self._pins[id(pool)] = (pool, pin)
            pool.pinned = pin

    def _pin_locked(self, pool: PinnablePool) -> Pin:
        """*pool*'s pin: that of any pool of this test with the same
        connection settings (an app restarted in the test sees what the
        first start wrote), else a new one."""
        entry = self._pins.get(id(pool))
        if entry is not None:
            return entry[1]
        for pin in self._made:
            if pin.config == pool.config:
                return pin
        pin = Pin(pool)
        self._made.append(pin)
        return pin

    def unpin(self, pool: PinnablePool) -> None:
        """Lend *pool*'s own connections again (its pin stays until the end)."""
        with self._lock:
            entry = self._pins.pop(id(pool), None)
        if entry is not None:
            pool.pinned = None

    def __enter__(self) -> Rollback:
        global _active
        with _registry_lock:
            if _active is not None:
                raise RuntimeError("a Rollback is active already (one at a time)")
            _active = self
            serving_now = list(_serving.items())
        for pool, follows in serving_now:
            self.pin(pool, follows=follows)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _active
        with _registry_lock:
            if _active is self:
                _active = None
        with self._lock:
            pools = [pool for pool, _ in self._pins.values()]
            self._pins.clear()
            made, self._made = self._made, []
        for pool in pools:
            pool.pinned = None
        for pin in made:
            pin.close()
