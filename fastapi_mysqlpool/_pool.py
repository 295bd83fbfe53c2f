"""The connection pool: mysqlclient-pool's ``ConnectionPool``, made fit for servers.

What it adds to the base class, and why:

- a hard cap (``max_size``) with a fair FIFO queue and ``acquire_timeout``: the
  base grows without limit until MySQL answers "Too many connections";
- checks before use, so dead connections (restart, ``KILL``, ``wait_timeout``)
  never reach a request when a live one can be had: a poll of the socket every
  time (a closed connection has an EOF to read), a round trip after more than
  ``CHECK_IDLE_AFTER`` idle; plus a jittered ``max_lifetime`` and a keepalive;
- a broken connection is discarded alone: the base drains and refills the whole
  pool synchronously while every other caller gets ``DrainedError``;
- connections come back clean (rolled back; a changed session is reset off
  the request path, or closed);
- fail-fast with backoff while the server is down, and a background refill;
- a statement that outlasts ``read_timeout`` is KILLed (the server would run
  it on) before its error is raised, its slot kept until then;
- connects for the event loop run in threads of the pool's own, within
  ``acquire_timeout``: never waiting for a worker thread that sync routes hold;
- graceful close and :meth:`Pool.stats`.

Threads (background tasks, ``fetch()``) and the event loop (dependencies) share
one pool: bookkeeping happens under ``_lock`` and never around I/O, and waiters
are ``concurrent.futures.Future`` objects, which both worlds can wait on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import anyio
import anyio.to_thread
import MySQLdb
from mysqlclient_pool import ConnectionPool
from MySQLdb.cursors import BaseCursor, Cursor
from typing_extensions import Unpack

from . import _aio
from ._backoff import Backoff
from ._config import (
    DEFAULT_CONNECT_TIMEOUT,
    ConnectConfig,
    make_config,
    required_tls,
)
from ._connection import CHECK_TIMEOUT, PooledConnection, leased_cursor_class
from ._errors import (
    BUSY_ERRNOS,
    LOGIN_ERRNOS,
    BusyError,
    DrainedError,
    PoolClosed,
    PoolStartupError,
    PoolTimeout,
    QueryTimeout,
    errno_of,
)
from ._lease import AsyncLease, Lease
from ._options import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_TIMEOUT,
    PoolLimits,
    PoolOptions,
    Settings,
    default_max_size,
)

logger = logging.getLogger("fastapi_mysqlpool")

#: Idle connections are pinged this often, so no firewall or server drops them.
KEEPALIVE_INTERVAL: Final = 120.0
#: Threads that open connections for the event loop (and KILL the sessions of
#: its timed-out statements), so that never waits for one of anyio's worker
#: threads, which sync routes may all hold (as HikariCP's
#: addConnectionExecutor; mysqlclient has no non-blocking connect).
CONNECT_THREADS: Final = 4
#: How long a KILL waits for the session to end (a rollback can take a while)
#: before its slot is given up anyway.
KILL_WAIT: Final = 5.0

_LIFETIME_JITTER = 0.025  # as HikariCP: spread the retirements of a batch
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 0.5  # the pool notices a server that came back within this
_BACKOFF_JITTER = 0.2
# The housekeeper looks at idle connections at least this often, so a server
# restart is noticed (and the pool refilled) without waiting for traffic.
_HOUSEKEEPER_MAX_SLEEP = 1.0
# After a failed refill the housekeeper waits at least this long (doubling up
# to _REFILL_RETRY_MAX): a server answering "too many connections" sets no
# backoff for requests, which should keep trying, but must not be hammered.
_REFILL_RETRY_FIRST = 0.1
_REFILL_RETRY_MAX = 2.0
# Returned connections with a changed session waiting for the housekeeper to
# reset them; beyond this many, the next ones are closed instead.
_RESETS_QUEUED_MAX = 4

# Handed to a waiter instead of a connection: "a slot is free, open one".
_SLOT: Final = object()


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool. Counters run from the pool's creation."""

    #: Open connections: idle, in use or being checked.
    size: int
    idle: int
    in_use: int
    #: Callers queued for a connection.
    waiting: int
    max_size: int
    #: Connections opened and closed.
    opened: int
    closed: int
    #: Connections whose changed session was reset (not closed) before reuse.
    resets: int
    #: Failed connection attempts and connections found dead.
    errors: int
    #: Connections handed out, and callers that gave up after ``acquire_timeout``.
    requests: int
    timeouts: int
    #: Seconds callers spent queued, in total.
    wait_time: float


