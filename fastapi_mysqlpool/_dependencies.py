"""Dependencies that lend a request a cursor on a connection of its own."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Annotated, Any, TypeVar

import MySQLdb.cursors
from fastapi import Depends
from starlette.requests import HTTPConnection

from ._async_cursor import AsyncPoolCursor
from ._context import pool_of
from ._cursors import leased_cursor_class
from ._lease import Lease
from ._read_lease import read_lease_maker

logger = logging.getLogger("fastapi_mysqlpool")

CursorT = TypeVar("CursorT")

# FastAPI (>= 0.121, where Depends(scope="function") appeared) unwinds this exit
# stack after the route returns and before the response is sent: a lease ended
# there commits first, so a failed COMMIT becomes an error response instead of
# following a 200. A websocket endpoint has one too, unwound when it returns.
# Pushing onto it directly, rather than writing the lease as a yield dependency
# with scope="function", also spares FastAPI's generator machinery on every
# request; tests/test_fastapi_internals.py pins the key.
_FUNCTION_STACK = "fastapi_function_astack"


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


def _function_stack(request: HTTPConnection) -> AsyncExitStack:
    """The request's function-scoped exit stack (see _FUNCTION_STACK)."""
    try:
        stack: AsyncExitStack = request.scope[_FUNCTION_STACK]
    except KeyError:
        raise RuntimeError(
            "fastapi_mysqlpool's dependencies need FastAPI >= 0.121 "
            "(function-scoped dependencies)"
        ) from None
    return stack


def _cursor_dependency(
    name: str,
    returns: type[CursorT],
    doc: str,
    *,
    cursor_class: type[MySQLdb.cursors.BaseCursor] | None = None,
    dict_rows: bool = False,
    reads: bool = False,
) -> Callable[[HTTPConnection], Coroutine[Any, Any, CursorT]]:
    """The dependency *name* (documented by *doc*), which lends each request
    a cursor: of *cursor_class* (a MySQLdb one, blocking), or without one an
    :class:`AsyncPoolCursor` (rows as dicts if *dict_rows*). With *reads*, a
    read cursor (see _read_lease), on a replica if the pool has replicas."""
    if reads:
        return _read_dependency(name, returns, doc, cursor_class, dict_rows=dict_rows)

    # A closure, not a helper called per request: a dependency's cost is paid
    # by every request. FastAPI reads its signature once.
    async def dependency(request: HTTPConnection) -> Any:
        if cursor_class is not None:
            _warn_if_blocking(request)
        stack = _function_stack(request)
        pool = pool_of(request)
        # Written out rather than in a helper coroutine (one less per
        # request). Lent unchecked: the check runs before the first
        # statement, where it costs least (see Lease). Never blocks the loop.
        conn = pool.take_idle() or await pool.aacquire(
            pool.acquire_timeout, check=False
        )
        try:
            if cursor_class is None:
                lease = Lease.of_async_cursor(
                    pool, conn, dict_rows=dict_rows, checked=False
                )
            else:
                lease = Lease.of_cursor(
                    pool, conn, cursor_class=cursor_class, checked=False
                )
            stack.push_async_exit(lease)
        except BaseException:
            pool.checkin(conn, reusable=False)
            raise
        return lease.cursor

    dependency.__name__ = dependency.__qualname__ = name
    dependency.__doc__ = doc
    dependency.__annotations__["return"] = returns
    return dependency


def _read_dependency(
    name: str,
    returns: type[CursorT],
    doc: str,
    cursor_type: type[MySQLdb.cursors.BaseCursor] | None,
    *,
    dict_rows: bool,
) -> Callable[[HTTPConnection], Coroutine[Any, Any, CursorT]]:
    """:func:`_cursor_dependency` for read cursors."""
    make = read_lease_maker(cursor_type, dict_rows=dict_rows)
    blocking = cursor_type is not None

    async def dependency(request: HTTPConnection) -> Any:
        if blocking:
            _warn_if_blocking(request)
        stack = _function_stack(request)
        pool = pool_of(request)
        router = pool.read_router
        # (borrow_for_read, written out: one coroutine less)
        if router is None or pool.pinned is not None:
            lender: Any = pool
            conn = pool.take_idle() or await pool.aacquire(
                pool.acquire_timeout, check=False
            )
        else:
            lender, conn = await router.aborrow()
        try:
            lease = make(lender, conn)
            stack.push_async_exit(lease)
        except BaseException:
            lender.checkin(conn, reusable=False)
            raise
        return lease.cursor

    dependency.__name__ = dependency.__qualname__ = name
    dependency.__doc__ = doc
    dependency.__annotations__["return"] = returns
    return dependency


