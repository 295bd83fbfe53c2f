"""Dependencies that lend a request a cursor on a connection of its own."""

from __future__ import annotations

import inspect
import logging
from contextlib import AsyncExitStack
from typing import Annotated, Any

import MySQLdb.cursors
from fastapi import Depends
from starlette.requests import HTTPConnection

from ._async_cursor import AsyncPoolCursor
from ._context import pool_of
from ._cursors import leased_cursor_class
from ._lease import Lease
from ._pool import Pool

logger = logging.getLogger("fastapi_mysqlpool")

_TupleCursor = leased_cursor_class(MySQLdb.cursors.Cursor)
_DictCursor = leased_cursor_class(MySQLdb.cursors.DictCursor)

# FastAPI (>= 0.121, where Depends(scope="function") appeared) unwinds this exit
# stack after the route returns and before the response is sent: a lease ended
# there commits first, so a failed COMMIT becomes an error response instead of
# following a 200. A websocket endpoint has one too, unwound when it returns.
# Pushing onto it directly, rather than writing the lease as a yield dependency
# with scope="function", also spares FastAPI's generator machinery on every
# request; tests/test_fastapi_internals.py pins the key.
_FUNCTION_STACK = "fastapi_function_astack"


def _request_pool(request: HTTPConnection) -> tuple[Pool, AsyncExitStack]:
    try:
        stack: AsyncExitStack = request.scope[_FUNCTION_STACK]
    except KeyError:
        raise RuntimeError(
            "fastapi_mysqlpool's dependencies need FastAPI >= 0.121 "
            "(function-scoped dependencies)"
        ) from None
    return pool_of(request), stack


# Each dependency below borrows with `pool.take_idle() or await
# pool._aacquire(...)`, written out rather than in a helper coroutine (one
# less per request). The connection is lent unchecked: the check runs before
# the first statement, where it costs least (see Lease). Borrowing never
# blocks the event loop.


def _lend(stack: AsyncExitStack, pool: Pool, conn: Any, make: Any, *args: Any) -> Any:
    try:
        lease: Lease = make(pool, conn, *args)
        stack.push_async_exit(lease)
    except BaseException:
        pool._checkin(conn, reusable=False)
        raise
    return lease.cursor


# Endpoint -> whether it is an async def route (checked once per endpoint).
_async_endpoints: dict[Any, bool] = {}


def _warn_if_blocking(request: HTTPConnection) -> None:
    """A sync cursor in an ``async def`` route blocks the event loop for each
    query, stalling every other request: say so, once per route."""
    route = request.scope.get("route")
    endpoint = getattr(route, "endpoint", None)
    if endpoint is None:
        return
    is_async = _async_endpoints.get(endpoint)
    if is_async is None:
        is_async = _async_endpoints[endpoint] = inspect.iscoroutinefunction(endpoint)
        if is_async:
            logger.warning(
                "%s is an async def route with a blocking cursor (get_cursor): "
                "each query blocks the event loop, and every other request with "
                "it. Use get_async_cursor (AsyncCursor) there, or a def route.",
                getattr(route, "path", endpoint),
            )


async def get_cursor(request: HTTPConnection) -> MySQLdb.cursors.Cursor:
    """A cursor on a connection dedicated to this request (rows as tuples).

    The transaction commits after the route returns, before the response is
    sent; any exception (``HTTPException`` and cancellation included) rolls it
    back. The connection then goes back to the pool and the cursor refuses any
    further use. Its queries block the calling thread: for ``def`` routes (in
    ``async def`` routes, use :func:`get_async_cursor`). In a websocket
    endpoint, the transaction lasts until the endpoint returns.
    """
    _warn_if_blocking(request)
    pool, stack = _request_pool(request)
    conn = pool.take_idle() or await pool._aacquire(pool.acquire_timeout, check=False)
    return _lend(stack, pool, conn, Lease.of_cursor, _TupleCursor, False)  # type: ignore[no-any-return]


async def get_dict_cursor(request: HTTPConnection) -> MySQLdb.cursors.DictCursor:
    """:func:`get_cursor` with rows as dicts."""
    _warn_if_blocking(request)
    pool, stack = _request_pool(request)
    conn = pool.take_idle() or await pool._aacquire(pool.acquire_timeout, check=False)
    return _lend(stack, pool, conn, Lease.of_cursor, _DictCursor, False)  # type: ignore[no-any-return]


async def get_async_cursor(request: HTTPConnection) -> AsyncPoolCursor[tuple[Any, ...]]:
    """An async cursor for ``async def`` routes (rows as tuples).

    ``await cursor.execute(...)``, ``await cursor.fetchone()``... never block the
    event loop and need no worker thread. Same contract as :func:`get_cursor`:
    commit before the response, rollback on any exception, unusable after.
    """
    pool, stack = _request_pool(request)
    conn = pool.take_idle() or await pool._aacquire(pool.acquire_timeout, check=False)
    return _lend(stack, pool, conn, Lease.of_async_cursor, False, False)  # type: ignore[no-any-return]


async def get_async_dict_cursor(
    request: HTTPConnection,
) -> AsyncPoolCursor[dict[str, Any]]:
    """:func:`get_async_cursor` with rows as dicts."""
    pool, stack = _request_pool(request)
    conn = pool.take_idle() or await pool._aacquire(pool.acquire_timeout, check=False)
    return _lend(stack, pool, conn, Lease.of_async_cursor, True, False)  # type: ignore[no-any-return]


#: ``def route(cursor: Cursor)``: the typed form of ``Depends(get_cursor)``.
Cursor = Annotated[MySQLdb.cursors.Cursor, Depends(get_cursor)]
#: ``def route(cursor: DictCursor)``: the typed form of ``Depends(get_dict_cursor)``.
DictCursor = Annotated[MySQLdb.cursors.DictCursor, Depends(get_dict_cursor)]
#: ``async def route(cursor: AsyncCursor)``: ``Depends(get_async_cursor)``, typed.
AsyncCursor = Annotated[AsyncPoolCursor[tuple[Any, ...]], Depends(get_async_cursor)]
#: ``async def route(cursor: AsyncDictCursor)``: ``Depends(get_async_dict_cursor)``.
AsyncDictCursor = Annotated[
    AsyncPoolCursor[dict[str, Any]], Depends(get_async_dict_cursor)
]
