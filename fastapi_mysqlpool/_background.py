"""``add_pool_task``: work after the response, on a connection of its own."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.background import BackgroundTasks

from ._context import current_pool
from ._pool import Pool

logger = logging.getLogger("fastapi_mysqlpool")


def add_pool_task(
    background_tasks: BackgroundTasks,
    func: Callable[..., Any],
    /,
    *args: Any,
    pool: Pool | None = None,
    **kwargs: Any,
) -> None:
    """Run ``func(cursor, *args, **kwargs)`` after the response.

    The task borrows its own connection when it starts (never the request's,
    which is back in the pool by then), commits if *func* returns and rolls
    back if it raises. A failure is logged with its traceback; the tasks after
    it still run. *pool* defaults to the pool of the app serving the request.
    """
    if pool is None:
        pool = current_pool()
        if pool is None:
            raise RuntimeError(
                "add_pool_task() found no pool: call it while serving a request "
                "of an app created with mysql_pool_lifespan(), or pass pool="
            )
    background_tasks.add_task(_run, pool, func, args, kwargs)


async def _run(
    pool: Pool, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    try:
        if _is_async(func):
            async with pool.cursor() as cursor:
                await func(cursor, *args, **kwargs)
        else:
            async with pool.lease() as cursor:
                call = functools.partial(func, cursor, *args, **kwargs)
                await anyio.to_thread.run_sync(call)
    except Exception:
        logger.exception("background task %s failed", _name(func))


def _is_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an async __call__
    )


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)
