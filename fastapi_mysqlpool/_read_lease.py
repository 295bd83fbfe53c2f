"""Read leases: a cursor in autocommit (no BEGIN, no COMMIT, no ROLLBACK round
trip) that refuses statements that may write, before sending them.

The lease is :class:`Lease`'s, switched (see ``Lease.reads``): its check
before the first statement turns autocommit on where the connection was
opened without it (the primary's pool; replicas' pools open in autocommit),
and its end sends nothing. The cursors are the usual ones with a check of
each template (see _readonly) in front.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import anyio
from MySQLdb.cursors import BaseCursor

from . import _aio
from ._async_cursor import AsyncPoolCursor
from ._connection import PooledConnection
from ._cursors import leased_cursor_class
from ._errors import ReadOnlyError, errno_of, is_connection_broken, refuses_writes
from ._lease import CursorContext, Lease, LendingPool, _drain
from ._readonly import read_only
from ._stats import PoolStats, ReplicaStats

RowT = TypeVar("RowT")

#: Galera's "WSREP has not yet prepared node for application use": a node
#: that is not ready, refusing reads too (code 1), not a refused write.
_ER_UNKNOWN_COM_ERROR = 1047

#: ``SERVER_STATUS_IN_TRANS``: a transaction is open (mariadb_com.h).
_IN_TRANS = 0x0001


def refused(template: object) -> ReadOnlyError:
    del template  # never in the message: the SQL stays in the code
    return ReadOnlyError(
        "a read cursor refused a statement that may write (it sends only "
        "SELECT, SHOW, DESCRIBE, EXPLAIN, WITH ... SELECT): write through "
        "Cursor / AsyncCursor"
    )


class ReadOnlyAsyncCursor(AsyncPoolCursor[RowT]):
    """An :class:`AsyncPoolCursor` that refuses, before sending it, any
    statement that may write (see _readonly)."""

    __slots__ = ()

    def execute(self, query: str | bytes, args: Any = None) -> Coroutine[Any, Any, int]:
        if not read_only(query):
            raise refused(query)
        return AsyncPoolCursor.execute(self, query, args)

    async def executemany(self, query: str | bytes, args: Iterable[Any]) -> int | None:
        if not read_only(query):
            raise refused(query)
        return await AsyncPoolCursor.executemany(self, query, args)

    async def callproc(self, procname: str, args: Sequence[Any] = ()) -> Sequence[Any]:
        raise refused(procname)  # a procedure may write


class ReadOnlyCursorMixin:
    """:class:`ReadOnlyAsyncCursor`'s check, for MySQLdb cursors."""

    def execute(self, query: Any, args: Any = None) -> Any:
        if not read_only(query):
            raise refused(query)
        return super().execute(query, args)  # type: ignore[misc]

    def executemany(self, query: Any, args: Any) -> Any:
        if not read_only(query):
            raise refused(query)
        return super().executemany(query, args)  # type: ignore[misc]

    def callproc(self, procname: Any, args: Any = ()) -> Any:
        raise refused(procname)


_C = TypeVar("_C", bound=BaseCursor)
_read_classes: dict[type[Any], type[Any]] = {}


def read_cursor_class(cursor_class: type[_C]) -> type[_C]:
    """*cursor_class*, leased (see _cursors) and read-only (one per class)."""
    read = _read_classes.get(cursor_class)
    if read is None:
        leased = leased_cursor_class(cursor_class)
        name = f"ReadOnly{leased.__name__}"
        bases = (ReadOnlyCursorMixin, leased)
        read = type(name, bases, {"__module__": __name__})
        _read_classes[cursor_class] = read
    return read


class ReadLease(Lease):
    """A lease whose connection runs in autocommit: nothing to commit or roll
    back at its end, which sends nothing unless results were left unread."""

    __slots__ = ()

    reads = True
    async_cursor_class = ReadOnlyAsyncCursor

    def checked_at_a_glance(self) -> PooledConnection | None:
        conn = self.conn
        if conn is not None and (
            conn.used
            or (
                conn.alive_at_a_glance(time.monotonic())
                and (conn.read_mode or conn.autocommit_mode)
            )
        ):
            return conn
        return None

    def _reusable(self, conn: PooledConnection, exc: BaseException | None) -> bool:
        # A transaction opened behind the cursor's back (through its
        # connection): closed rather than handed on, open.
        if conn._server_status() & _IN_TRANS:
            return False
        return exc is None or not is_connection_broken(exc)

    def finish(self, exc: BaseException | None, commit: bool = True) -> None:
        released = self._release()
        if released is None:
            return
        conn, leftover = released
        if leftover is not None or conn.more_results():
            if exc is not None:
                self.pool.checkin(conn, reusable=False)
                return
            try:
                _drain(conn, leftover)
            except BaseException:
                self.pool.checkin(conn, reusable=False)
                raise
        self.pool.checkin(conn, reusable=self._reusable(conn, exc))
        _refused_by_server(exc)

    async def afinish(self, exc: BaseException | None) -> None:
        released = self._release()
        if released is None:
            return
        conn, leftover = released
        if conn.pending:
            # Cut off mid-statement: closed (its session KILLed), as in Lease.
            self.pool.checkin(conn, reusable=False)
            if exc is None:
                raise _aio.in_progress()
            return
        if leftover is not None or conn.more_results():
            if exc is not None:
                self.pool.checkin(conn, reusable=False)
                return
            try:
                with anyio.CancelScope(shield=True):
                    await self.adrain(conn, leftover)
            except BaseException:
                self.pool.checkin(conn, reusable=False)
                raise
        self.pool.checkin(conn, reusable=self._reusable(conn, exc))
        _refused_by_server(exc)