class Pool(ConnectionPool):
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
        self._required_tls = required_tls(self.config)

        self._lock = threading.Lock()
        # Wakes the housekeeper, and close() waiting for connections to return.
        self._cond = threading.Condition(self._lock)
        # Idle connections, most recently returned on the right: taken LIFO so
        # the busy ones stay warm and the rest can age out.
        self._idle: deque[PooledConnection] = self._pool  # type: ignore[assignment]
        self._in_use = 0
        self._opening = 0
        self._checking = 0
        self._waiters: deque[concurrent.futures.Future[Any]] = deque()
        self._closing = False
        self._drained_waiters: list[concurrent.futures.Future[None]] = []
        # Server sessions (id, client address) of connections closed
        # mid-query, to KILL.
        self._doomed: list[tuple[int, str | None]] = []
        # While the server is down or refuses us, callers fail fast until
        # this is due; a refill that failed waits for the other.
        self._connect_backoff = Backoff(
            _BACKOFF_FIRST, _BACKOFF_MAX, jitter=_BACKOFF_JITTER
        )
        self._refill_backoff = Backoff(_REFILL_RETRY_FIRST, _REFILL_RETRY_MAX)
        self._last_error: str | None = None
        self._housekeeper: threading.Thread | None = None
        self._connector = concurrent.futures.ThreadPoolExecutor(
            CONNECT_THREADS, thread_name_prefix="fastapi-mysqlpool-connect"
        )
        # One KILL connection at a time: the server sees at most max_size + 1.
        self._kill_lock = threading.Lock()
        # Returned connections whose session changed, for the housekeeper to
        # reset (counted in _checking meanwhile).
        self._resets: list[PooledConnection] = []
        # Stats counters.
        self._opened = self._closed_count = self._errors = self._resets_done = 0
        self._requests = self._timeouts = 0
        self._wait_time = 0.0
        if open:
            self.open()

    def _set_max_size(self, max_size: int) -> None:
        """Change the cap of a running pool: callers queued get the slots it
        adds; below a lowered cap, no connection opens until the pool is under
        it."""
        with self._lock:
            self.max_size = max_size
            while self._waiters and self._total_locked() < max_size:
                self._opening += 1
                if not self._handoff_locked(_SLOT):
                    self._opening -= 1
                    break

    def __repr__(self) -> str:
        with self._lock:
            state = "closed" if self._closing else "open"
            counts = f"idle={len(self._idle)} in_use={self._in_use}"
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
        self._start_housekeeper()

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
        with self._cond:
            while (
                self._busy_locked() and (remaining := deadline - time.monotonic()) > 0
            ):
                self._cond.wait(remaining)
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

    def _begin_close(self) -> bool:
        with self._cond:
            if self._closing:
                return False
            self._closing = True
            waiters = list(self._waiters)
            self._waiters.clear()
            self._cond.notify_all()
        for waiter in waiters:
            if waiter.set_running_or_notify_cancel():
                waiter.set_exception(PoolClosed())
        return True

    def _finish_close(self) -> None:
        self._closed = True
        if self._housekeeper is not None:
            # It may be in a connect (bounded by connect_timeout) or a check
            # (bounded by CHECK_TIMEOUT); it exits at its next step.
            self._housekeeper.join(CHECK_TIMEOUT + self._connect_timeout())
        # Connects under way finish (bounded by connect_timeout): a caller that
        # gave up left its connection to the idle set, closed here.
        self._connector.shutdown(wait=True)
        self._close_idle()
        with self._lock:
            self._drained_waiters.clear()
            resets, self._resets = self._resets, []
        for conn in resets:  # left by a housekeeper that did not stop in time
            self._reset(conn)
        with self._lock:
            doomed, self._doomed = self._doomed, []
        if doomed:  # left by the housekeeper, which is gone
            self._kill_sessions(doomed)
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

    # -- mysqlclient-pool's hooks, rerouted --------------------------------

    def _connection(self) -> PooledConnection:
        return self._connect()

    def _load(self, timeout: float = 0) -> None:
        self._fill(timeout)

    def _pull(self) -> PooledConnection:
        return self._acquire(self.acquire_timeout)

    def _release(self, connection: Any) -> None:
        self._checkin(connection, reusable=True)

    def _reload(self) -> None:
        # The base drains the whole pool on one dropped connection; here dead
        # idle connections are found by the check before use instead.
        return

    def _drain(self) -> None:
        self._close_idle()

    # -- opening connections -------------------------------------------------

    def _connect_timeout(self) -> int:
        return int(self.config.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT)

    def _connect(self, connect_timeout: int | None = None) -> PooledConnection:
        """Open one connection (blocking). Raises DrainedError or BusyError."""
        config = self.config
        if connect_timeout is not None:
            # A ConnectConfig: a frame's locals, shown by some error trackers,
            # must not hold the password in a plain dict.
            config = ConnectConfig({**config, "connect_timeout": connect_timeout})
        try:
            conn = PooledConnection(**config)
            try:
                wait_timeout, server_host = conn.setup_session()
                if self._required_tls is not None:
                    _check_encrypted(conn, self._required_tls)
            except BaseException:
                _close_quietly(conn)
                raise
        except MySQLdb.Error as exc:
            raise self._connect_failed(exc) from exc
        now = time.monotonic()
        conn.returned_at = conn.alive_at = now
        conn.wait_timeout = float(wait_timeout)
        conn.server_host = server_host
        conn.read_timeout = config.get("read_timeout") or None  # 0: no limit
        conn.killer = self
        # Compressed packets have another header: _wire cannot read them.
        conn.plain_wire = not config.get("compress")
        lifetime = self.max_lifetime
        conn.expires_at = (
            math.inf
            if lifetime is None
            else now + lifetime * (1 - random.uniform(0, _LIFETIME_JITTER))  # noqa: S311
        )
        with self._lock:
            self._opened += 1
            self._connect_backoff.succeeded()
            self._last_error = None
        return conn

    def _connect_failed(self, exc: MySQLdb.Error) -> ConnectionError:
        """Record a failed attempt; the error to raise in its place."""
        errno = errno_of(exc)
        reason = _describe(exc)
        with self._lock:
            self._errors += 1
            self._last_error = reason
            if errno not in BUSY_ERRNOS:
                # Down or refusing us: back off so callers fail fast instead of
                # all waiting on a server that cannot answer.
                self._connect_backoff.failed(time.monotonic())
        if errno in BUSY_ERRNOS:
            return _with_message(
                BusyError(), f"{self.config.target} refused a connection: {reason}"
            )
        return _with_message(
            DrainedError(), f"cannot connect to {self.config.target}: {reason}"
        )

    def _unavailable_locked(self, now: float) -> ConnectionError:
        return _with_message(
            DrainedError(),
            f"{self.config.target} is unavailable ({self._last_error}); "
            f"next attempt in {self._connect_backoff.until - now:.2f} s",
        )

    def _fill(self, timeout: float) -> None:
        """Open connections up to ``size``, retrying until *timeout* passes."""
        deadline = time.monotonic() + timeout
        backoff = Backoff(_BACKOFF_FIRST, _BACKOFF_MAX)
        while True:
            with self._lock:
                if self._closing:
                    raise PoolClosed()
                if self._total_locked() >= self.size:
                    return
                self._opening += 1
            remaining = deadline - time.monotonic()
            limit = self._connect_timeout()
            try:
                conn = self._connect(max(1, min(limit, math.ceil(remaining))))
            except BaseException as exc:
                self._free_slot()
                if not isinstance(exc, ConnectionError):
                    raise  # not the server: a bad argument in cfg, say
                cause = exc.__cause__ or exc
                delay = backoff.next_delay()
                if (
                    errno_of(cause) in LOGIN_ERRNOS
                    or time.monotonic() + delay >= deadline
                ):
                    raise PoolStartupError(
                        f"could not open {self.size} connection(s) to "
                        f"{self.config.target} within {timeout:g} s: {_describe(cause)}"
                    ) from None
                time.sleep(delay)
                continue
            with self._lock:
                self._opening -= 1
                self._put_idle_locked(conn)

    # -- borrowing and returning -------------------------------------------

    def _total_locked(self) -> int:
        """Server sessions of this pool: the limit max_size applies to."""
        return (
            len(self._idle)
            + self._in_use
            + self._opening
            + self._checking
            + len(self._doomed)
        )

    def _busy_locked(self) -> int:
        """Connections close() must wait for: borrowed, being opened or checked."""
        return self._in_use + self._opening + self._checking

    def _checkout_locked(
        self, now: float, stale: list[PooledConnection], first: bool
    ) -> PooledConnection | concurrent.futures.Future[Any] | object:
        """Critical section: a connection, ``_SLOT`` (open one), or a waiter.

        Idle connections past their lifetime, or surely dropped by the server
        (idle beyond its ``wait_timeout``), go to *stale* to be closed unlocked.
        """
        if self._closing:
            raise PoolClosed()
        if first:
            self._requests += 1
        while self._idle:
            conn = self._idle.pop()
            if conn.stale(now):
                self._closed_count += 1
                stale.append(conn)
                continue
            self._in_use += 1
            return conn
        if self._total_locked() < self.max_size:
            if self._waiters:
                # A slot is free while callers wait (it should have been handed
                # over already): the longest waiter gets it, this one queues.
                self._opening += 1
                if not self._handoff_locked(_SLOT):
                    self._opening -= 1
            if not self._waiters:
                if self._connect_backoff.waiting(now):
                    raise self._unavailable_locked(now)
                self._opening += 1
                return _SLOT
        waiter: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._waiters.append(waiter)
        return waiter

    def _acquire(self, timeout: float) -> PooledConnection:
        """Borrow a connection, blocking the calling thread (never the loop's)."""
        deadline = time.monotonic() + timeout
        first = True
        while True:
            stale: list[PooledConnection] = []
            with self._lock:
                got = self._checkout_locked(time.monotonic(), stale, first)
            first = False
            _close_all(stale)
            if isinstance(got, concurrent.futures.Future):
                got = self._wait_sync(got, deadline, timeout)
            if got is _SLOT:
                return self._open_for_caller()
            assert isinstance(got, PooledConnection)
            if got.check_alive(time.monotonic()):
                return got
            self._checkin(got, reusable=False, failed=True)

    def take_idle(self) -> PooledConnection | None:
        """Borrowing's fast path, for the event loop: an idle connection, unchecked
        (see :class:`Lease`), or None when only :meth:`_aacquire` can tell."""
        now = time.monotonic()
        with self._lock:
            if self._closing or not self._idle:
                return None
            conn = self._idle[-1]
            # conn.stale(now), written out: the hot path.
            if now >= conn.expires_at or now - conn.alive_at >= conn.wait_timeout:
                return None
            self._idle.pop()
            self._in_use += 1
            self._requests += 1
        return conn

    async def _aacquire(self, timeout: float, check: bool = True) -> PooledConnection:
        """Borrow a connection without blocking the event loop.

        With *check* false, the caller checks the connection itself (see
        :class:`Lease`): each check releases the GIL, which stalls a busy
        event loop while worker threads hold it.
        """
        deadline = time.monotonic() + timeout
        first = True
        while True:
            stale: list[PooledConnection] = []
            with self._lock:
                got = self._checkout_locked(time.monotonic(), stale, first)
            first = False
            _close_all(stale)
            if isinstance(got, concurrent.futures.Future):
                got = await self._wait_async(got, deadline, timeout)
            if got is _SLOT:
                return await self._aopen_for_caller(deadline, timeout)
            assert isinstance(got, PooledConnection)
            try:
                if not check or await _aio.check_alive(got):
                    return got
            except BaseException:  # cancelled mid-ping
                self._checkin(got, reusable=False)
                raise
            self._checkin(got, reusable=False, failed=True)

    def _open_for_caller(self) -> PooledConnection:
        """Open a connection into a slot the caller reserved, for the caller."""
        with self._lock:
            now = time.monotonic()
            if self._connect_backoff.waiting(now):
                # A slot handed over while the server is down: fail fast too.
                error = self._unavailable_locked(now)
                self._opening -= 1
                self._slot_freed_locked()
                raise error
        try:
            conn = self._connect()
        except BaseException:
            self._free_slot()
            raise
        with self._lock:
            self._opening -= 1
            self._in_use += 1
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
            self._connector.submit(self._open_into, handoff)
        except RuntimeError:  # closed meanwhile: no connect threads left
            self._free_slot()
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
                    self._checkin(conn, reusable=True)
            raise  # else the connect's own error

    def _open_into(self, handoff: concurrent.futures.Future[PooledConnection]) -> None:
        """In a connect thread: open a connection into a slot reserved for the
        caller awaiting *handoff*; if it gave up meanwhile, for the pool."""
        with self._lock:
            closing = self._closing
        if handoff.cancelled() or closing:
            self._free_slot()  # to the next waiter, or the refill
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
        self._checkin(conn, reusable=True)

    def _abandon(
        self, handoff: concurrent.futures.Future[PooledConnection], *, timed_out: bool
    ) -> PooledConnection | None:
        """Give up on *handoff*: None, or the connection if it came meanwhile
        (raises the connect's error if that failed meanwhile)."""
        with self._lock:
            if handoff.cancel():
                if timed_out:
                    self._timeouts += 1
                return None
        return handoff.result(0)

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
                    self._timeouts += 1
            else:
                # Handed over under this lock, so the outcome is already set.
                got = waiter.result(0)
        if got is None:
            if cancelled:
                return None
            raise PoolTimeout(
                f"no connection to {self.config.target} became free within "
                f"{timeout:g} s (max_size={self.max_size}, all in use)"
            )
        if cancelled:
            if got is _SLOT:
                self._free_slot()
            else:
                self._checkin(got, reusable=True)
        return got

    def _add_wait_time(self, started: float) -> None:
        with self._lock:
            self._wait_time += time.monotonic() - started

    def _checkin(
        self, conn: PooledConnection, reusable: bool, failed: bool = False
    ) -> None:
        """Give *conn* back: to a waiter, to the idle set, or closed.

        *failed* counts a connection found dead in the error statistics.
        """
        now = time.monotonic()
        if reusable and conn.is_reusable(now):
            with self._lock:
                if not self._closing:  # checked under the lock: close() races
                    conn.returned_at = conn.alive_at = now
                    # (No close() to wake: it is not closing.)
                    if not self._waiters or not self._handoff_locked(conn):
                        self._idle.append(conn)
                        self._in_use -= 1
                    return
        elif reusable and conn.resettable(now):
            with self._lock:
                # Reset by the housekeeper, off the request's path. When it is
                # behind, closing (and opening anew in the caller's thread)
                # does not wait for it.
                if (
                    not self._closing
                    and self._housekeeper is not None
                    and len(self._resets) < _RESETS_QUEUED_MAX
                ):
                    self._in_use -= 1
                    self._checking += 1
                    self._resets.append(conn)
                    self._cond.notify_all()
                    return
        # Closed mid-query: the server runs the query on, in a session still
        # holding its place among max_connections, unless it is KILLed. (A
        # broken connection's session is gone already.)
        session = _session_of(conn) if conn.pending and not conn.broken else None
        # Closed before its slot is freed: the server never sees max_size + 1.
        _close_quietly(conn)
        with self._lock:
            self._in_use -= 1
            self._closed_count += 1
            if failed:
                self._errors += 1
            if session is not None and not self._closing:
                # The slot stays taken until the housekeeper KILLs the session.
                self._doomed.append(session)
                self._cond.notify_all()
            else:
                self._slot_freed_locked()

    def _handoff_locked(self, got: object) -> bool:
        """Give *got* (a connection or ``_SLOT``) to the longest waiter, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.set_running_or_notify_cancel():
                waiter.set_result(got)
                return True
        return False

    def _slot_freed_locked(self) -> None:
        """A connection went away: the longest waiter may open one instead,
        else the housekeeper refills."""
        if not self._closing:
            self._opening += 1
            if self._handoff_locked(_SLOT):
                return
            self._opening -= 1
            self._cond.notify_all()
        self._changed_locked()

    def _free_slot(self) -> None:
        with self._lock:
            self._opening -= 1
            self._slot_freed_locked()

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
                self._idle.appendleft(conn)
            else:
                self._idle.append(conn)
        self._changed_locked()

    def _changed_locked(self) -> None:
        """Fewer connections busy: wake a pending close() (only then: this runs
        on every return, and waking the housekeeper each time would be waste)."""
        if self._closing:
            self._cond.notify_all()
            if not self._busy_locked():
                for drained in self._drained_waiters:
                    if not drained.done():  # aclose() may have given up on it
                        drained.set_result(None)
                self._drained_waiters.clear()

    def _close_idle(self) -> None:
        with self._lock:
            idle = list(self._idle)
            self._idle.clear()
            self._closed_count += len(idle)
        _close_all(idle)

    # -- lending cursors -----------------------------------------------------

    @contextlib.contextmanager
    def fetch(
        self, auto_manage: bool = True, cursor_type: type[BaseCursor] = Cursor
    ) -> Generator[Any, None, None]:
        """Lend a cursor on a connection of its own (blocking: use in threads).

        With *auto_manage*, commit when the block ends normally. Otherwise, and
        on any exception (``BaseException`` included), roll back. The cursor
        refuses any use afterwards.
        """
        cursor_class = leased_cursor_class(cursor_type)  # may raise: before borrowing
        conn = self._acquire(self.acquire_timeout)
        lease = Lease.of_cursor(self, conn, cursor_class, True)
        try:
            yield lease.cursor
        except BaseException as exc:
            lease.finish(exc)
            raise
        lease.finish(None, commit=auto_manage)

    def cursor(self, dict_rows: bool = False) -> AsyncLease:
        """``async with pool.cursor() as cursor``: an :class:`AsyncPoolCursor` on a
        connection of its own, committed at the end (rolled back on any
        exception). Nothing in it blocks the event loop.
        """
        make = functools.partial(
            Lease.of_async_cursor, dict_rows=dict_rows, checked=False
        )
        return AsyncLease(self, make)

    def lease(self, cursor_type: type[BaseCursor] = Cursor) -> AsyncLease:
        """``async with pool.lease() as cursor``: :meth:`fetch` for the event loop.

        Borrowing, commit and rollback never block the loop; the cursor is a
        MySQLdb one, whose queries do: hand it to a worker thread.
        """
        make = functools.partial(
            Lease.of_cursor,
            cursor_class=leased_cursor_class(cursor_type),
            checked=False,
        )
        return AsyncLease(self, make)

    # -- housekeeping ----------------------------------------------------------

    def _start_housekeeper(self) -> None:
        if self._housekeeper is None:
            self._housekeeper = threading.Thread(
                target=self._housekeep,
                name="fastapi-mysqlpool-housekeeper",
                daemon=True,
            )
            self._housekeeper.start()

    def _housekeep(self) -> None:
        """Refill to ``size``, keep idle connections alive, retire old ones,
        KILL abandoned sessions. An unexpected error is logged, not fatal."""
        while True:
            try:
                if not self._housekeep_once():
                    return
            except Exception:
                logger.exception("pool housekeeper for %s failed", self.config.target)
                with self._cond:  # and no busy loop on a lasting fault
                    if self._closing:
                        return
                    self._cond.wait(_HOUSEKEEPER_MAX_SLEEP)

    def _housekeep_once(self) -> bool:
        with self._lock:
            resets, self._resets = self._resets, []
            closing = self._closing  # then none can be queued any more
        for conn in resets:  # first: a caller may be waiting for one
            self._reset(conn)
        if closing:
            return False
        with self._cond:
            if self._closing:
                return True  # once more: resets queued meanwhile are closed
            now = time.monotonic()
            retire, check = self._sort_idle_locked(now)
            doomed = list(self._doomed)
            refill = 0
            if now >= self._refill_due_locked():
                refill = max(0, self.size - self._total_locked())
                self._opening += refill
            if not (retire or check or refill or doomed):
                if not self._resets:
                    self._cond.wait(self._next_deadline_locked(now) - now)
                return True
        _close_all(retire)
        if doomed:
            try:
                self._kill_sessions(doomed)
            finally:
                with self._lock:
                    for session in doomed:
                        self._doomed.remove(session)
                        self._slot_freed_locked()
        for conn in check:
            self._keepalive(conn)
        self._refill(refill)
        return True

    def _refill(self, slots: int) -> None:
        """Open connections into *slots* slots reserved for them. On a failure
        the rest go to waiters (who then fail fast while the server is down),
        and the next refill waits a while."""
        opened = 0
        try:
            while opened < slots:
                conn = self._connect()
                with self._lock:
                    opened += 1
                    self._opening -= 1
                    self._put_idle_locked(conn)
        except BaseException as exc:
            with self._lock:
                for _ in range(slots - opened):
                    self._opening -= 1
                    self._slot_freed_locked()
                self._refill_backoff.failed(time.monotonic())
            if not isinstance(exc, ConnectionError):
                raise
        else:
            with self._lock:
                self._refill_backoff.succeeded()

    def _refill_due_locked(self) -> float:
        """When a refill may next try: not while callers fail fast, nor before
        the wait after a failed refill."""
        return max(self._connect_backoff.until, self._refill_backoff.until)

    def _sort_idle_locked(
        self, now: float
    ) -> tuple[list[PooledConnection], list[PooledConnection]]:
        """Take out the idle connections to retire and those to ping."""
        retire: list[PooledConnection] = []
        check: list[PooledConnection] = []
        keep: list[PooledConnection] = []
        surplus = self._total_locked() - self.size
        for conn in self._idle:  # longest unused first
            # Pings keep a session alive, but do not make it used: max_idle
            # counts from its last caller, the rest from its last answer.
            if conn.looks_dead():
                self._errors += 1
                retire.append(conn)
                surplus -= 1
            elif conn.stale(now) or (
                surplus > 0 and now - conn.returned_at >= self.max_idle
            ):
                retire.append(conn)
                surplus -= 1
            elif now - conn.alive_at >= _keepalive_after(conn):
                check.append(conn)
            else:
                keep.append(conn)
        self._idle.clear()
        self._idle.extend(keep)
        self._closed_count += len(retire)
        self._checking += len(check)
        return retire, check

    def _kill_sessions(self, sessions: list[tuple[int, str | None]]) -> int:
        """KILL the server sessions of connections closed mid-query, or whose
        statement timed out; wait (up to ``KILL_WAIT``) until they are gone.
        Returns how many were found and killed.

        Through a short-lived connection of its own (as psycopg sends cancel
        requests): the pool may be full of the very sessions to kill. Only a
        session still seen from the same client address is killed: after a
        restart or a failover, or behind a load balancer, the same id may be
        someone else's.
        """
        with self._kill_lock:
            try:
                conn = self._connect()
            except ConnectionError as exc:  # the sessions probably died with it
                logger.warning("could not KILL abandoned sessions: %s", exc)
                return 0
            conn.killer = None  # its own timeout must not come back here
            killed: list[int] = []
            try:
                for session, host in sessions:
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
                _close_quietly(conn)
                with self._lock:
                    self._closed_count += 1
        return len(killed)

    # -- read timeouts (see SessionKiller) --------------------------------------

    def _kill_after_timeout(
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
        if not self._kill_sessions([_session_of(conn)]):
            return None
        return QueryTimeout(
            2013,
            f"no answer from {self.config.target} within {timeout:g} s "
            "(read_timeout): the statement was killed",
        )

    async def _akill_after_timeout(
        self, conn: PooledConnection, timeout: float
    ) -> MySQLdb.OperationalError | None:
        """:meth:`_kill_after_timeout` in a connect thread, for the event loop."""
        error = None
        # Shielded: a cancelled caller must still hold the slot until then.
        with anyio.CancelScope(shield=True):
            try:
                job = self._connector.submit(self._kill_after_timeout, conn, timeout)
            except RuntimeError:  # the pool is closed: no connect threads left
                error = await anyio.to_thread.run_sync(
                    self._kill_after_timeout, conn, timeout
                )
            else:
                error = await asyncio.wrap_future(job)
        return error

    def _reset(self, conn: PooledConnection) -> None:
        """Reset a returned connection's session (see
        PooledConnection.reset_session), then lend it or put it back idle;
        closed if that fails or the pool is closing."""
        with self._lock:
            closing = self._closing
        done = not closing and conn.reset_session()
        with self._lock:
            self._checking -= 1
            if done and not self._closing:
                self._resets_done += 1
                self._put_idle_locked(conn)
                return
            self._checking += 1
        _close_quietly(conn)
        with self._lock:
            self._checking -= 1
            self._closed_count += 1
            if not (done or closing):
                self._errors += 1
            self._slot_freed_locked()

    def _keepalive(self, conn: PooledConnection) -> None:
        alive = conn.ping_within(CHECK_TIMEOUT)
        if alive:
            with self._lock:
                self._checking -= 1
                if not self._closing:
                    conn.alive_at = time.monotonic()
                    self._put_idle_locked(conn, unused=True)
                    return
                self._checking += 1
        _close_quietly(conn)
        with self._lock:
            self._checking -= 1
            self._closed_count += 1
            if not alive:
                self._errors += 1
            self._slot_freed_locked()

    def _next_deadline_locked(self, now: float) -> float:
        deadline = now + _HOUSEKEEPER_MAX_SLEEP
        if self._total_locked() < self.size:
            deadline = min(deadline, self._refill_due_locked())
        # max_idle only retires connections beyond size: counting it for the
        # others would wake the housekeeper in a loop once they idle that long.
        surplus = self._total_locked() > self.size
        for conn in self._idle:
            deadline = min(
                deadline,
                conn.expires_at,
                conn.alive_at + _keepalive_after(conn),
                conn.returned_at + self.max_idle if surplus else math.inf,
            )
        # Never spin: nothing here needs finer timing than this.
        return max(deadline, now + 0.01)

    # -- introspection -----------------------------------------------------------

    def stats(self) -> PoolStats:
        """A consistent snapshot of the pool's state and counters."""
        with self._lock:
            return PoolStats(
                size=len(self._idle) + self._in_use + self._checking,
                idle=len(self._idle),
                in_use=self._in_use,
                waiting=len(self._waiters),
                max_size=self.max_size,
                opened=self._opened,
                closed=self._closed_count,
                resets=self._resets_done,
                errors=self._errors,
                requests=self._requests,
                timeouts=self._timeouts,
                wait_time=self._wait_time,
            )


