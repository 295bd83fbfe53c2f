"""The pool's maintenance thread: refill, keepalive, retirement, resets of
changed sessions, KILLs of abandoned sessions (and of statements past their
``read_timeout``).

What to do and when is decided by pure functions (:func:`sort_idle`,
:func:`next_deadline`), tested without a server; :class:`Housekeeper` does
it, talking to its pool through :class:`Maintained`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple, Protocol

import anyio
import anyio.to_thread
import MySQLdb

from ._backoff import Backoff
from ._config import ConnectConfig
from ._connection import CHECK_TIMEOUT, PooledConnection, close_all, close_quietly
from ._errors import QueryTimeout
from ._leaks import LeakDetector
from ._options import Settings
from ._stats import Counters

logger = logging.getLogger("fastapi_mysqlpool")

#: Idle connections are pinged this often, so no firewall or server drops them.
KEEPALIVE_INTERVAL = 120.0
#: How long a KILL waits for the session to end (a rollback can take a while)
#: before its slot is given up anyway.
KILL_WAIT = 5.0
# The housekeeper looks at idle connections at least this often, so a server
# restart is noticed (and the pool refilled) without waiting for traffic.
MAX_SLEEP = 1.0
# After a failed refill the housekeeper waits at least this long (doubling up
# to _REFILL_RETRY_MAX): a server answering "too many connections" sets no
# backoff for requests, which should keep trying, but must not be hammered.
_REFILL_RETRY_FIRST = 0.1
_REFILL_RETRY_MAX = 2.0
#: Returned connections with a changed session waiting for a reset; beyond
#: this many, the next ones are closed instead.
RESETS_QUEUED_MAX = 4

#: A server session: (id, client address as the server sees it, the config of
#: the host it is on when there are several: None for the pool's own choice).
Session = tuple[int, "str | None", "ConnectConfig | None"]


# -- scheduling: pure ---------------------------------------------------------------


class IdleSorted(NamedTuple):
    """What to do with each idle connection (see :func:`sort_idle`)."""

    keep: list[PooledConnection]
    retire: list[PooledConnection]
    check: list[PooledConnection]
    #: Of *retire*, those the server had closed (counted as errors).
    dead: int


def keepalive_after(conn: PooledConnection) -> float:
    """Seconds of silence after which *conn* is pinged."""
    return min(KEEPALIVE_INTERVAL, conn.wait_timeout / 2)


def sort_idle(
    idle: Iterable[PooledConnection], now: float, *, surplus: int, max_idle: float
) -> IdleSorted:
    """Sort idle connections (longest unused first): those to retire (dead,
    stale, or unused for *max_idle* while the pool has *surplus* connections
    beyond its size), those to ping, those to keep as they are."""
    keep: list[PooledConnection] = []
    retire: list[PooledConnection] = []
    check: list[PooledConnection] = []
    dead = 0
    for conn in idle:
        # Pings keep a session alive, but do not make it used: max_idle
        # counts from its last caller, the rest from its last answer.
        if conn.looks_dead():
            dead += 1
            retire.append(conn)
            surplus -= 1
        elif conn.stale(now) or (surplus > 0 and now - conn.returned_at >= max_idle):
            retire.append(conn)
            surplus -= 1
        elif now - conn.alive_at >= keepalive_after(conn):
            check.append(conn)
        else:
            keep.append(conn)
    return IdleSorted(keep, retire, check, dead)


def next_deadline(
    idle: Iterable[PooledConnection],
    now: float,
    *,
    refill_at: float | None,
    surplus: bool,
    max_idle: float,
) -> float:
    """When the housekeeper must look again: the first retirement or
    keepalive due, a refill due at *refill_at* (None: none needed), and
    never later than :data:`MAX_SLEEP` from *now*."""
    deadline = now + MAX_SLEEP
    if refill_at is not None:
        deadline = min(deadline, refill_at)
    # max_idle only retires connections beyond size: counting it for the
    # others would wake the housekeeper in a loop once they idle that long.
    for conn in idle:
        deadline = min(
            deadline,
            conn.expires_at,
            conn.alive_at + keepalive_after(conn),
            conn.returned_at + max_idle if surplus else math.inf,
        )
    # Never spin: nothing here needs finer timing than this.
    return max(deadline, now + 0.01)


# -- the thread ----------------------------------------------------------------------


class Maintained(Protocol):
    """What the housekeeper needs of its pool. ``*_locked`` methods and the
    attributes are used under ``cond``'s lock."""

    size: int
    max_idle: float
    closing: bool
    #: The pool's lock, notified when there is work (or close() began).
    cond: threading.Condition
    idle: deque[PooledConnection]
    counters: Counters
    #: While it waits, callers fail fast, and no refill is tried either.
    connect_backoff: Backoff
    #: Watches borrowed connections (``leak_timeout``), or None.
    leaks: LeakDetector | None
    settings: Settings

    @property
    def target(self) -> str: ...
    def connect(self, *, to: ConnectConfig | None = None) -> PooledConnection:
        """Open a connection (blocking), to the host of config *to* if given;
        raises ConnectionError if the server cannot be reached or refuses."""

    def total_locked(self) -> int: ...
    def reserve_locked(self, slots: int) -> None:
        """Count *slots* connections about to open against ``max_size``."""

    def opened_locked(self, conn: PooledConnection) -> bool:
        """A reserved slot's new connection: to a waiter, else idle; False
        if the pool is closing."""

    def unreserve_locked(self) -> None:
        """A reserved slot's connect failed: the slot is free again."""

    def slot_freed_locked(self) -> None:
        """A connection went away: a waiter may open one instead."""

    def begin_checks_locked(self, count: int) -> None:
        """*count* connections, taken out of the idle set, are being checked."""

    def checked_locked(self, conn: PooledConnection, *, unused: bool) -> bool:
        """A checked connection is good: to a waiter or idle (*unused*: at the
        cold end). False, if the pool is closing: then it must be discarded."""

    def discard_checked(self, conn: PooledConnection, *, failed: bool) -> None:
        """Close a checked (or unresettable) connection, free its slot."""


