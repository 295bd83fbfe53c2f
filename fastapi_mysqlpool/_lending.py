"""Lending cursors from the pool: ``fetch()`` for threads, ``cursor()`` and
``lease()`` for the event loop (a mixin of :class:`Pool`)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Generator
from typing import Any

from MySQLdb.cursors import BaseCursor, Cursor

from ._cursors import leased_cursor_class
from ._lease import CursorContext, Lease, LendingPool


class Lending:
    """The pool's ways of lending a cursor on a connection of its own."""

    @contextlib.contextmanager
    def fetch(
        self: LendingPool,
        auto_manage: bool = True,
        cursor_type: type[BaseCursor] = Cursor,
    ) -> Generator[Any, None, None]:
        """Lend a cursor on a connection of its own (blocking: use in threads).

        With *auto_manage*, commit when the block ends normally. Otherwise, and
        on any exception (``BaseException`` included), roll back. The cursor
        refuses any use afterwards.
        """
        cursor_class = leased_cursor_class(cursor_type)  # may raise: before borrowing
        conn = self.acquire(self.acquire_timeout)
        lease = Lease.of_cursor(self, conn, cursor_class=cursor_class, checked=True)
        try:
            yield lease.cursor
        except BaseException as exc:
            lease.finish(exc)
            raise
        lease.finish(None, commit=auto_manage)

    def cursor(self: LendingPool, dict_rows: bool = False) -> CursorContext:
        """``async with pool.cursor() as cursor``: an :class:`AsyncPoolCursor` on a
        connection of its own, committed at the end (rolled back on any
        exception). Nothing in it blocks the event loop.
        """
        make = functools.partial(
            Lease.of_async_cursor, dict_rows=dict_rows, checked=False
        )
        return CursorContext(self, make)

    def lease(
        self: LendingPool, cursor_type: type[BaseCursor] = Cursor
    ) -> CursorContext:
        """``async with pool.lease() as cursor``: :meth:`fetch` for the event loop.

        Borrowing, commit and rollback never block the loop; the cursor is a
        MySQLdb one, whose queries do: hand it to a worker thread.
        """
        make = functools.partial(
            Lease.of_cursor,
            cursor_class=leased_cursor_class(cursor_type),
            checked=False,
        )
        return CursorContext(self, make)
