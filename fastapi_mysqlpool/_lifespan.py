"""``mysql_pool_lifespan``: the pool lives as long as the app."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any, cast, overload

from starlette.applications import Starlette
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import BaseRoute, Host, Mount
from typing_extensions import Unpack

from ._config import make_config
from ._context import BindPool, register, unregister
from ._handlers import add_handlers
from ._options import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    PoolOptions,
    Settings,
    check_shutdown_timeout,
    default_max_size,
)
from ._pinning import serving, stopped
from ._pool import Pool

logger = logging.getLogger("fastapi_mysqlpool")

State = Mapping[str, Any]
#: A lifespan, as Starlette types them: with or without state.
StatelessLifespan = Callable[[Any], AbstractAsyncContextManager[None]]
StatefulLifespan = Callable[[Any], AbstractAsyncContextManager[State]]


@overload
def mysql_pool_lifespan(
    cfg: Mapping[str, Any] | str,
    *,
    lifespan: StatefulLifespan,
    shutdown_timeout: float = ...,
    handle_errors: bool = ...,
    **options: Unpack[PoolOptions],
) -> StatefulLifespan: ...


@overload
def mysql_pool_lifespan(
    cfg: Mapping[str, Any] | str,
    *,
    lifespan: StatelessLifespan | None = ...,
    shutdown_timeout: float = ...,
    handle_errors: bool = ...,
    **options: Unpack[PoolOptions],
) -> StatelessLifespan: ...


def mysql_pool_lifespan(
    cfg: Mapping[str, Any] | str,
    *,
    lifespan: StatelessLifespan | StatefulLifespan | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    handle_errors: bool = True,
    **options: Unpack[PoolOptions],
) -> StatelessLifespan | StatefulLifespan:
    """A lifespan for ``FastAPI(lifespan=...)`` that owns a MySQL pool.

    On startup it opens the pool (with *fillup*, *size* connections, waiting up
    to *timeout* seconds for the server, else failing with
    :class:`PoolStartupError`), registers the error handlers in the app and
    the apps mounted in it (unless *handle_errors* is false; handlers an app
    set for the same types win) and runs the app's own *lifespan* inside,
    passing its state on. On shutdown, borrowed connections get
    *shutdown_timeout* seconds to come back, then every connection is closed.

    An app runs one pool at a time: a second start while one runs raises
    ``RuntimeError``; so does an event loop other than asyncio's (trio).

    *cfg* is a dict of ``MySQLdb.connect`` arguments or a ``mysql://`` URL;
    *options* are :class:`Pool`'s (see :class:`PoolOptions`).
    """
    config = make_config(cfg)
    # Fail where the app is defined, not at its first startup.
    follow_thread_limit = Settings.of(options).max_size is None
    check_shutdown_timeout(shutdown_timeout)
    if lifespan is not None and inspect.isasyncgenfunction(lifespan):
        lifespan = asynccontextmanager(lifespan)  # as Starlette accepts it

    @asynccontextmanager
    async def pool_lifespan(app: Any) -> AsyncIterator[State | None]:
        _require_asyncio()
        pool = Pool(config, open=False, **options)
        register(app, pool)  # refuses a second start of a running app
        try:
            await pool.aopen()
            _install(app, pool, handle_errors)
            async with nullcontext() if lifespan is None else lifespan(app) as state:
                if follow_thread_limit:
                    # The default follows the worker-thread limit, which the
                    # app's own startup may have just raised (or lowered).
                    pool.set_max_size(default_max_size(pool.size))
                logger.info("MySQL pool ready: %r", pool)
                # Pinned while a test's Rollback is active: requests, not
                # the app's own startup and shutdown (schema, seed data).
                serving(pool)
                try:
                    yield state
                finally:
                    stopped(pool)
        finally:
            unregister(app, pool)
            await pool.aclose(shutdown_timeout)
            logger.info("MySQL pool closed: %r", pool)

    # It yields the wrapped lifespan's state, or None without one (the
    # overloads tell callers which); the checker cannot follow that.
    return cast(StatefulLifespan, pool_lifespan)


def _require_asyncio() -> None:
    """The async paths wait on sockets through asyncio's loop.add_reader: on
    another event loop every request would fail; fail at startup instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "fastapi_mysqlpool needs asyncio's event loop (or uvloop); this app "
            f"runs on {_async_library()}: run it on asyncio (uvicorn's default; "
            "anyio's backend='asyncio')"
        ) from None


def _async_library() -> str:
    sniffio = sys.modules.get("sniffio")  # trio imports it: no dependency of ours
    if sniffio is not None:
        with contextlib.suppress(Exception):
            return str(sniffio.current_async_library())
    return "another event loop"


def _install(app: Any, pool: Pool, handle_errors: bool) -> None:
    """Wire *pool* into *app*'s middleware stack, and the error handlers into
    the app and the apps mounted in it.

    Starlette builds the stack when the app first runs, which is before lifespan
    startup: handlers added to the app now would be ignored. They go into the
    stack's ExceptionMiddleware instead; the stack is only built again (which
    creates the app's middleware anew) if there is none to be found.
    """
    added = add_handlers(app) if handle_errors else {}
    stack = app.middleware_stack
    if isinstance(stack, BindPool):  # started before: rebind below
        stack = stack.app
    if stack is None or (added and not _add_to_built_stack(stack, added)):
        stack = app.build_middleware_stack()
    app.middleware_stack = BindPool(stack, pool)
    if handle_errors:
        for mounted in _mounted_apps(app):
            _add_handlers_to_mounted(mounted)


def _add_handlers_to_mounted(app: Starlette) -> None:
    """A mounted app answers its routes' errors through its own
    ExceptionMiddleware, which the enclosing app's handlers never reach (its
    ServerErrorMiddleware answers a plain 500 first): it needs them too."""
    added = add_handlers(app)
    stack = app.middleware_stack
    if added and stack is not None and not _add_to_built_stack(stack, added):
        app.middleware_stack = None  # rebuilt, with them, on its next request


def _mounted_apps(app: Any) -> Iterator[Starlette]:
    """The Starlette (FastAPI) apps mounted in *app*, at any depth: through
    Mount and Host routes, Routers, and middleware that wrap an app."""
    seen = {id(app)}
    pending: list[BaseRoute] = list(getattr(app, "routes", ()))
    while pending:
        route = pending.pop()
        if not isinstance(route, (Mount, Host)) or id(route) in seen:
            continue
        seen.add(id(route))
        mounted = _unwrap(route.app)
        if mounted is None:
            # A Router (no exception middleware of its own: the enclosing
            # app's handlers apply), whose routes may mount apps in turn.
            pending.extend(route.routes)
        elif id(mounted) not in seen:
            seen.add(id(mounted))
            yield mounted
            pending.extend(mounted.routes)


def _unwrap(app: Any) -> Starlette | None:
    """The Starlette app inside *app*'s middleware wrappers, if any."""
    walked: set[int] = set()
    while app is not None and id(app) not in walked:
        if isinstance(app, Starlette):
            return app
        walked.add(id(app))
        app = getattr(app, "app", None)  # how middleware hold the next one
    return None


def _add_to_built_stack(stack: Any, handlers: dict[Any, Any]) -> bool:
    """Add *handlers* to the ExceptionMiddleware in *stack*; False if none."""
    seen: set[int] = set()
    while stack is not None and id(stack) not in seen:
        seen.add(id(stack))
        if isinstance(stack, ExceptionMiddleware):
            for exc_type, handler in handlers.items():
                stack.add_exception_handler(exc_type, handler)
            return True
        stack = getattr(stack, "app", None)  # how middleware hold the next one
    return False