def _refused_by_server(exc: BaseException | None) -> None:
    """A write sent around the check (through the cursor's connection) that
    the server's read_only refused: the app's mistake (code 0), not a demoted
    server (code 1, as for a write cursor)."""
    if (
        exc is not None
        and refuses_writes(exc)
        and errno_of(exc) != _ER_UNKNOWN_COM_ERROR
    ):
        raise refused(None) from exc


class ReadRouter(Protocol):
    """Where a pool's read cursors go when it has replicas (see _replicas)."""

    @property
    def replicas(self) -> tuple[Any, ...]:
        """The replicas, in the order given."""

    async def aborrow(self) -> tuple[LendingPool, PooledConnection]:
        """A pool for a read and a connection of it (unchecked), or raises
        :class:`NoReplicaAvailable`."""

    def replica_stats(self) -> tuple[ReplicaStats, ...]:
        """Each replica's state, lag and pool."""


class ReadingPool(LendingPool, Protocol):
    """A pool that lends read cursors: its own, or its replicas'."""

    read_router: ReadRouter | None
    pinned: object | None


async def borrow_for_read(pool: ReadingPool) -> tuple[LendingPool, PooledConnection]:
    """Where a read goes, and a connection there (unchecked: see Lease)."""
    router = pool.read_router
    # A test in one rolled-back transaction (_pinning) reads on its own
    # connection, the primary's: a replica would not see the test's writes.
    if router is None or pool.pinned is not None:
        conn = pool.take_idle() or await pool.aacquire(
            pool.acquire_timeout, check=False
        )
        return pool, conn
    return await router.aborrow()


class ReadCursorContext(CursorContext):
    """``async with pool.read_cursor()``: a read cursor on a connection of its
    own (a replica's, if the pool has replicas), given back at the end."""

    __slots__ = ()
    _pool: ReadingPool

    async def _borrow(self) -> tuple[LendingPool, PooledConnection]:
        return await borrow_for_read(self._pool)


def read_lease_maker(
    cursor_type: type[BaseCursor] | None, *, dict_rows: bool
) -> Callable[[LendingPool, PooledConnection], Lease]:
    """What makes a read lease: of an async cursor (*cursor_type* None), or of
    a MySQLdb one."""
    if cursor_type is None:

        def make_async(pool: LendingPool, conn: PooledConnection) -> Lease:
            return ReadLease.of_async_cursor(
                pool, conn, dict_rows=dict_rows, checked=False
            )

        return make_async
    cursor_class = read_cursor_class(cursor_type)

    def make(pool: LendingPool, conn: PooledConnection) -> Lease:
        return ReadLease.of_cursor(pool, conn, cursor_class=cursor_class, checked=False)

    return make


class Reads:
    """The pool's side of read cursors (a mixin of :class:`Pool`): where they
    go, ``read_cursor()``, and the replicas in ``stats()``."""

    #: Where read cursors go: None, this pool; else its replicas (see _replicas).
    read_router: ReadRouter | None = None
    _in_use: int

    def read_cursor(self, dict_rows: bool = False) -> ReadCursorContext:
        """``async with pool.read_cursor() as cursor``: a read cursor (an
        :class:`AsyncPoolCursor` in autocommit that refuses writes) on a
        replica's connection, or on this pool's without replicas. Nothing to
        commit at the end; nothing in it blocks the event loop."""
        make = read_lease_maker(None, dict_rows=dict_rows)
        return ReadCursorContext(self, make)  # type: ignore[arg-type]

    @property
    def in_use(self) -> int:
        """Connections lent out now (read without the lock: a hint)."""
        return self._in_use

    @property
    def replicas(self) -> tuple[Any, ...]:
        """The replicas that read cursors go to (see ``replicas=``), in order."""
        router = self.read_router
        return () if router is None else router.replicas

    def with_replicas(self, stats: PoolStats) -> PoolStats:
        """*stats*, with each replica's if there are replicas."""
        router = self.read_router
        if router is None:
            return stats
        return dataclasses.replace(stats, replicas=router.replica_stats())
