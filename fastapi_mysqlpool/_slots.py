"""The pool's slots: where each of its ``max_size`` connections is, the few
named operations that move one, the queue of callers, and check-in.

A connection holds a slot from the moment it is about to open until it is
closed: idle, in use, being opened, being checked (keepalive, reset), or
closed mid-query with its session still to KILL. Callers that find no
connection and no free slot queue, first come first served: a connection
or a free slot (``OPEN_ONE``) is handed to the longest waiter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections import deque
from typing import Any, Final

import anyio

from ._connection import PooledConnection, close_all, close_quietly
from ._errors import PoolClosed, PoolTimeout
from ._housekeeper import Housekeeper, session_of
from ._leaks import watch
from ._limits import ServerLimits
from ._options import Settings
from ._stats import Counters, PoolStats
from ._telemetry import Telemetry

# Handed to a waiter instead of a connection: "a slot is free, open one".
OPEN_ONE: Final = object()


class Slots:
    """The pool's bookkeeping, under ``_lock`` (``*_locked`` methods: the
    caller holds it). :class:`Pool` is built on it."""

    max_size: int
    housekeeper: Housekeeper
    server_limits: ServerLimits
    settings: Settings

    @property
    def target(self) -> str:
        """The server, as messages name it."""
        raise NotImplementedError

    def stats(self) -> PoolStats:
        raise NotImplementedError

    def _init_slots(self, idle: deque[PooledConnection], settings: Settings) -> None:
        self.server_limits = ServerLimits(self.target, lambda: self.max_size)
        #: With ``leak_timeout`` only: then this pool's borrowing and returning
        #: methods record who holds what (see _leaks).
        self.leaks = watch(self, self.settings.leak_timeout, self.target)
        self._lock = threading.Lock()
        #: Wakes the housekeeper, and close() waiting for connections to return.
        self.cond = threading.Condition(self._lock)
        #: Idle connections, most recently returned on the right: taken LIFO so
        #: the busy ones stay warm and the rest can age out.
        self.idle = idle
        self._in_use = 0
        self._opening = 0
        self._checking = 0
        self._waiters: deque[concurrent.futures.Future[Any]] = deque()
        self.closing = False
        self._drained_waiters: list[concurrent.futures.Future[None]] = []
        self.counters = Counters()
        #: The pool's name in metrics (see _telemetry, prometheus).
        self.name = settings.name
        #: Spans, metrics and slow-statement warnings; None: nothing to record.
        self.telemetry = Telemetry.of(settings)
        if self.telemetry is not None:
            self.telemetry.watch(self.stats)

    def set_max_size(self, max_size: int) -> None:
        """Change the cap of a running pool: callers queued get the slots it
        adds; below a lowered cap, no connection opens until the pool is under
        it."""
        with self._lock:
            self.max_size = max_size
            while self._waiters and self.total_locked() < max_size:
                if not self._offer_slot_locked():
                    break
        self.server_limits.check()

    def _begin_close(self) -> bool:
        with self.cond:
            if self.closing:
                return False
            self.closing = True
            if self.telemetry is not None:
                self.telemetry.unwatch()
            waiters = list(self._waiters)
            self._waiters.clear()
            self.cond.notify_all()
        for waiter in waiters:
            if waiter.set_running_or_notify_cancel():
                waiter.set_exception(PoolClosed())
        return True

    def total_locked(self) -> int:
        """Server sessions of this pool: the limit max_size applies to."""
        return (
            len(self.idle)
            + self._in_use
            + self._opening
            + self._checking
            + len(self.housekeeper.to_kill)
        )

    def _busy_locked(self) -> int:
        """Connections close() must wait for: borrowed, being opened or checked."""
        return self._in_use + self._opening + self._checking

    def reserve_locked(self, slots: int) -> None:
        """Take *slots* slots for connections about to open."""
        self._opening += slots

    def unreserve_locked(self) -> None:
        """A reserved slot's connect failed (or was not tried): free it."""
        self._opening -= 1
        self.slot_freed_locked()

    def _unreserve(self) -> None:
        with self._lock:
            self.unreserve_locked()

    def opened_locked(self, conn: PooledConnection) -> bool:
        """A reserved slot's new connection, for the pool: to a waiter, else
        idle; False if closing (then the caller closes it and unreserves)."""
        if self.closing:
            return False
        self._opening -= 1
        self._put_idle_locked(conn)
        return True

    def opened_for_caller_locked(self) -> None:
        """A reserved slot's new connection, lent to the caller who reserved it."""
        self._opening -= 1
        self._in_use += 1

    def _offer_slot_locked(self) -> bool:
        """A free slot to the longest waiter, who opens a connection in it;
        False if no one waits."""
        self._opening += 1
        if self._handoff_locked(OPEN_ONE):
            return True
        self._opening -= 1
        return False

    def slot_freed_locked(self) -> None:
        """A connection went away: the longest waiter may open one instead,
        else the housekeeper refills."""
        if not self.closing:
            if self._offer_slot_locked():
                return
            self.cond.notify_all()
        self._wake_closer_locked()

    def begin_checks_locked(self, count: int) -> None:
        """*count* idle connections, taken out of the idle set, are being
        checked (keepalive)."""
        self._checking += count

    def checked_locked(self, conn: PooledConnection, *, unused: bool) -> bool:
        """A connection being checked (or reset) proved good: to a waiter or
        idle; False if closing (then :meth:`discard_checked` it)."""
        if self.closing:
            return False
        self._checking -= 1
        self._put_idle_locked(conn, unused=unused)
        return True

    def discard_checked(self, conn: PooledConnection, *, failed: bool) -> None:
        """Close a connection that was being checked; free its slot. *failed*:
        it proved dead (counted among the errors)."""
        # Closed before its slot is freed: the server never sees max_size + 1.
        close_quietly(conn)
        with self._lock:
            self._checking -= 1
            self.counters.closed_some(failed=failed)
            self.slot_freed_locked()

    def _put_idle_locked(self, conn: PooledConnection, *, unused: bool = False) -> None:
        """A new or checked connection nobody holds: to a waiter, else idle.

        An *unused* one (a keepalive's) goes to the cold end of the idle set,
        where it was: borrowing takes the warm end, so connections beyond
        ``size`` that callers stopped using can age out (``max_idle``).
        """
        self._in_use += 1
        if not self._handoff_locked(conn):
            self._in_use -= 1
            if unused:
                self.idle.appendleft(conn)
            else:
                self.idle.append(conn)
        self._wake_closer_locked()

    def _wake_closer_locked(self) -> None:
        """Fewer connections busy: wake a pending close() (only then: this runs
        on every return, and waking the housekeeper each time would be waste)."""
        if self.closing:
            self.cond.notify_all()
            if not self._busy_locked():
                for drained in self._drained_waiters:
                    if not drained.done():  # aclose() may have given up on it
                        drained.set_result(None)
                self._drained_waiters.clear()

    def _close_idle(self) -> None:
        with self._lock:
            idle = list(self.idle)
            self.idle.clear()
            self.counters.closed_some(len(idle))
        close_all(idle)

    def _handoff_locked(self, got: object) -> bool:
        """Give *got* (a connection or ``OPEN_ONE``) to the longest waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.set_running_or_notify_cancel():
                waiter.set_result(got)
                return True
        return False

    # -- waiting ---------------------------------------------------------------

    def _wait_sync(
        self, waiter: concurrent.futures.Future[Any], deadline: float, timeout: float
    ) -> object:
        started = time.monotonic()
        try:
            return waiter.result(max(0.0, deadline - started))
        except concurrent.futures.TimeoutError:
            return self._give_up(waiter, timeout)
        finally:
            self._add_wait_time(started)

    async def _wait_async(
        self, waiter: concurrent.futures.Future[Any], deadline: float, timeout: float
    ) -> object:
        started = time.monotonic()
        try:
            with anyio.fail_after(max(0.0, deadline - started)):
                return await asyncio.wrap_future(waiter)
        except PoolClosed:
            raise
        except TimeoutError:
            return self._give_up(waiter, timeout)
        except BaseException:
            self._give_up(waiter, timeout, cancelled=True)
            raise
        finally:
            self._add_wait_time(started)

    def _give_up(
        self,
        waiter: concurrent.futures.Future[Any],
        timeout: float,
        *,
        cancelled: bool = False,
    ) -> object:
        """Leave the queue; a connection or slot that arrived meanwhile is used
        (timeout) or given back (cancellation)."""
        with self._lock:
            if waiter.cancel():
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                got = None
                if not cancelled:
                    self.counters.timeouts += 1
            else:
                # Handed over under this lock, so the outcome is already set.
                got = waiter.result(0)
        if got is None:
            if cancelled:
                return None
            raise PoolTimeout(
                f"no connection to {self.target} became free within "
                f"{timeout:g} s (max_size={self.max_size}, all in use)"
            )
        if cancelled:
            if got is OPEN_ONE:
                self._unreserve()
            else:
                self.checkin(got, reusable=True)
        return got

    def _waited(self, started: float, conn: PooledConnection) -> PooledConnection:
        """*conn*, which its caller asked for at *started* (the wait measured
        only where telemetry records it)."""
        if self.telemetry is not None:
            self.telemetry.waited(started)
        return conn

    def _add_wait_time(self, started: float) -> None:
        with self._lock:
            self.counters.wait_time += time.monotonic() - started

    # -- returning -------------------------------------------------------------

    def checkin(
        self, conn: PooledConnection, *, reusable: bool, failed: bool = False
    ) -> None:
        """Give *conn* back: to a waiter, to the idle set, or closed.

        *failed* counts a connection found dead in the error statistics.
        """
        give_back = conn.checkin_to
        if give_back is not None:  # a test's pinned connection (see _pinning)
            give_back(conn, reusable=reusable, failed=failed)
            return
        now = time.monotonic()
        if reusable and conn.is_reusable(now):
            with self._lock:
                if not self.closing:  # checked under the lock: close() races
                    conn.returned_at = conn.alive_at = now
                    # (No close() to wake: it is not closing.)
                    if not self._waiters or not self._handoff_locked(conn):
                        self.idle.append(conn)
                        self._in_use -= 1
                    return
        elif reusable and conn.resettable(now):
            with self._lock:
                # Reset by the housekeeper, off the request's path. (max_idle
                # counts from now: the caller's last use.)
                conn.returned_at = now
                if not self.closing and self.housekeeper.queue_reset_locked(conn):
                    self._in_use -= 1
                    self._checking += 1
                    return
        # Closed mid-query: the server runs the query on, in a session still
        # holding its place among max_connections, unless it is KILLed. (A
        # broken connection's session is gone already.)
        session = session_of(conn) if conn.pending and not conn.broken else None
        # Closed before its slot is freed: the server never sees max_size + 1.
        close_quietly(conn)
        with self._lock:
            self._in_use -= 1
            self.counters.closed_some(failed=failed)
            if session is not None and not self.closing:
                # The slot stays taken until the housekeeper KILLs the session.
                self.housekeeper.kill_later_locked(session)
            else:
                self.slot_freed_locked()
