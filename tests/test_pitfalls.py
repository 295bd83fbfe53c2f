"""The pitfalls (docs/how-to/pitfalls.md), as they behave: the trap and the
pattern that avoids it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient

from fastapi_mysqlpool import AsyncCursor, Cursor, mysql_pool_lifespan

from .servers import Database


@pytest.mark.parametrize(
    ("scope", "committed"),
    [
        # The default ("request") tears down after the response went out: the
        # request's connection is back in the pool and the write is lost.
        (None, False),
        # Torn down before the request's commit, which then includes the write.
        ("function", True),
    ],
)
def test_a_yield_dependency_writing_in_its_teardown(
    db: Database, scope: Any, committed: bool
) -> None:
    table = db.create_table("audit", "what VARCHAR(20)")
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    def audited(cursor: Cursor) -> Iterator[Any]:
        yield cursor
        cursor.execute(f"INSERT INTO {table} VALUES ('done')")

    @app.post("/work")
    def work(cursor: Any = Depends(audited, scope=scope)) -> str:
        cursor.execute("SELECT 1")
        return "ok"

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/work").status_code == 200
    assert db.scalar(f"SELECT COUNT(*) FROM {table}") == int(committed)


def test_a_base_http_middleware_timeout_does_not_stop_the_route(db: Database) -> None:
    """The 504 goes out, yet the route runs on and commits (the docs: use a pure
    ASGI middleware, as tests/middleware.py's Deadline, which rolls back)."""
    table = db.create_table("late", "what VARCHAR(20)")
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    route_done = threading.Event()

    @app.middleware("http")
    async def timeout(request: Request, call_next: Any) -> Any:
        try:
            return await asyncio.wait_for(call_next(request), 0.05)
        except TimeoutError:
            return PlainTextResponse("timeout", 504)

    @app.post("/slow")
    async def slow(cursor: AsyncCursor) -> str:
        await cursor.execute(f"INSERT INTO {table} VALUES ('late')")
        await asyncio.sleep(0.3)
        route_done.set()
        return "ok"

    with TestClient(app) as client:
        assert client.post("/slow").status_code == 504
        assert route_done.wait(5)
    # Leaving the client waited for the route, its commit and the shutdown.
    assert db.scalar(f"SELECT COUNT(*) FROM {table}") == 1
