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
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Protocol

import anyio
import anyio.to_thread

from . import _aio
from ._connection import PooledConnection, close_quietly
from ._errors import PoolTimeout
from ._pinned import PinnedConnection, adopt, lost_savepoint, recover


class Killer(Protocol):
    def kill_sessions(self, sessions: list[tuple[int, str | None, Any]]) -> int:
        """KILL these (id, client host, host config) sessions if still there
        (blocking)."""


class PinnablePool(Protocol):
    """What pinning needs of a pool (:class:`Pool`)."""

    pinned: Pin | None

    @property
    def config(self) -> Mapping[str, Any]:
        """The connection settings (pools with the same share a pin)."""

    @property
    def target(self) -> str:
        """The server, as messages name it."""

    @property
    def housekeeper(self) -> Killer:
        """KILLs the sessions of connections closed mid-statement."""

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
        self._killer = pool.housekeeper
        self._killing: threading.Thread | None = None
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
            self.conn = adopt(conn, self.checkin)
        except BaseException:
            close_quietly(conn)
            raise
        return self.conn

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
                self._failed(conn)
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
                await _aio.query(conn, conn.savepoint())
            except BaseException:
                self._failed(conn)
                raise
        except BaseException:
            self._leave()
            raise
        conn.alive_at = time.monotonic()
        self._hold(got)
        return conn

    def _failed(self, conn: PinnedConnection) -> None:
        """A borrow's SAVEPOINT failed: no savepoint to pop; an answer left
        unread (cancelled) or a lost connection ends the test's transaction."""
        conn.levels.pop()
        if conn.pending or conn.broken or not conn.open:
            self._break(
                f"the test's connection to {self.target} was closed: a borrow "
                "was cancelled while it set its savepoint, which ends the "
                "test's transaction (rolled back); later borrows in this test fail"
            )

    def checkin(
        self, conn: PooledConnection, *, reusable: bool, failed: bool = False
    ) -> None:
        """A borrow ends: the next borrower's turn (or the holder's again)."""
        assert isinstance(conn, PinnedConnection)
        if not reusable and not recover(conn):
            self._break(
                str(lost_savepoint(deadlocked=True))
                if conn.deadlocked
                else f"the test's connection to {self.target} was "
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
        conn = self.conn
        if conn is None or not conn.open:
            return
        # Cut off mid-statement, the session runs on, holding the test's row
        # locks: KILLed (as the pool does), off the event loop.
        session = (conn.session_id, conn.server_host, conn.origin)
        running = conn.pending and not conn.broken
        close_quietly(conn)
        if running and self._killing is None:
            self._killing = threading.Thread(
                target=self._killer.kill_sessions,
                args=([session],),
                name="fastapi-mysqlpool-test-kill",
            )
            self._killing.start()

    def close(self) -> None:
        """Roll the test's transaction back and close the connection."""
        with self._lock:
            busy = self._depth
        conn = self.conn
        if conn is not None and not busy:  # (else closing rolls back)
            conn.end()
        self._break("the test using this connection has ended")
        self.conn = None
        if self._killing is not None:
            self._killing.join()


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
