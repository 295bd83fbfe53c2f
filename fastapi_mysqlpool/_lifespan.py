"""``mysql_pool_lifespan``: the pool lives as long as the app."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any, cast, overload

import anyio
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
from ._replicas import (
    DEFAULT_MAX_REPLICA_LAG,
    ReplicaSet,
    replica_config,
    replica_pool_options,
)

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
    replicas: Sequence[Mapping[str, Any] | str] | None = ...,
    replica_max_size: int | None = ...,
    max_replica_lag: float = ...,
    replica_fallback: bool = ...,
    replica_lag_query: str | None = ...,
    **options: Unpack[PoolOptions],
) -> StatefulLifespan: ...


@overload
def mysql_pool_lifespan(
    cfg: Mapping[str, Any] | str,
    *,
    lifespan: StatelessLifespan | None = ...,
    shutdown_timeout: float = ...,
    handle_errors: bool = ...,
    replicas: Sequence[Mapping[str, Any] | str] | None = ...,
    replica_max_size: int | None = ...,
    max_replica_lag: float = ...,
    replica_fallback: bool = ...,
    replica_lag_query: str | None = ...,
    **options: Unpack[PoolOptions],
) -> StatelessLifespan: ...


def mysql_pool_lifespan(
    cfg: Mapping[str, Any] | str,
    *,
    lifespan: StatelessLifespan | StatefulLifespan | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    handle_errors: bool = True,
    replicas: Sequence[Mapping[str, Any] | str] | None = None,
    replica_max_size: int | None = None,
    max_replica_lag: float = DEFAULT_MAX_REPLICA_LAG,
    replica_fallback: bool = True,
    replica_lag_query: str | None = None,
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

    *replicas* (dicts or URLs; the primary's user, password, database and
    options fill in what they lack) take the read cursors (``ReadCursor``,
    ``AsyncReadCursor``...), each with a pool of its own of at most
    *replica_max_size* connections (default: the primary's ``max_size``). A
    replica whose replication is stopped or broken, that is unreachable or
    more than *max_replica_lag* seconds behind (default 5; checked about once
    a second) takes no new reads until it is healthy again; with none
    healthy, reads go to the primary (*replica_fallback*, default) or fail
    with 503, code 1. The lag is ``SHOW REPLICA STATUS``'s (the user needs
    ``SLAVE MONITOR`` or ``REPLICATION CLIENT``), or what
    *replica_lag_query* returns (seconds, from a heartbeat table).
    """
    config = make_config(cfg)
    # Fail where the app is defined, not at its first startup.
    settings = Settings.of(options)
    follow_thread_limit = settings.max_size is None
    check_shutdown_timeout(shutdown_timeout)
    replica_configs = [replica_config(config, each) for each in replicas or ()]
    replica_options = replica_pool_options(
        options, replica_max_size, max_replica_lag=max_replica_lag
    )
    replicas_follow_thread_limit = replica_options.get("max_size") is None
    if lifespan is not None and inspect.isasyncgenfunction(lifespan):
        lifespan = asynccontextmanager(lifespan)  # as Starlette accepts it

    @asynccontextmanager
    async def pool_lifespan(app: Any) -> AsyncIterator[State | None]:
        _require_asyncio()
        pool = Pool(config, open=False, **options)
        register(app, pool)  # refuses a second start of a running app
        replica_set = None
        try:
            await pool.aopen()
            if replica_configs:
                replica_set = ReplicaSet(
                    pool,
                    replica_configs,
                    options=replica_options,
                    max_lag=max_replica_lag,
                    fallback=replica_fallback,
                    lag_query=replica_lag_query,
                )
                pool.read_router = replica_set
                await replica_set.aopen()
            _install(app, pool, handle_errors)
            async with nullcontext() if lifespan is None else lifespan(app) as state:
                if follow_thread_limit:
                    # The default follows the worker-thread limit, which the
                    # app's own startup may have just raised (or lowered).
                    pool.set_max_size(default_max_size(pool.size))
                if replica_set is not None and replicas_follow_thread_limit:
                    replica_set.set_max_size(pool.max_size)
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
            if replica_set is None:
                await pool.aclose(shutdown_timeout)
            else:
                async with anyio.create_task_group() as group:
                    group.start_soon(pool.aclose, shutdown_timeout)
                    group.start_soon(replica_set.aclose, shutdown_timeout)
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
