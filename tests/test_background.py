"""add_pool_task: work after the response, on a connection of its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI
from fastapi.testclient import TestClient

from fastapi_mysqlpool import (
    Cursor,
    CursorReleasedError,
    add_pool_task,
    get_pool,
    mysql_pool_lifespan,
)

from .servers import Database


def record(
    cursor: Any, table: str, value: int, *, kept: list[Any] | None = None
) -> None:
    """A task: where it ran, and a row it inserts."""
    try:
        asyncio.get_running_loop()
        on_loop = True
    except RuntimeError:
        on_loop = False
    cursor.execute(
        f"INSERT INTO {table} (value, conn, user, on_loop) "
        "VALUES (%s, CONNECTION_ID(), CURRENT_USER(), %s)",
        (value, on_loop),
    )
    if kept:
        with pytest.raises(CursorReleasedError):
            kept[0].execute("SELECT 1")


COLUMNS = "value INT PRIMARY KEY, conn BIGINT, user VARCHAR(200), on_loop BOOL"


def test_task_runs_after_the_response_in_a_thread_and_commits(db: Database) -> None:
    table = db.create_table("tasks", COLUMNS)
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    request_cursor: list[Any] = []

    @app.post("/sync")
    def sync_route(background: BackgroundTasks, cursor: Cursor) -> str:
        request_cursor.append(cursor)
        add_pool_task(background, record, table, 1, kept=request_cursor)
        cursor.execute(f"SELECT COUNT(*) FROM {table}")
        return "queued"

    @app.post("/async")
    async def async_route(background: BackgroundTasks) -> str:
        add_pool_task(background, record, table, value=2)
        return "queued"

    with TestClient(app) as client:
        # TestClient returns once the app is done, background tasks included.
        assert client.post("/sync").json() == "queued"
        assert client.post("/async").json() == "queued"
        stats = get_pool(app).stats()
    rows = db.query(f"SELECT value, on_loop FROM {table} ORDER BY value")
    assert rows == ((1, 0), (2, 0))
    assert (stats.in_use, stats.requests) == (0, 3)


def test_a_failing_task_is_logged_rolled_back_and_does_not_stop_the_next(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    table = db.create_table("tasks", COLUMNS)
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    def failing(cursor: Any) -> None:
        cursor.execute(f"INSERT INTO {table} (value) VALUES (99)")
        raise ValueError("task broke")

    @app.post("/")
    def route(background: BackgroundTasks) -> None:
        add_pool_task(background, failing)
        add_pool_task(background, record, table, 3)

    with caplog.at_level(logging.ERROR), TestClient(app) as client:
        assert client.post("/").status_code == 200
        assert get_pool(app).stats().in_use == 0
    assert db.query(f"SELECT value FROM {table}") == ((3,),)
    (failure,) = [r for r in caplog.records if r.name == "fastapi_mysqlpool"]
    assert "background task" in failure.getMessage()
    assert "failing" in failure.getMessage()
    assert failure.exc_info is not None
    assert str(failure.exc_info[1]) == "task broke"


def test_two_apps_in_one_process_each_use_their_own_pool(
    make_db: Callable[[], Database], server: Any
) -> None:
    first, second = make_db(), make_db()
    table = first.create_table("shared", COLUMNS)
    second.query(f"GRANT ALL ON `{server.database}`.`{table}` TO '{second.user}'@'%'")
    apps = []
    for value, db in enumerate((first, second)):
        app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

        @app.post("/")
        def route(background: BackgroundTasks, value: int = value) -> None:
            add_pool_task(background, record, table, value)

        apps.append(app)
    with TestClient(apps[0]) as one, TestClient(apps[1]) as two:
        two.post("/")
        one.post("/")
    users = first.query(f"SELECT value, user FROM {table} ORDER BY value")
    assert [(v, u.split("@")[0]) for v, u in users] == [
        (0, first.user),
        (1, second.user),
    ]


def test_explicit_pool_and_a_clear_error_without_one(db: Database) -> None:
    table = db.create_table("tasks", COLUMNS)
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    plain = FastAPI()  # no pool of its own

    @plain.post("/")
    def route(background: BackgroundTasks) -> None:
        add_pool_task(background, record, table, 5, pool=get_pool(app))

    with TestClient(app), TestClient(plain) as client:
        assert client.post("/").status_code == 200
    assert db.query(f"SELECT value FROM {table}") == ((5,),)

    with pytest.raises(RuntimeError, match=r"add_pool_task\(\) found no pool"):
        add_pool_task(BackgroundTasks(), record, table, 6)
