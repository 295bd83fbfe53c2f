"""Leak detection (``leak_timeout``): who holds a connection too long.

As HikariCP's ``leakDetectionThreshold``: a connection borrowed longer than
the limit gets one WARNING naming who borrowed it (the request's method and
route, else the line of code), and an INFO when it comes back at last.

Nothing here runs unless the option is set: :func:`watch` then wraps the
pool's borrowing and returning methods on that pool object alone, and the app
records each request's scope (:data:`current_scope`); the class's methods,
which every other pool runs, stay as they are.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from contextvars import ContextVar
from types import CodeType, FrameType
from typing import Any

import anyio

logger = logging.getLogger("fastapi_mysqlpool")

#: The ASGI scope of the request being served (set only when leaks are watched).
current_scope: ContextVar[MutableMapping[str, Any] | None] = ContextVar(
    "fastapi_mysqlpool.scope", default=None
)

# A borrow's place in the code is the first frame outside these: the library,
# the context managers and the machinery that runs threads and tasks.
_PACKAGES = (__file__, asyncio.__file__, anyio.__file__, concurrent.futures.__file__)
_SKIPPED = (
    *(os.path.dirname(path) + os.sep for path in _PACKAGES),
    contextlib.__file__,
    threading.__file__,
)


def _call_site() -> tuple[CodeType, int] | None:
    """The code and line that borrowed (formatted only for a warning)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if not code.co_filename.startswith(_SKIPPED):
            return code, frame.f_lineno
        frame = frame.f_back
    return None  # pragma: no cover


def _describe_scope(scope: MutableMapping[str, Any]) -> str:
    """``GET /items/{item_id}``: the route as declared, else the path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    path = scope.get("root_path", "") + path if path else scope.get("path", "?")
    return f"{scope.get('method', 'WEBSOCKET')} {path}"


class _Borrow:
    __slots__ = ("at", "reported", "scope", "site")

    def __init__(self, at: float) -> None:
        self.at = at
        self.reported = False
        # The request's scope (described only if a warning is due), or the
        # place in the code, which must be read now: the frame moves on.
        self.scope = current_scope.get()
        self.site = None if self.scope is not None else _call_site()

    def who(self) -> str:
        if self.scope is not None:
            return _describe_scope(self.scope)
        if self.site is None:
            return "an unknown place"  # pragma: no cover
        code, line = self.site
        return f"{code.co_filename}:{line} in {code.co_name}"


class LeakDetector:
    """The connections lent and since when; :meth:`check` reports those
    held longer than *timeout*.

    Borrowing and returning happen on the event loop and in any thread:
    each touches the dict once (atomic under the GIL), with no lock to wait for.
    """

    def __init__(self, timeout: float, target: str) -> None:
        self.timeout = timeout
        self.target = target
        self._held: dict[object, _Borrow] = {}

    def borrowed(self, conn: object) -> None:
        self._held[conn] = _Borrow(time.monotonic())

    def returned(self, conn: object) -> None:
        borrow = self._held.pop(conn, None)
        if borrow is not None and borrow.reported:
            logger.info(
                "the connection to %s reported as leaked by %s came back after %.1f s",
                self.target,
                borrow.who(),
                time.monotonic() - borrow.at,
            )

    def check(self, now: float) -> tuple[int, float | None]:
        """Warn once about each connection held past the timeout; returns how
        many were new, and when the next one falls due (None: none held)."""
        new = 0
        due: float | None = None
        for borrow in self._held.copy().values():
            if borrow.reported:
                continue
            at = borrow.at + self.timeout
            if now < at:
                due = at if due is None else min(due, at)
                continue
            borrow.reported = True
            new += 1
            logger.warning(
                "a connection to %s has been held for %.1f s (leak_timeout=%g s) "
                "by %s, and is not back yet",
                self.target,
                now - borrow.at,
                self.timeout,
                borrow.who(),
            )
        return new, due


def watch(pool: Any, timeout: float | None, target: str) -> LeakDetector | None:
    """With a *timeout*, record every borrow and return of *pool* (this
    object only) in the detector returned; else None, and nothing changes."""
    if timeout is None:
        return None
    detector = LeakDetector(timeout, target)
    take_idle: Callable[[], Any] = pool.take_idle
    acquire: Callable[..., Any] = pool.acquire
    aacquire: Callable[..., Any] = pool.aacquire
    checkin: Callable[..., None] = pool.checkin
    borrowed, returned = detector.borrowed, detector.returned

    def take_idle_watched() -> Any:
        conn = take_idle()
        if conn is not None:
            borrowed(conn)
        return conn

    # Arguments passed on as they come: whatever the methods take.
    def acquire_watched(*args: Any, **kwargs: Any) -> Any:
        conn = acquire(*args, **kwargs)
        borrowed(conn)
        return conn

    async def aacquire_watched(*args: Any, **kwargs: Any) -> Any:
        conn = await aacquire(*args, **kwargs)
        borrowed(conn)
        return conn

    def checkin_watched(conn: Any, *args: Any, **kwargs: Any) -> None:
        returned(conn)
        checkin(conn, *args, **kwargs)

    vars(pool).update(
        take_idle=take_idle_watched,
        acquire=acquire_watched,
        aacquire=aacquire_watched,
        checkin=checkin_watched,
    )
    return detector
