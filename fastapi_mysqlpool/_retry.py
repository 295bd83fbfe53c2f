"""Running a whole transaction again after it lost a conflict.

Only on the server's answer that it rolled the transaction back (a deadlock,
a lock wait timeout, a Galera certification failure: see
:func:`is_conflict`); never on another error, and so never after a COMMIT
whose answer was lost (that one may have committed).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
import MySQLdb

from ._backoff import Backoff
from ._errors import is_conflict

logger = logging.getLogger("fastapi_mysqlpool")

T = TypeVar("T")

#: The first wait before a retry, doubled up to RETRY_MAX, each shortened by
#: a random part of up to half: two transactions that deadlocked each other
#: should not meet again at once.
RETRY_FIRST = 0.02
RETRY_MAX = 1.0
_RETRY_JITTER = 0.5


class TransactionPool(Protocol):
    """What running a transaction needs of its pool (:class:`Pool`)."""

    def fetch(
        self, auto_manage: bool = True, cursor_type: Any = ...
    ) -> AbstractContextManager[Any]: ...

    def cursor(self, dict_rows: bool = False) -> Any: ...

    def lease(self, cursor_type: Any = ...) -> Any: ...


def check_retries(retries: object) -> None:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")


class Retries:
    """The retries left to one transaction, and the waits between them."""

    __slots__ = ("_backoff", "left", "retries", "what")

    def __init__(self, retries: int, what: str) -> None:
        check_retries(retries)
        self.retries = self.left = retries
        self.what = what
        self._backoff = Backoff(RETRY_FIRST, RETRY_MAX, jitter=_RETRY_JITTER)

    def delay_after(self, exc: BaseException) -> float | None:
        """Seconds to wait before running it again after *exc*; None: do not."""
        if not self.left or not isinstance(exc, MySQLdb.Error) or not is_conflict(exc):
            return None
        self.left -= 1
        delay = self._backoff.next_delay()
        logger.warning(
            "%s lost a conflict (%s); running it again (retry %d of %d) in %.3f s",
            self.what,
            exc,
            self.retries - self.left,
            self.retries,
            delay,
        )
        return delay


def run_transaction(
    pool: TransactionPool,
    func: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    retries: int,
) -> T:
    """``func(cursor, *args, **kwargs)`` in a transaction of its own
    (blocking), run again up to *retries* times after a conflict."""
    left = Retries(retries, name_of(func))
    while True:
        try:
            with pool.fetch() as cursor:
                return func(cursor, *args, **kwargs)
        except Exception as exc:
            delay = left.delay_after(exc)
            if delay is None:
                raise
        time.sleep(delay)


async def arun_transaction(
    pool: TransactionPool,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    retries: int,
) -> Any:
    """:func:`run_transaction` for the event loop: an async *func* gets an
    :class:`AsyncPoolCursor`, a sync one a MySQLdb cursor in a worker thread."""
    left = Retries(retries, name_of(func))
    while True:
        try:
            return await _arun_once(pool, func, args, kwargs)
        except Exception as exc:
            delay = left.delay_after(exc)
            if delay is None:
                raise
        await anyio.sleep(delay)


async def _arun_once(
    pool: TransactionPool,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    if is_async(func):
        async with pool.cursor() as cursor:
            return await func(cursor, *args, **kwargs)
    async with pool.lease() as cursor:
        call: Callable[[], Awaitable[Any] | Any] = functools.partial(
            func, cursor, *args, **kwargs
        )
        return await anyio.to_thread.run_sync(call)


def is_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an async __call__
    )


def name_of(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


class Transactions:
    """:class:`Pool`'s transaction runners (a mixin: the pool lends cursors)."""

    def run_transaction(
        self, func: Callable[..., T], /, *args: Any, retries: int = 0, **kwargs: Any
    ) -> T:
        """``func(cursor, *args, **kwargs)`` in a transaction of its own, as in
        :meth:`Pool.fetch` (blocking: use in threads); its result.

        After a conflict (deadlock 1213, lock wait timeout 1205, a Galera
        certification failure) the whole transaction runs again, up to
        *retries* times, after a short jittered wait (each retry is logged);
        never after any other error, nor after a COMMIT whose answer was lost.
        """
        pool: TransactionPool = self  # type: ignore[assignment]
        return run_transaction(pool, func, args, kwargs, retries=retries)

    async def arun_transaction(
        self, func: Callable[..., Any], /, *args: Any, retries: int = 0, **kwargs: Any
    ) -> Any:
        """:meth:`run_transaction` for the event loop: an async *func* gets an
        :class:`AsyncPoolCursor`; a sync one a cursor, in a worker thread."""
        pool: TransactionPool = self  # type: ignore[assignment]
        return await arun_transaction(pool, func, args, kwargs, retries=retries)
