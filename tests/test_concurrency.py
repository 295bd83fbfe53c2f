"""Under load, through a real uvicorn server, a connection serves one request at
a time and the server never sees more than max_size connections."""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict

import anyio
import httpx
import pytest
from fastapi import FastAPI

from fastapi_mysqlpool import Cursor, get_pool, mysql_pool_lifespan

from .servers import Database, serve

REQUESTS = 120
MAX_SIZE = 20


@pytest.mark.anyio
async def test_concurrent_requests_never_share_a_connection(db: Database) -> None:
    app = FastAPI(
        lifespan=mysql_pool_lifespan(
            db.cfg, size=5, max_size=MAX_SIZE, acquire_timeout=60
        )
    )
    intervals: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    peak_server_connections = 0
    lock = threading.Lock()

    @app.get("/work")
    def work(cursor: Cursor) -> int:
        started = time.monotonic()
        # Long enough that a shared connection would overlap another request.
        cursor.execute("SELECT CONNECTION_ID(), SLEEP(0.01)")
        connection_id = int(cursor.fetchone()[0])
        cursor.execute("SELECT CONNECTION_ID()")
        assert cursor.fetchone()[0] == connection_id
        with lock:
            intervals[connection_id].append(
                (started, time.monotonic(), threading.get_ident())
            )
        return connection_id

    with serve(app) as url:
        limits = httpx.Limits(max_connections=REQUESTS)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
            statuses: list[int] = []

            async def one() -> None:
                response = await client.get("/work")
                statuses.append(response.status_code)

            async def watch_server() -> None:
                nonlocal peak_server_connections
                while len(statuses) < REQUESTS:
                    count = await anyio.to_thread.run_sync(db.connection_count)
                    peak_server_connections = max(peak_server_connections, count)

            async with anyio.create_task_group() as group:
                group.start_soon(watch_server)
                for _ in range(REQUESTS):
                    group.start_soon(one)
        stats = get_pool(app).stats()

    assert statuses == [200] * REQUESTS
    assert sum(len(spans) for spans in intervals.values()) == REQUESTS
    assert len(intervals) <= MAX_SIZE
    for connection_id, spans in intervals.items():
        spans.sort()
        for (_, end, _), (start, _, _) in itertools.pairwise(spans):
            assert end <= start, (
                f"connection {connection_id} served two requests at once"
            )
    assert 0 < peak_server_connections <= MAX_SIZE
    assert stats.in_use == 0
    assert stats.wait_time > 0  # the queue was used: 120 requests, 20 connections
    assert stats.opened <= MAX_SIZE
    assert db.connection_count(settle_at=0) == 0  # all closed at shutdown