class Housekeeper:
    """Refills the pool to ``size``, keeps idle connections alive, retires old
    ones, resets changed sessions, KILLs abandoned ones. An unexpected error is
    logged, not fatal."""

    def __init__(self, pool: Maintained) -> None:
        self.pool = pool
        # The event loop's KILLs (see akill_after_timeout): one thread, as
        # they run one at a time anyway. Not the pool's connect threads: a
        # KILL may wait seconds for its session to end, and connects for
        # other requests must not wait behind it.
        self._kill_thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="fastapi-mysqlpool-kill"
        )
        self.thread: threading.Thread | None = None
        #: Returned connections whose session changed, to reset (counted as
        #: being checked meanwhile).
        self.resets: list[PooledConnection] = []
        #: Server sessions of connections closed mid-query, to KILL; each
        #: keeps its slot taken until then.
        self.to_kill: list[Session] = []
        self.refill_backoff = Backoff(_REFILL_RETRY_FIRST, _REFILL_RETRY_MAX)
        # One KILL connection at a time: the server sees at most max_size + 1.
        self._kill_lock = threading.Lock()

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(
                target=self._run, name="fastapi-mysqlpool-housekeeper", daemon=True
            )
            self.thread.start()

    def finish(self, timeout: float) -> None:
        """After close() began: wait up to *timeout* for the thread to end,
        and for the KILLs under way."""
        if self.thread is not None:
            self.thread.join(timeout)
        self._kill_thread.shutdown(wait=True)

    def do_leftovers(self) -> None:
        """After :meth:`finish`: the resets and KILLs a thread that did not
        stop in time left."""
        with self.pool.cond:
            resets, self.resets = self.resets, []
            to_kill, self.to_kill = self.to_kill, []
        for conn in resets:
            self.reset(conn)
        if to_kill:
            self.kill_sessions(to_kill)

    def queue_reset_locked(self, conn: PooledConnection) -> bool:
        """Take *conn* to reset off the request's path; False if the thread is
        not running or is behind (then closing, and opening anew in the
        caller's thread, does not wait for it)."""
        if self.thread is None or len(self.resets) >= RESETS_QUEUED_MAX:
            return False
        self.resets.append(conn)
        self.pool.cond.notify_all()
        return True

    def kill_later_locked(self, session: Session) -> None:
        """KILL *session* (its slot stays taken until then)."""
        self.to_kill.append(session)
        self.pool.cond.notify_all()

    def _run(self) -> None:
        pool = self.pool
        while True:
            try:
                if not self._once():
                    return
            except Exception:
                logger.exception("pool housekeeper for %s failed", pool.target)
                with pool.cond:  # and no busy loop on a lasting fault
                    if pool.closing:
                        return
                    pool.cond.wait(MAX_SLEEP)

    def _refill_at_locked(self) -> float:
        """When a refill may next try: not while callers fail fast, nor before
        the wait after a failed refill."""
        return max(self.pool.connect_backoff.until, self.refill_backoff.until)

    def _check_leaks(self) -> float | None:
        """Report connections held too long; when the next one falls due."""
        leaks = self.pool.leaks
        if leaks is None:
            return None
        new, due = leaks.check(time.monotonic())  # it logs: not under the lock
        if new:
            with self.pool.cond:
                self.pool.counters.leaks += new
        return due

    def _once(self) -> bool:
        pool = self.pool
        leak_due = self._check_leaks()
        with pool.cond:
            resets, self.resets = self.resets, []
            closing = pool.closing  # then none can be queued any more
        for conn in resets:  # first: a caller may be waiting for one
            self.reset(conn)
        if closing:
            return False
        with pool.cond:
            if pool.closing:
                return True  # once more: resets queued meanwhile are closed
            now = time.monotonic()
            total = pool.total_locked()
            sorted_ = sort_idle(
                pool.idle, now, surplus=total - pool.size, max_idle=pool.max_idle
            )
            pool.idle.clear()
            pool.idle.extend(sorted_.keep)
            pool.counters.closed_some(len(sorted_.retire))
            pool.counters.errors += sorted_.dead
            pool.begin_checks_locked(len(sorted_.check))
            to_kill = list(self.to_kill)
            refill = 0
            if now >= self._refill_at_locked():
                refill = max(0, pool.size - pool.total_locked())
                pool.reserve_locked(refill)
            if not (sorted_.retire or sorted_.check or refill or to_kill):
                if not self.resets:
                    total = pool.total_locked()
                    deadline = next_deadline(
                        pool.idle,
                        now,
                        refill_at=self._refill_at_locked()
                        if total < pool.size
                        else None,
                        surplus=total > pool.size,
                        max_idle=pool.max_idle,
                    )
                    if leak_due is not None:
                        deadline = max(min(deadline, leak_due), now + 0.01)
                    pool.cond.wait(deadline - now)
                return True
        close_all(sorted_.retire)
        if to_kill:
            try:
                self.kill_sessions(to_kill)
            finally:
                with pool.cond:
                    for session in to_kill:
                        self.to_kill.remove(session)
                        pool.slot_freed_locked()
        for conn in sorted_.check:
            self._keepalive(conn)
        self._refill(refill)
        return True

    def _refill(self, slots: int) -> None:
        """Open connections into *slots* slots reserved for them. On a failure
        the rest go to waiters (who then fail fast while the server is down),
        and the next refill waits a while."""
        pool = self.pool
        opened = 0
        try:
            while opened < slots:
                with pool.cond:
                    if pool.closing:  # close() waits for these slots: free them
                        break
                conn = pool.connect()
                with pool.cond:
                    if pool.opened_locked(conn):
                        opened += 1
                        continue
                close_quietly(conn)  # close() began meanwhile
                break
        except BaseException as exc:
            with pool.cond:
                for _ in range(slots - opened):
                    pool.unreserve_locked()
                self.refill_backoff.failed(time.monotonic())
            if not isinstance(exc, ConnectionError):
                raise
        else:
            with pool.cond:
                for _ in range(slots - opened):  # left when close() began
                    pool.unreserve_locked()
                self.refill_backoff.succeeded()

    def reset(self, conn: PooledConnection) -> None:
        """Reset a returned connection's session (see
        PooledConnection.reset_session), then lend it or put it back idle;
        closed if that fails or the pool is closing."""
        pool = self.pool
        closing = pool.closing
        done = not closing and conn.reset_session(pool.settings.configure or id)
        if done:
            conn.alive_at = time.monotonic()  # the reset was a round trip
        with pool.cond:
            if done and pool.checked_locked(conn, unused=False):
                pool.counters.resets += 1
                return
        pool.discard_checked(conn, failed=not (done or closing))

    def _keepalive(self, conn: PooledConnection) -> None:
        alive = conn.ping_within(CHECK_TIMEOUT)
        if alive:
            with self.pool.cond:
                conn.alive_at = time.monotonic()
                if self.pool.checked_locked(conn, unused=True):
                    return
        self.pool.discard_checked(conn, failed=not alive)

    def kill_sessions(self, sessions: list[Session]) -> int:
        """KILL the server sessions of connections closed mid-query, or whose
        statement timed out; wait (up to ``KILL_WAIT``) until they are gone.
        Returns how many were found and killed.

        Through a short-lived connection of its own (as psycopg sends cancel
        requests), to each session's host: the pool may be full of the very
        sessions to kill. Only a session still seen from the same client
        address is killed: after a restart or a failover, or behind a load
        balancer, the same id may be someone else's.
        """
        by_host: dict[int, list[Session]] = {}
        for session in sessions:
            by_host.setdefault(id(session[2]), []).append(session)
        with self._kill_lock:
            return sum(self._kill_on_host(group) for group in by_host.values())

    def _kill_on_host(self, sessions: list[Session]) -> int:
        """:meth:`kill_sessions` for *sessions*, all on the same host."""
        try:
            conn = self.pool.connect(to=sessions[0][2])
        except ConnectionError as exc:  # the sessions probably died with it
            logger.warning("could not KILL abandoned sessions: %s", exc)
            return 0
        conn.killer = None  # its own timeout must not come back here
        killed: list[int] = []
        try:
            for session, host, _ in sessions:
                if host is None:
                    continue
                with contextlib.suppress(MySQLdb.Error):  # ended meanwhile
                    conn.query(
                        b"SELECT host FROM information_schema.processlist "
                        b"WHERE id = %d" % session
                    )
                    if conn.store_result().fetch_row() == ((host,),):
                        conn.query(b"KILL %d" % session)
                        killed.append(session)
            if killed:
                with contextlib.suppress(MySQLdb.Error):
                    _wait_gone(conn, killed)
        finally:
            close_quietly(conn)
            with self.pool.cond:
                self.pool.counters.closed_some()
        return len(killed)

    # -- read timeouts (see SessionKiller) --------------------------------------

    def kill_after_timeout(
        self, conn: PooledConnection, timeout: float
    ) -> MySQLdb.OperationalError | None:
        """A statement on *conn* got no answer within *timeout*: KILL its
        session, so that the statement and its transaction (row locks) stop.
        The caller holds *conn*, hence its slot, until this returns.

        The error to raise if the session was killed: the server is
        reachable, so the statement was slow (:class:`QueryTimeout`). None
        if it was not (unreachable, or the session gone): the connection was
        lost, as far as anyone can tell.
        """
        if not self.kill_sessions([session_of(conn)]):
            return None
        return QueryTimeout(
            2013,
            f"no answer from {self.pool.target} within {timeout:g} s "
            "(read_timeout): the statement was killed",
        )

    async def akill_after_timeout(
        self, conn: PooledConnection, timeout: float
    ) -> MySQLdb.OperationalError | None:
        """:meth:`kill_after_timeout` in the KILL thread, for the event loop."""
        error = None
        # Shielded: a cancelled caller must still hold the slot until then.
        with anyio.CancelScope(shield=True):
            try:
                job = self._kill_thread.submit(self.kill_after_timeout, conn, timeout)
            except RuntimeError:  # the pool is closed: its KILL thread is gone
                error = await anyio.to_thread.run_sync(
                    self.kill_after_timeout, conn, timeout
                )
            else:
                error = await asyncio.wrap_future(job)
        return error


def session_of(conn: PooledConnection) -> Session:
    return conn.session_id, conn.server_host, conn.origin


def _wait_gone(conn: PooledConnection, sessions: list[int]) -> None:
    """Until the server no longer lists *sessions* (KILL only flags them: a
    killed session ends once it notices, after rolling back)."""
    listed = b"SELECT COUNT(*) FROM information_schema.processlist WHERE id IN (%s)"
    query = listed % b",".join(b"%d" % session for session in sessions)
    deadline = time.monotonic() + KILL_WAIT
    while True:
        conn.query(query)
        ((count,),) = conn.store_result().fetch_row()
        if not count or time.monotonic() > deadline:
            return
        time.sleep(0.005)  # a poll: the server offers nothing to wait on
