"""``add_pool_task``: work after the response, on a connection of its own."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.background import BackgroundTasks

from ._context import current_pool
from ._pool import Pool
from ._retry import arun_transaction, check_retries, name_of

logger = logging.getLogger("fastapi_mysqlpool")


def add_pool_task(
    background_tasks: BackgroundTasks,
    func: Callable[..., Any],
    /,
    *args: Any,
    pool: Pool | None = None,
    retries: int = 0,
    **kwargs: Any,
) -> None:
    """Run ``func(cursor, *args, **kwargs)`` after the response.

    The task borrows its own connection when it starts (never the request's,
    which is back in the pool by then), commits if *func* returns and rolls
    back if it raises. A failure is logged with its traceback; the tasks after
    it still run. *pool* defaults to the pool of the app serving the request.

    *retries*: after a conflict (deadlock, lock wait timeout, Galera
    certification failure) the whole task runs again, up to this many times,
    after a short jittered wait; never after any other error.
    """
    check_retries(retries)
    if pool is None:
        pool = current_pool()
        if pool is None:
            raise RuntimeError(
                "add_pool_task() found no pool: call it while serving a request "
                "of an app created with mysql_pool_lifespan(), or pass pool="
            )
    background_tasks.add_task(_run, pool, func, args, kwargs, retries)


async def _run(
    pool: Pool,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    retries: int,
) -> None:
    try:
        await arun_transaction(pool, func, args, kwargs, retries=retries)
    except Exception:
        logger.exception("background task %s failed", name_of(func))
