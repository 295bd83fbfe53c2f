"""Run SQL on the event loop without blocking it and without a worker thread.

mysqlclient can send a query (``send_query``) and read its answer
(``read_query_result``) as two calls; in between, the event loop waits for the
socket to become readable, so the C client never blocks on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import types
from collections.abc import Generator

import anyio
import MySQLdb

from ._connection import CHECK_TIMEOUT, PooledConnection, closed_while_waiting

#: Loop iterations to look for the answer before registering with the selector:
#: a quick answer (a COMMIT, a primary-key lookup) usually arrives within them,
#: and a look costs one syscall that keeps the GIL, while registering and
#: unregistering cost two that release it, and more Python (see _socket).
LOOKS = 4


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


@types.coroutine
def next_iteration() -> Generator[None, None, None]:
    """Let one loop iteration run: ``asyncio.sleep(0)`` without the coroutine
    it wraps this in. A cancellation is raised here, as there."""
    yield


async def wait_readable(conn: PooledConnection, timeout: float | None) -> None:
    """Wait until *conn*'s socket has data (asyncio only: cheaper than anyio's
    generic path). Raises :func:`lost`'s error after *timeout* seconds (None:
    no limit)."""
    readable = conn.readable
    for _ in range(LOOKS):
        await next_iteration()  # other tasks run meanwhile
        if readable():
            return
    await wait_selector(conn, timeout)


async def wait_selector(conn: PooledConnection, timeout: float | None) -> None:
    """:func:`wait_readable`, registered with the loop's selector at once.

    The registration is the connection's (``selector_wait``) until the wait
    ends: closing the connection meanwhile removes it and wakes this wait with
    an error. Removed here only while still its own, for the fd may be another
    connection's by then.
    """
    fd = conn.fileno()
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    loop.add_reader(fd, _wake, future)
    conn.selector_wait = wait = (loop, fd, future)
    timer = None if timeout is None else loop.call_later(timeout, _expire, future)
    try:
        await future
    except TimeoutError:
        loop.remove_reader(fd)  # a KILLed session's EOF would wake it in a loop
        raise await timed_out(conn, timeout) from None
    finally:
        if conn.selector_wait is wait:
            conn.selector_wait = None
            loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()
    if not conn.open:  # woken, then closed before this task ran on
        raise closed_while_waiting()


def lost(conn: PooledConnection, timeout: float | None) -> MySQLdb.OperationalError:
    """The error for an answer that did not come within *timeout*."""
    conn.broken = True  # pending and broken: closed, the session left alone
    return MySQLdb.OperationalError(
        2013, f"Lost connection to server: no answer within {timeout:g} s"
    )


async def timed_out(
    conn: PooledConnection, timeout: float | None
) -> MySQLdb.OperationalError:
    """:func:`lost`'s error, after the pool KILLed the session of a caller's
    statement (which the server would run on, row locks and all): then the
    server is reachable and the statement was slow (``QueryTimeout``). The
    check before use sends no caller's statement: nothing to KILL there."""
    error = lost(conn, timeout)
    killer = conn.killer
    if killer is not None and timeout is not None and conn.used:
        return await killer.akill_after_timeout(conn, timeout) or error
    return error


async def query(
    conn: PooledConnection,
    sql: bytes,
    timeout: float | None = None,
    shield: bool = False,
    *,
    timed: bool = False,
) -> None:
    """Send *sql* and read the first answer header, never blocking the loop.

    Until the answer is read ``conn.pending`` stays true, so a cancellation in
    between leaves a connection the pool knows it must not reuse. With *shield*
    a cancellation waits for the answer first (within *timeout*), so that a
    COMMIT is never left in doubt. *timeout* defaults to the connection's
    ``read_timeout``. *timed*: a statement the telemetry reports (a COMMIT,
    a ROLLBACK; not the pool's own checks).
    """
    if conn.pending:
        raise in_progress()
    if timeout is None:
        timeout = conn.read_timeout
    telemetry = conn.telemetry if timed else None
    timing = None if telemetry is None else telemetry.start(conn, sql)
    conn.note_status()  # the last answer's status, which this one overwrites
    conn.pending = True
    try:
        conn.send_query(sql)
        try:
            # wait_readable(), written out: one coroutine less per statement.
            readable = conn.readable
            for _ in range(LOOKS):
                await next_iteration()
                if readable():
                    break
            else:
                await wait_selector(conn, timeout)
        except asyncio.CancelledError:
            if not shield:
                raise
            # A shield costs more than the rest of a query: entered only when
            # needed. Should the answer fail too, the cancellation still wins
            # (the connection, still pending, is then closed).
            with anyio.CancelScope(shield=True), contextlib.suppress(MySQLdb.Error):
                await query_answer(conn, timeout)
            raise
        conn.read_query_result()
    except BaseException as exc:
        if timing is not None:
            timing.end(exc)
        raise
    if timing is not None:
        timing.end(None)
    conn.pending = False


async def query_answer(conn: PooledConnection, timeout: float | None) -> None:
    """Read the answer to a statement already sent (see :func:`query`)."""
    await wait_readable(conn, timeout)
    conn.read_query_result()
    conn.pending = False


def in_progress() -> MySQLdb.InterfaceError:
    """Refuse a statement while another one's answer is unread."""
    return MySQLdb.InterfaceError(
        "a statement is still in progress on this connection (was it cancelled, "
        "or run by two tasks at once?): its answer was never read"
    )


async def rollback(conn: PooledConnection, timeout: float | None = None) -> None:
    await query(conn, b"ROLLBACK", timeout, timed=True)


async def ping(conn: PooledConnection, timeout: float | None = None) -> None:
    """A round trip that proves the connection alive; raises if it is not."""
    await query(conn, b"DO 1", timeout)


async def check_alive(conn: PooledConnection) -> bool:
    """:meth:`PooledConnection.check_alive` without blocking the loop."""
    alive = conn.alive_at_a_glance(time.monotonic())
    if alive is not None:
        return alive
    try:
        await ping(conn, CHECK_TIMEOUT)
    except MySQLdb.Error as exc:  # a timeout included (see lost())
        return conn.in_step_after(exc)  # an error answered: alive
    return True
