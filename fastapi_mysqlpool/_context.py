"""Which pool serves the current request, task or app."""

from __future__ import annotations

import threading
import weakref
from contextvars import ContextVar
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from ._leaks import current_scope
from ._pool import Pool

_SCOPE_KEY = "fastapi_mysqlpool.pool"
# Set per request, so add_pool_task() finds the pool without being handed one.
_current_pool: ContextVar[Pool | None] = ContextVar("fastapi_mysqlpool", default=None)
_app_pools: weakref.WeakKeyDictionary[Any, Pool] = weakref.WeakKeyDictionary()
# Two starts of one app may run at once on two event loops (threads).
_app_pools_lock = threading.Lock()

_NO_POOL = (
    "no MySQL pool here: create the app with "
    "FastAPI(lifespan=mysql_pool_lifespan(cfg)) and run it with its lifespan "
    "(uvicorn does; in tests, use `with TestClient(app)`)"
)


class BindPool:
    """Outermost ASGI wrapper: marks each request with the app's pool."""

    def __init__(self, app: ASGIApp, pool: Pool) -> None:
        self.app = app  # `app`: the name middleware-stack walkers follow
        self.pool = pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope[_SCOPE_KEY] = self.pool
        token = _current_pool.set(self.pool)
        try:
            await self.app(scope, receive, send)
        finally:
            _current_pool.reset(token)


class BindPoolWatched(BindPool):
    """:class:`BindPool` for a pool that watches for leaks: it also records
    the request, which a leak warning names (a separate class, so that apps
    that do not watch pay nothing for it)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = current_scope.set(scope)
        try:
            await super().__call__(scope, receive, send)
        finally:
            current_scope.reset(token)


def bind_pool(app: ASGIApp, pool: Pool) -> BindPool:
    return (BindPool if pool.leaks is None else BindPoolWatched)(app, pool)


def register(app: Any, pool: Pool) -> None:
    """Make *pool* the pool of *app*; RuntimeError if another one is running.

    One app object has one middleware stack, hence one pool at a time: a second
    start while the first runs would rebind the app to its own pool, and the
    first start's requests would fail once the second stopped.
    """
    with _app_pools_lock:
        running = _app_pools.get(app)
        if running is not None and running is not pool:
            raise RuntimeError(
                "this app is already running with a MySQL pool: an app object "
                "can be started only once at a time (nested `with "
                "TestClient(app)` blocks, or one app served by two servers in "
                "one process?); stop the first start, or create an app per server"
            )
        _app_pools[app] = pool


def unregister(app: Any, pool: Pool) -> None:
    with _app_pools_lock:
        if _app_pools.get(app) is pool:
            del _app_pools[app]


def current_pool() -> Pool | None:
    """The pool of the request being served in this context, if any."""
    return _current_pool.get()


def pool_of(conn: HTTPConnection) -> Pool:
    pool = conn.scope.get(_SCOPE_KEY)
    if pool is None:
        raise RuntimeError(_NO_POOL)
    return pool  # type: ignore[no-any-return]


def get_pool(request_or_app: Any) -> Pool:
    """The pool of an app started with ``mysql_pool_lifespan``.

    Pass a ``Request`` or ``WebSocket`` (the app that serves it, mounts
    included) or the app itself. Raises ``RuntimeError`` if there is none.
    """
    if isinstance(request_or_app, HTTPConnection):
        return pool_of(request_or_app)
    pool = _app_pools.get(request_or_app)
    if pool is None:
        raise RuntimeError(_NO_POOL)
    return pool
