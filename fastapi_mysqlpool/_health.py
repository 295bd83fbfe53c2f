"""``health_router``: liveness and readiness routes for Kubernetes probes.

Liveness never touches the database: a pod restarted because the database is
down comes back to the same database, down.

Readiness proves that this process can get a connection that answers, at
the least cost to a pool that is serving traffic:

- an idle connection: borrowed, one round trip (``DO 1``), given back;
- none idle, a free slot and nobody queued: a connection is opened in it
  (within ``max_size``, kept afterwards, as for any caller);
- every slot taken (or callers queued): *ready*, with no round trip. The
  connections are busy, not broken: the server answered them, and a broken
  one frees its slot at once, after which the next probe opens one and tells.
  The probe never joins the queue, so it never delays a request nor holds a
  connection a request waits for; and failing readiness because of load would
  take every replica out of the Service at once (the cascading failure the
  Kubernetes docs warn about). Requests that wait too long get their own 503
  (code 2). As HikariCP's health check, it borrows within its own timeout.
- while the pool fails fast (the server was just found down) or is closed
  (shutting down): 503 at once, nothing tried.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from . import _aio
from ._context import pool_of
from ._errors import DrainedError, ErrorKind, PoolClosed, PoolTimeout, classify
from ._handlers import RETRY_AFTER
from ._pool import Pool

logger = logging.getLogger("fastapi_mysqlpool")


def health_router(
    *,
    live: str | None = "/healthz",
    ready: str | None = "/readyz",
    timeout: float = 1.0,
    include_in_schema: bool = False,
) -> APIRouter:
    """Routes for Kubernetes probes: ``app.include_router(health_router())``.

    ``GET {live}``: 200 ``{"status": "ok"}`` while the process serves, with no
    database round trip. ``GET {ready}``: 200 ``{"status": "ready", "pool":
    {...}}`` (the pool's :class:`PoolStats`) when a connection answers within
    *timeout* seconds (or all are busy, see the module's notes); else 503 with
    ``Retry-After`` and ``{"status": "unavailable", "code": 1 or 2,
    "message": ...}``. None leaves a route out. Neither answer names the
    server, the user or anything from the configuration.
    """
    if not 0 < timeout < float("inf"):
        raise ValueError(f"timeout must be > 0 and finite, got {timeout}")
    router = APIRouter(include_in_schema=include_in_schema)
    if live is not None:

        @router.get(live)
        async def liveness() -> dict[str, str]:
            return {"status": "ok"}

    if ready is not None:
        failing = False

        @router.get(ready, response_model=None)
        async def readiness(request: Request) -> dict[str, Any] | JSONResponse:
            nonlocal failing
            pool = pool_of(request)
            try:
                await probe(pool, timeout)
            except Exception as exc:
                kind = classify(exc)
                if kind is None:
                    raise
                if kind is not ErrorKind.BUSY:
                    kind = ErrorKind.UNAVAILABLE  # a probe's failure is no bug
                if not failing:  # once per outage: probes run every few seconds
                    logger.warning("not ready: %s: %s", kind.message, exc)
                failing = True
                return JSONResponse(
                    {
                        "status": "unavailable",
                        "code": int(kind),
                        "message": kind.message,
                    },
                    status_code=503,
                    headers={"Retry-After": str(RETRY_AFTER)},
                )
            if failing:
                logger.info("ready again")
            failing = False
            return {"status": "ready", "pool": dataclasses.asdict(pool.stats())}

    return router


async def probe(pool: Pool, timeout: float) -> None:
    """Raise the pool's error unless a connection answers within *timeout*
    seconds (or every slot is busy: see the module's notes)."""
    deadline = time.monotonic() + timeout
    conn = pool.take_idle()
    while conn is not None and conn.looks_dead():  # closed by a server restart
        pool.checkin(conn, reusable=False, failed=True)
        conn = pool.take_idle()
    if conn is None:
        if pool.closing:
            raise PoolClosed()
        if _full(pool):
            return  # busy, not broken
        # Fails fast while the server is down; else opens a connection in the
        # free slot (or, should a request take it first, waits no longer
        # than the probe may).
        try:
            conn = await pool.aacquire(timeout, check=False)
        except PoolTimeout:
            if _full(pool):
                return  # a request took the slot first: busy, not broken
            # The connect took too long: the server does not answer.
            error = DrainedError()  # (mysqlclient-pool's takes no message)
            error.args = (f"no connection to {pool.target} within {timeout:g} s",)
            raise error from None
    conn.used = False  # a timed-out ping is no statement of a caller's to KILL
    try:
        await _aio.ping(conn, max(0.001, deadline - time.monotonic()))
    except Exception:
        pool.checkin(conn, reusable=False, failed=True)
        raise
    except BaseException:  # cancelled: its answer may be unread
        pool.checkin(conn, reusable=False)
        raise
    pool.checkin(conn, reusable=True)


def _full(pool: Pool) -> bool:
    """Every slot taken, or callers queued already."""
    stats = pool.stats()
    return bool(stats.waiting) or stats.size >= stats.max_size
