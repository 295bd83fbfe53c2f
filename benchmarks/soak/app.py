"""The app under test: the library's sync path, as uvicorn runs it.

    uvicorn benchmarks.soak.app:create_app --factory   (with the SOAK_* variables)

At module level this imports only what the app needs: the driver's modules
(psutil and the rest) never load in the app's process.
"""

# No `from __future__ import annotations`: FastAPI resolves the routes'
# annotations at runtime.
import dataclasses
import logging
import os
import re
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Request

from benchmarks.apps import ITEM_SQL
from benchmarks.db import ROWS, parse_url
from fastapi_mysqlpool import Cursor, add_pool_task, get_pool, mysql_pool_lifespan

FACTORY = "benchmarks.soak.app:create_app"
WRITES_TABLE = "soak_writes"  # INSERTs, one row per request, client-chosen id
COUNTERS_TABLE = "soak_counters"  # UPDATE n = n + 1
TASKS_TABLE = "soak_tasks"  # INSERTs from add_pool_task, after the response
COUNTER_ROWS = 1000

ENV_URL = "SOAK_DB_URL"
ENV_SIZE = "SOAK_POOL_SIZE"
ENV_MAX_SIZE = "SOAK_MAX_SIZE"
# The app's pool events, timestamped so the driver can line them up with KILLs.
LOG_FORMAT = "@%(created).3f %(levelname)s %(name)s: %(message)s"
LOG_LINE = re.compile(r"^@(\d+\.\d+) ([A-Z]+) ([\w.]+): (.*)$")


def record_task(cursor: Any, id: int) -> None:
    """The background write scheduled by `POST /task/{id}`."""
    cursor.execute(f"INSERT INTO {TASKS_TABLE} (id) VALUES (%s)", (id,))


def build_app(cfg: dict[str, Any], size: int, max_size: int) -> FastAPI:
    app = FastAPI(lifespan=mysql_pool_lifespan(cfg, size=size, max_size=max_size))

    @app.get("/item/{id}")
    def read(id: int, cursor: Cursor) -> Any:
        cursor.execute(ITEM_SQL, (id,))
        return cursor.fetchone()

    @app.post("/insert/{id}")
    def insert(id: int, cursor: Cursor) -> dict[str, int]:
        cursor.execute(
            f"INSERT INTO {WRITES_TABLE} (id, payload) VALUES (%s, %s)",
            (id, f"row-{id}"),
        )
        return {"inserted": id}

    @app.post("/bump/{id}")
    def bump(id: int, cursor: Cursor) -> dict[str, int]:
        cursor.execute(f"UPDATE {COUNTERS_TABLE} SET n = n + 1 WHERE id = %s", (id,))
        return {"updated": cursor.rowcount}

    @app.post("/task/{id}")
    def with_task(id: int, cursor: Cursor, tasks: BackgroundTasks) -> Any:
        cursor.execute(ITEM_SQL, (id % ROWS + 1,))
        add_pool_task(tasks, record_task, id)
        return cursor.fetchone()

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        return dataclasses.asdict(get_pool(request).stats())

    return app


def create_app() -> FastAPI:
    """uvicorn factory: the database and pool sizes come from the environment."""
    handler = logging.StreamHandler()  # stderr: the driver's log file
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("fastapi_mysqlpool")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    cfg = parse_url(os.environ[ENV_URL]).mysqldb_kwargs()
    return build_app(cfg, int(os.environ[ENV_SIZE]), int(os.environ[ENV_MAX_SIZE]))