def _keepalive_after(conn: PooledConnection) -> float:
    return min(KEEPALIVE_INTERVAL, conn.wait_timeout / 2)


_E = TypeVar("_E", bound=BaseException)


def _with_message(exc: _E, message: str) -> _E:
    # mysqlclient-pool's errors take no message; ours name the server.
    exc.args = (message,)
    return exc


def _describe(exc: BaseException) -> str:
    """``(2003) Can't connect...``: a MySQL error without its Python wrapping."""
    errno = errno_of(exc)
    if errno is not None and len(exc.args) > 1:
        return f"({errno}) {exc.args[1]}"
    return str(exc) or type(exc).__name__


def _session_of(conn: PooledConnection) -> tuple[int, str | None]:
    return conn.session_id, conn.server_host


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


def _check_encrypted(conn: PooledConnection, required: str) -> None:
    """Refuse a connection that *required* (what in cfg asked for TLS) wanted
    encrypted but is not: libmariadb lets ssl_mode=REQUIRED and ``ssl`` fall
    back to plaintext. The server's word, one round trip per new connection."""
    conn.query(b"SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    rows = conn.store_result().fetch_row()
    if not rows or not rows[0][1]:
        # 2026, CR_SSL_CONNECTION_ERROR, as libmariadb's own VERIFY_CA refusal.
        raise MySQLdb.OperationalError(
            2026,
            f"TLS was required ({required}) but the server did not negotiate "
            "it: the connection is not encrypted",
        )


def _close_quietly(conn: PooledConnection) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def _close_all(conns: Iterable[PooledConnection]) -> None:
    for conn in conns:
        _close_quietly(conn)
