"""The connection pool: mysqlclient-pool's ``ConnectionPool``, made fit for servers.

What it adds to the base class, and why:

- a hard cap (``max_size``) with a fair FIFO queue and ``acquire_timeout``: the
  base grows without limit until MySQL answers "Too many connections";
- checks before use, so dead connections (restart, ``KILL``, ``wait_timeout``)
  never reach a request when a live one can be had: a poll of the socket every
  time (a closed connection has an EOF to read), a round trip after more than
  ``CHECK_IDLE_AFTER`` idle (see PooledConnection's health methods); plus a
  jittered ``max_lifetime`` and a keepalive (see _housekeeper);
- a broken connection is discarded alone: the base drains and refills the whole
  pool synchronously while every other caller gets ``DrainedError``;
- connections come back clean (rolled back; a changed session is reset off
  the request path, or closed);
- fail-fast with backoff while the server is down (see _connector), and a
  background refill;
- a statement that outlasts ``read_timeout`` is KILLed (the server would run
  it on) before its error is raised, its slot kept until then;
- connects for the event loop run in threads of the pool's own, within
  ``acquire_timeout``: never waiting for a worker thread that sync routes hold;
- graceful close and :meth:`Pool.stats`;
- a span, a duration and (past ``slow_query``) a warning per statement, and
  the pool's OpenTelemetry instruments (see _telemetry).

Threads (background tasks, ``fetch()``) and the event loop (dependencies) share
one pool: bookkeeping happens under ``_lock`` and never around I/O, and waiters
are ``concurrent.futures.Future`` objects, which both worlds can wait on.

Pool builds on _slots (where each connection is, the queue, check-in); the
maintenance thread is _housekeeper's, connecting _connector's, the options
_options'.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Mapping
from typing import Any, Final

import anyio
import anyio.to_thread
from mysqlclient_pool import ConnectionPool
from typing_extensions import Unpack

from . import _aio
from ._backoff import Backoff
from ._config import ConnectConfig, make_config
from ._connection import (
    CHECK_TIMEOUT,
    PooledConnection,
    close_all,
    close_quietly,
)
from ._connector import BACKOFF_FIRST, BACKOFF_MAX, Connector, startup_verdict
from ._errors import (
    PoolClosed,
    PoolStartupError,
    PoolTimeout,
)
from ._housekeeper import Housekeeper
from ._lending import Lending
from ._options import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_TIMEOUT,
    PoolLimits,
    PoolOptions,
    Settings,
    default_max_size,
)
from ._pinning import Pin
from ._read_lease import Reads
from ._retry import Transactions
from ._slots import OPEN_ONE, Slots
from ._stats import PoolStats
from ._stream import stream

logger = logging.getLogger("fastapi_mysqlpool")

#: Threads that open connections for the event loop (and KILL the sessions of
#: its timed-out statements), so that never waits for one of anyio's worker
#: threads, which sync routes may all hold (as HikariCP's
#: addConnectionExecutor; mysqlclient has no non-blocking connect).
CONNECT_THREADS: Final = 4


class Pool(Slots, Lending, Reads, Transactions, ConnectionPool):
    """A bounded, self-healing pool of ``MySQLdb`` connections.

    ``config``, ``size``, ``timeout`` and ``fillup`` mean what they mean in
    mysqlclient-pool; ``fetch()`` lends a cursor as it does there. The
    keyword-only options are this library's additions; every option is
    described in :class:`PoolOptions`. With ``open=False``, :meth:`open`
    (or :meth:`aopen`) starts the pool.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | str,
        size: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        fillup: bool = True,
        *,
        open: bool = True,
        **limits: Unpack[PoolLimits],
    ) -> None:
        options: PoolOptions = {"size": size, "timeout": timeout, "fillup": fillup}
        self.settings = settings = Settings.of({**options, **limits})
        # The base would fill up here, blocking and unbounded: open() does it.
        # (A ConnectConfig is made already: by the lifespan.)
        if not isinstance(config, ConnectConfig):
            config = make_config(config)
        super().__init__(config, size=settings.size, timeout=0, fillup=False)
        self.config: ConnectConfig
        self.max_size = settings.max_size or default_max_size(settings.size)
        self.timeout = settings.timeout
        self.acquire_timeout = settings.acquire_timeout
        self.max_lifetime = settings.max_lifetime
        self.max_idle = settings.max_idle
        self.fillup = settings.fillup

        self._init_slots(self._pool, settings)  # type: ignore[arg-type]
        #: Set while a test runs in one rolled-back transaction (see
        #: _pinning): every borrow then gets the test's connection.
        self.pinned: Pin | None = None
        self._connect_threads = concurrent.futures.ThreadPoolExecutor(
            CONNECT_THREADS, thread_name_prefix="fastapi-mysqlpool-connect"
        )
        self.housekeeper = Housekeeper(self)
        self._connector = Connector(
            self.config,
            max_lifetime=self.max_lifetime,
            lock=self._lock,
            counters=self.counters,
            killer=self.housekeeper,
            telemetry=self.telemetry,
            target=settings.target,
            on_recovered=functools.partial(_hosts_changed, self),
            configure=settings.configure,
            on_first_connect=self.server_limits.read,
        )
        self.connect_backoff = self._connector.backoff
        if open:
            self.open()

    @property
    def target(self) -> str:
        """The server, as messages name it."""
        return self.config.target

    def __repr__(self) -> str:
        with self._lock:
            state = "closed" if self.closing else "open"
            counts = f"idle={len(self.idle)} in_use={self._in_use}"
        return (
            f"<{type(self).__name__} {self.config.target} {state} "
            f"size={self.size} max_size={self.max_size} {counts}>"
        )

    # -- lifecycle ---------------------------------------------------------

    def open(self, wait: bool | None = None, timeout: float | None = None) -> None:
        """Start the pool; with *wait* (default: ``fillup``), open ``size``
        connections first, else let the housekeeper open them in the background.

        Raises :class:`PoolStartupError` if that is not possible within
        *timeout* (default: the pool's ``timeout``). Login errors (wrong
        password, unknown database) fail at once: retrying cannot fix them.
        """
        if self.fillup if wait is None else wait:
            try:
                self._fill(self.timeout if timeout is None else timeout)
            except BaseException:
                self._close_idle()
                raise
        self.housekeeper.start()
        self._connector.start()

    async def aopen(
        self, wait: bool | None = None, timeout: float | None = None
    ) -> None:
        """:meth:`open` without blocking the event loop."""
        await anyio.to_thread.run_sync(self.open, wait, timeout)

    def close(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> None:
        """Refuse new requests, let borrowed connections come back for up to
        *timeout* seconds, then close every connection.

        Connections still borrowed after *timeout* are closed when returned.
        """
        if not self._begin_close():
            return
        deadline = time.monotonic() + timeout
        with self.cond:
            while (
                self._busy_locked() and (remaining := deadline - time.monotonic()) > 0
            ):
                self.cond.wait(remaining)
        self._finish_close()

    async def aclose(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> None:
        """:meth:`close` without blocking the event loop."""
        if not self._begin_close():
            return
        with anyio.move_on_after(timeout):
            while True:
                with self._lock:
                    if not self._busy_locked():
                        break
                    drained: concurrent.futures.Future[None] = (
                        concurrent.futures.Future()
                    )
                    self._drained_waiters.append(drained)
                await asyncio.wrap_future(drained)
        # Joins the housekeeper, which may be in the middle of a connect.
        await anyio.to_thread.run_sync(self._finish_close)

    def _finish_close(self) -> None:
        self._closed = True
        self._connector.stop(CHECK_TIMEOUT + self._connector.connect_timeout())
        # It may be in a connect (bounded by connect_timeout) or a check
        # (bounded by CHECK_TIMEOUT); it exits at its next step.
        self.housekeeper.finish(CHECK_TIMEOUT + self._connector.connect_timeout())
        # Connects under way finish (bounded by connect_timeout): a caller that
        # gave up left its connection to the idle set, closed here.
        self._connect_threads.shutdown(wait=True)
        self._close_idle()
        with self._lock:
            self._drained_waiters.clear()
        self.housekeeper.do_leftovers()
        with self._lock:
            left = self._busy_locked()
        if left:
            logger.warning(
                "pool %s closed with %d connection(s) still in use; "
                "they are closed when returned",
                self.config.target,
                left,
            )

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def refused_writes(self, conn: PooledConnection, exc: BaseException) -> None:
        """*conn*'s host refused a write (demoted): dropped, for a while."""
        self._connector.refused_writes(conn, exc)

    # -- opening connections -------------------------------------------------

    def connect(
        self, connect_timeout: int | None = None, *, to: ConnectConfig | None = None
    ) -> PooledConnection:
        """Open one connection (blocking). Raises DrainedError or BusyError.
        *to*: that one of several hosts (a connection's ``origin``)."""
        return self._connector.connect(connect_timeout, to=to)

    def _fill(self, timeout: float) -> None:
        """Open connections up to ``size``, retrying until *timeout* passes."""
        deadline = time.monotonic() + timeout
        backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX)
        while True:
            with self._lock:
                if self.closing:
                    raise PoolClosed()
                if self.total_locked() >= self.size:
                    return
                self.reserve_locked(1)
            remaining = deadline - time.monotonic()
            limit = self._connector.connect_timeout()
            try:
                conn = self.connect(max(1, min(limit, math.ceil(remaining))))
            except BaseException as exc:
                self._unreserve()
                if not isinstance(exc, ConnectionError):
                    raise  # not the server: a bad argument in cfg, say
                delay = backoff.next_delay()
                hopeless, reason = startup_verdict(exc)
                if hopeless or time.monotonic() + delay >= deadline:
                    raise PoolStartupError(
                        f"could not open {self.size} connection(s) to "
                        f"{self.config.target} within {timeout:g} s: {reason}"
                    ) from None
                time.sleep(delay)
                continue
            with self._lock:
                if self.opened_locked(conn):
                    continue
                self.unreserve_locked()
            close_quietly(conn)  # close() began meanwhile: the loop raises

    def _open_for_caller(self) -> PooledConnection:
        """Open a connection into a slot the caller reserved, for the caller."""
        with self._lock:
            # A slot handed over while the server is down: fail fast too.
            error = self._connector.unavailable_locked(time.monotonic())
            if error is not None:
                self.unreserve_locked()
                raise error
        try:
            conn = self.connect()
        except BaseException:
            self._unreserve()
            raise
        with self._lock:
            self.opened_for_caller_locked()
        return conn

    async def _aopen_for_caller(
        self, deadline: float, timeout: float
    ) -> PooledConnection:
        """:meth:`_open_for_caller` for the event loop: in a connect thread,
        awaited until *deadline* (``acquire_timeout``) at most. A caller that
        gives up (or is cancelled) leaves the connection to the pool."""
        handoff: concurrent.futures.Future[PooledConnection] = (
            concurrent.futures.Future()
        )
        try:
            self._connect_threads.submit(self._open_into, handoff)
        except RuntimeError:  # closed meanwhile: no connect threads left
            self._unreserve()
            raise PoolClosed() from None
        try:
            with anyio.fail_after(max(0.0, deadline - time.monotonic())):
                return await asyncio.wrap_future(handoff)
        except TimeoutError:
            conn = self._abandon(handoff, timed_out=True)
            if conn is None:
                raise PoolTimeout(
                    f"no connection to {self.config.target} could be opened "
                    f"within {timeout:g} s (acquire_timeout)"
                ) from None
            return conn  # it came just in time
        except BaseException:
            if not handoff.done() or handoff.cancelled() or handoff.exception() is None:
                # Cancelled: the connection goes back, or to the pool later.
                conn = self._abandon(handoff, timed_out=False)
                if conn is not None:
                    self.checkin(conn, reusable=True)
            raise  # else the connect's own error

    def _open_into(self, handoff: concurrent.futures.Future[PooledConnection]) -> None:
        """In a connect thread: open a connection into a slot reserved for the
        caller awaiting *handoff*; if it gave up meanwhile, for the pool."""
        with self._lock:
            closing = self.closing
        if handoff.cancelled() or closing:
            self._unreserve()  # to the next waiter, or the refill
            if handoff.set_running_or_notify_cancel():
                handoff.set_exception(PoolClosed())
            return
        try:
            conn = self._open_for_caller()
        except BaseException as exc:
            if handoff.set_running_or_notify_cancel():
                handoff.set_exception(exc)
            return
        with self._lock:
            # Under the lock: _abandon() decides under it too.
            if handoff.set_running_or_notify_cancel():
                handoff.set_result(conn)
                return
        # Abandoned: to the longest waiter, else idle (closed when closing).
        self.checkin(conn, reusable=True)

    def _abandon(
        self, handoff: concurrent.futures.Future[PooledConnection], *, timed_out: bool
    ) -> PooledConnection | None:
        """Give up on *handoff*: None, or the connection if it came meanwhile
        (raises the connect's error if that failed meanwhile)."""
        with self._lock:
            if handoff.cancel():
                if timed_out:
                    self.counters.timeouts += 1
                return None
        return handoff.result(0)

    # -- borrowing -------------------------------------------------------------

    def _checkout_locked(
        self, now: float, stale: list[PooledConnection], *, first: bool
    ) -> PooledConnection | concurrent.futures.Future[Any] | object:
        """Critical section: a connection, ``OPEN_ONE``, or a waiter.

        Idle connections past their lifetime, or surely dropped by the server
        (idle beyond its ``wait_timeout``), go to *stale* to be closed unlocked.
        """
        if self.closing:
            raise PoolClosed()
        if first:
            self.counters.requests += 1
        while self.idle:
            conn = self.idle.pop()
            if conn.stale(now):
                self.counters.closed_some()
                stale.append(conn)
                continue
            self._in_use += 1
            return conn
        if self.total_locked() < self.max_size:
            if self._waiters:
                # A slot is free while callers wait (it should have been handed
                # over already): the longest waiter gets it, this one queues.
                self._offer_slot_locked()
            if not self._waiters:
                error = self._connector.unavailable_locked(now)
                if error is not None:
                    raise error
                self.reserve_locked(1)
                return OPEN_ONE
        waiter: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._waiters.append(waiter)
        return waiter

    def _checkout(
        self, *, first: bool
    ) -> PooledConnection | concurrent.futures.Future[Any] | object:
        """:meth:`_checkout_locked`, the stale connections closed unlocked."""
        stale: list[PooledConnection] = []
        with self._lock:
            got = self._checkout_locked(time.monotonic(), stale, first=first)
        close_all(stale)
        return got

    def acquire(self, timeout: float) -> PooledConnection:
        """Borrow a checked connection, blocking the calling thread (never the
        loop's)."""
        if self.pinned is not None:
            return self.pinned.borrow(timeout)
        deadline = (started := time.monotonic()) + timeout
        got = self._checkout(first=True)
        while True:
            if isinstance(got, concurrent.futures.Future):
                got = self._wait_sync(got, deadline, timeout)
            if got is OPEN_ONE:
                return self._waited(started, self._open_for_caller())
            assert isinstance(got, PooledConnection)
            if got.check_alive(time.monotonic()):
                return self._waited(started, got)
            self.checkin(got, reusable=False, failed=True)
            got = self._checkout(first=False)

    def take_idle(self) -> PooledConnection | None:
        """Borrowing's fast path, for the event loop: an idle connection, unchecked
        (see :class:`Lease`), or None when only :meth:`aacquire` can tell."""
        if self.pinned is not None:
            return None
        now = time.monotonic()
        with self._lock:
            if self.closing or not self.idle:
                return None
            conn = self.idle[-1]
            # conn.stale(now), written out: the hot path.
            if now >= conn.expires_at or now - conn.alive_at >= conn.wait_timeout:
                return None
            self.idle.pop()
            self._in_use += 1
            self.counters.requests += 1
        return self._waited(now, conn)

    async def aacquire(self, timeout: float, *, check: bool = True) -> PooledConnection:
        """Borrow a connection without blocking the event loop.

        With *check* false, the caller checks the connection itself (see
        :class:`Lease`): each check releases the GIL, which stalls a busy
        event loop while worker threads hold it.
        """
        if self.pinned is not None:
            return await self.pinned.aborrow(timeout)
        deadline = (started := time.monotonic()) + timeout
        got = self._checkout(first=True)
        while True:
            if isinstance(got, concurrent.futures.Future):
                got = await self._wait_async(got, deadline, timeout)
            if got is OPEN_ONE:
                got = await self._aopen_for_caller(deadline, timeout)
                return self._waited(started, got)
            assert isinstance(got, PooledConnection)
            try:
                if not check or await _aio.check_alive(got):
                    return self._waited(started, got)
            except BaseException:  # cancelled mid-ping
                self.checkin(got, reusable=False)
                raise
            self.checkin(got, reusable=False, failed=True)
            got = self._checkout(first=False)

    # -- lending cursors: fetch(), cursor(), lease() are _lending's ---------

    stream = stream  # async for row in pool.stream(sql, args): see _stream

    # -- introspection -----------------------------------------------------------

    def stats(self) -> PoolStats:
        """A consistent snapshot of the pool's state and counters; with
        replicas, each one's state, lag and pool in ``replicas``."""
        with self._lock:
            stats = self.counters.snapshot(
                size=len(self.idle) + self._in_use + self._checking,
                idle=len(self.idle),
                in_use=self._in_use,
                waiting=len(self._waiters),
                max_size=self.max_size,
            )
            hosts = self._connector.host_stats()
        if hosts:
            stats = dataclasses.replace(stats, hosts=hosts)
        return self.with_replicas(stats)


def _hosts_changed(pool: Pool) -> None:
    """A host became fit (refill now, not after a backoff) or unfit (its idle
    connections, marked stale, are closed now)."""
    with pool.cond:
        pool.housekeeper.refill_backoff.succeeded()
        pool.cond.notify_all()
