"""``mysql_pool_lifespan``: the pool lives as long as the app."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, cast, overload

from starlette.middleware.exceptions import ExceptionMiddleware

from ._config import make_config
from ._context import BindPool, register, unregister
from ._handlers import add_handlers
from ._pool import (
    DEFAULT_ACQUIRE_TIMEOUT,
    DEFAULT_MAX_IDLE,
    DEFAULT_MAX_LIFETIME,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_TIMEOUT,
    Pool,
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
    size: int | None = ...,
    fillup: bool = ...,
    timeout: float = ...,
    lifespan: StatefulLifespan,
    max_size: int | None = ...,
    acquire_timeout: float = ...,
    max_lifetime: float | None = ...,
    max_idle: float = ...,
    shutdown_timeout: float = ...,
    handle_errors: bool = ...,
) -> StatefulLifespan: ...


@overload
def mysql_pool_lifespan(
    cfg: Mapping[str, Any] | str,
    *,
    size: int | None = ...,
    fillup: bool = ...,
    timeout: float = ...,
    lifespan: StatelessLifespan | None = ...,
    max_size: int | None = ...,
    acquire_timeout: float = ...,
    max_lifetime: float | None = ...,
    max_idle: float = ...,
    shutdown_timeout: float = ...,
    handle_errors: bool = ...,
) -> StatelessLifespan: ...


def mysql_pool_lifespan(
    cfg: Mapping[str, Any] | str,
    *,
    size: int | None = None,
    fillup: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    lifespan: StatelessLifespan | StatefulLifespan | None = None,
    max_size: int | None = None,
    acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
    max_lifetime: float | None = DEFAULT_MAX_LIFETIME,
    max_idle: float = DEFAULT_MAX_IDLE,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    handle_errors: bool = True,
) -> StatelessLifespan | StatefulLifespan:
    """A lifespan for ``FastAPI(lifespan=...)`` that owns a MySQL pool.

    On startup it opens the pool (with *fillup*, *size* connections, waiting up
    to *timeout* seconds for the server, else failing with
    :class:`PoolStartupError`), registers the error handlers (unless
    *handle_errors* is false; handlers the app set for the same types win) and
    runs the app's own *lifespan* inside, passing its state on. On shutdown,
    borrowed connections get *shutdown_timeout* seconds to come back, then
    every connection is closed.

    *cfg* is a dict of ``MySQLdb.connect`` arguments or a ``mysql://`` URL. The
    other arguments are :class:`Pool`'s.
    """
    config = make_config(cfg)
    pool_options: dict[str, Any] = {
        "size": size,
        "timeout": timeout,
        "fillup": fillup,
        "max_size": max_size,
        "acquire_timeout": acquire_timeout,
        "max_lifetime": max_lifetime,
        "max_idle": max_idle,
    }
    # Fail where the app is defined, not at its first startup.
    Pool.check_options(**pool_options)
    if shutdown_timeout < 0:
        raise ValueError(f"shutdown_timeout must be >= 0, got {shutdown_timeout}")
    if lifespan is not None and inspect.isasyncgenfunction(lifespan):
        lifespan = asynccontextmanager(lifespan)  # as Starlette accepts it

    @asynccontextmanager
    async def pool_lifespan(app: Any) -> AsyncIterator[State | None]:
        pool = Pool(config, open=False, **pool_options)
        try:
            await pool.aopen()
            _install(app, pool, handle_errors)
            logger.info("MySQL pool ready: %r", pool)
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            unregister(app, pool)
            await pool.aclose(shutdown_timeout)
            logger.info("MySQL pool closed: %r", pool)

    # It yields the wrapped lifespan's state, or None without one (the
    # overloads tell callers which); the checker cannot follow that.
    return cast(StatefulLifespan, pool_lifespan)


def _install(app: Any, pool: Pool, handle_errors: bool) -> None:
    """Wire *pool* into *app*'s middleware stack.

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
    register(app, pool)


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