get_cursor = _cursor_dependency(
    "get_cursor",
    MySQLdb.cursors.Cursor,
    """A cursor on a connection dedicated to this request (rows as tuples).

    The transaction commits after the route returns, before the response is
    sent; any exception (``HTTPException`` and cancellation included) rolls it
    back. The connection then goes back to the pool and the cursor refuses any
    further use. Its queries block the calling thread: for ``def`` routes (in
    ``async def`` routes, use :func:`get_async_cursor`). In a websocket
    endpoint, the transaction lasts until the endpoint returns.
    """,
    cursor_class=leased_cursor_class(MySQLdb.cursors.Cursor),
)
get_dict_cursor = _cursor_dependency(
    "get_dict_cursor",
    MySQLdb.cursors.DictCursor,
    """:func:`get_cursor` with rows as dicts.""",
    cursor_class=leased_cursor_class(MySQLdb.cursors.DictCursor),
)
get_async_cursor = _cursor_dependency(
    "get_async_cursor",
    AsyncPoolCursor[tuple[Any, ...]],
    """An async cursor for ``async def`` routes (rows as tuples).

    ``await cursor.execute(...)``, ``await cursor.fetchone()``... never block the
    event loop and need no worker thread. Same contract as :func:`get_cursor`:
    commit before the response, rollback on any exception, unusable after.
    """,
)
get_async_dict_cursor = _cursor_dependency(
    "get_async_dict_cursor",
    AsyncPoolCursor[dict[str, Any]],
    """:func:`get_async_cursor` with rows as dicts.""",
    dict_rows=True,
)


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


get_read_cursor = _cursor_dependency(
    "get_read_cursor",
    MySQLdb.cursors.Cursor,
    """A read cursor (rows as tuples): for ``def`` routes that only read.

    Its statements run in autocommit, each one round trip: no COMMIT (nor
    ROLLBACK) at the end. A statement that may write is refused before it is
    sent (:class:`ReadOnlyError`, answered as code 0). With ``replicas=``, it
    runs on a healthy replica (else the primary, see ``replica_fallback``).
    Like :func:`get_cursor`, it is given back before the response and refuses
    any use afterwards.
    """,
    cursor_class=MySQLdb.cursors.Cursor,
    reads=True,
)
get_read_dict_cursor = _cursor_dependency(
    "get_read_dict_cursor",
    MySQLdb.cursors.DictCursor,
    """:func:`get_read_cursor` with rows as dicts.""",
    cursor_class=MySQLdb.cursors.DictCursor,
    reads=True,
)
get_async_read_cursor = _cursor_dependency(
    "get_async_read_cursor",
    AsyncPoolCursor[tuple[Any, ...]],
    """:func:`get_read_cursor` for ``async def`` routes: an
    :class:`AsyncPoolCursor` that never blocks the event loop.""",
    reads=True,
)
get_async_read_dict_cursor = _cursor_dependency(
    "get_async_read_dict_cursor",
    AsyncPoolCursor[dict[str, Any]],
    """:func:`get_async_read_cursor` with rows as dicts.""",
    dict_rows=True,
    reads=True,
)

#: ``def route(cursor: ReadCursor)``: ``Depends(get_read_cursor)``, typed.
ReadCursor = Annotated[MySQLdb.cursors.Cursor, Depends(get_read_cursor)]
#: ``def route(cursor: ReadDictCursor)``: ``Depends(get_read_dict_cursor)``.
ReadDictCursor = Annotated[MySQLdb.cursors.DictCursor, Depends(get_read_dict_cursor)]
#: ``async def route(cursor: AsyncReadCursor)``: ``Depends(get_async_read_cursor)``.
AsyncReadCursor = Annotated[
    AsyncPoolCursor[tuple[Any, ...]], Depends(get_async_read_cursor)
]
#: ``async def route(cursor: AsyncReadDictCursor)``:
#: ``Depends(get_async_read_dict_cursor)``.
AsyncReadDictCursor = Annotated[
    AsyncPoolCursor[dict[str, Any]], Depends(get_async_read_dict_cursor)
]
