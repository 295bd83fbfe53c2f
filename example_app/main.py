"""The example app: every feature of fastapi-mysqlpool in one small shop.

Run it with ``python -m example_app`` (see ``README.md`` next to this file). On
a database of your own, uvicorn can build it from the environment::

    DATABASE_URL=mysql://user:password@127.0.0.1:3306/shop \\
        uvicorn --factory example_app.main:app_from_env

Routes (sync ``def`` ones run their queries in FastAPI's worker threads; the
``/async`` ones use the async cursor and never leave the event loop)::

    GET    /ping         SELECT 1
    GET    /counter      the counter's value; adds 1 after the response
    POST   /items        create (201; 409 if the name is taken)
    GET    /items        list
    GET    /items/{id}   read (404 if missing)
    PUT    /items/{id}   replace (404, 409)
    DELETE /items/{id}   delete (204, 404)
    GET    /async/items/{id}   read, from an async def route
    GET    /async/slow   DEMO: SELECT SLEEP without blocking other requests
    GET    /stats        the pool's statistics
    GET    /healthz      liveness: 200 while the process serves (no database)
    GET    /readyz       readiness: 200 if a connection answers, else 503
    GET    /metrics      the same, for Prometheus (fastapi_mysqlpool.prometheus)
    GET    /slow         DEMO: holds a connection ?seconds=2 long
    GET    /bad-sql      DEMO: broken SQL, on purpose

Bad input gets FastAPI's 422. Database errors need no code here: the library
turns them into ``{"code": ..., "message": ...}``. To see each one:

* code 0 (500 "Something Went Wrong"): ``GET /bad-sql``. The SQL and the
  server's message go to the log, never to the client.
* code 1 (503 "Database Server Is Not Available"): stop the database, then
  ``GET /ping``. Start it again: the pool reconnects by itself.
* code 2 (503 "Database Server Is Busy"): start with ``EXAMPLE_MAX_SIZE=2``
  and call ``GET /slow?seconds=5`` from three clients at once. The third waits
  ``acquire_timeout`` (3 s) for a connection, then gets code 2.
"""

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from decimal import Decimal
from typing import Annotated, Any

import MySQLdb.cursors
from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    FastAPI,
    HTTPException,
    Query,
    Request,
    status,
)
from prometheus_client import CollectorRegistry, make_asgi_app
from pydantic import BaseModel, Field

from fastapi_mysqlpool import (
    AsyncCursor,
    AsyncDictCursor,
    Cursor,
    DictCursor,
    PoolStats,
    add_pool_task,
    get_cursor,
    get_pool,
    health_router,
    mysql_pool_lifespan,
)
from fastapi_mysqlpool.prometheus import PoolCollector

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS items (
        id INT AUTO_INCREMENT PRIMARY KEY,
        name VARCHAR(64) NOT NULL UNIQUE,
        price DECIMAL(10, 2) NOT NULL
    )
    """,
    "CREATE TABLE IF NOT EXISTS counter (id INT PRIMARY KEY, value BIGINT NOT NULL)",
    # IGNORE: after the first start, the row is already there.
    "INSERT IGNORE INTO counter (id, value) VALUES (1, 0)",
)

ER_DUP_ENTRY = 1062


class ItemIn(BaseModel):
    """What a client sends; FastAPI answers 422 if it does not fit."""

    name: str = Field(min_length=1, max_length=64)  # VARCHAR(64)
    # Decimal, as MySQL's DECIMAL: no float rounding. Pydantic writes it to
    # JSON as a string ("9.99"); it reads numbers and strings.
    price: Decimal = Field(ge=0, max_digits=10, decimal_places=2)


class Item(ItemIn):
    id: int


router = APIRouter()


# -- the app's own lifespan ---------------------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the tables. mysql_pool_lifespan runs this inside its own, so the
    pool is open here (and still open at shutdown, after the ``yield``)."""
    # An async cursor: nothing here blocks the event loop. Commits at the end.
    async with get_pool(app).cursor() as cursor:
        for statement in SCHEMA:
            await cursor.execute(statement)
    yield


# -- ping and counter ---------------------------------------------------------


# The explicit form of the `Cursor` alias the other routes use.
@router.get("/ping")
def ping(cursor: MySQLdb.cursors.Cursor = Depends(get_cursor)) -> dict[str, str]:
    """A round trip to the database: 200 if it answers, else code 1 or 2."""
    cursor.execute("SELECT 1")
    return {"status": "ok"}


@router.get("/counter")
def read_counter(cursor: Cursor, background_tasks: BackgroundTasks) -> dict[str, int]:
    """The counter's value; a background task adds 1 once the response is sent."""
    cursor.execute("SELECT value FROM counter WHERE id = 1")
    (value,) = cursor.fetchone()
    # The task outlives this request, whose cursor is gone by then: it gets a
    # connection (and a transaction) of its own.
    add_pool_task(background_tasks, add_to_counter, 1)
    return {"value": value}


def add_to_counter(cursor: MySQLdb.cursors.Cursor, amount: int) -> None:
    """Runs after the response, in a worker thread; commits when it returns."""
    cursor.execute("UPDATE counter SET value = value + %s WHERE id = 1", (amount,))


# -- items: CRUD with validation ----------------------------------------------


@contextmanager
def unique_name(name: str) -> Iterator[None]:
    """A duplicate name is the client's mistake: 409, with a message it can show."""
    try:
        yield
    except MySQLdb.IntegrityError as exc:
        if exc.args[0] != ER_DUP_ENTRY:
            raise  # anything else is a bug: the library answers code 0
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"an item named {name!r} already exists"
        ) from None


def fetch_item(cursor: MySQLdb.cursors.DictCursor, item_id: int) -> Item:
    cursor.execute("SELECT id, name, price FROM items WHERE id = %s", (item_id,))
    row = cursor.fetchone()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"item {item_id} not found")
    return Item(**row)


@router.post("/items", status_code=status.HTTP_201_CREATED)
def create_item(item: ItemIn, cursor: DictCursor) -> Item:
    with unique_name(item.name):
        cursor.execute(
            "INSERT INTO items (name, price) VALUES (%s, %s)", (item.name, item.price)
        )
    item_id = cursor.lastrowid  # the AUTO_INCREMENT id of the new row
    assert item_id is not None  # (typed Optional: None before any INSERT)
    # Read back rather than echo: the client sees what is stored ("9.90").
    return fetch_item(cursor, item_id)


@router.get("/items")
def list_items(
    cursor: DictCursor, limit: Annotated[int, Query(ge=1, le=100)] = 100
) -> list[Item]:
    cursor.execute("SELECT id, name, price FROM items ORDER BY id LIMIT %s", (limit,))
    return [Item(**row) for row in cursor.fetchall()]


@router.get("/items/{item_id}")
def read_item(item_id: int, cursor: DictCursor) -> Item:
    return fetch_item(cursor, item_id)


@router.put("/items/{item_id}")
def update_item(item_id: int, item: ItemIn, cursor: DictCursor) -> Item:
    with unique_name(item.name):
        cursor.execute(
            "UPDATE items SET name = %s, price = %s WHERE id = %s",
            (item.name, item.price, item_id),
        )
    # Not cursor.rowcount: it counts changed rows, so 0 for a row saved
    # unchanged. Reading the row back tells a missing one apart.
    return fetch_item(cursor, item_id)


@router.delete("/items/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_item(item_id: int, cursor: Cursor) -> None:
    cursor.execute("DELETE FROM items WHERE id = %s", (item_id,))
    if cursor.rowcount == 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"item {item_id} not found")


# -- async routes ------------------------------------------------------------
# In an `async def` route, take the async cursor: awaiting it never blocks the
# event loop (the sync cursor would, for each query, stalling every request).


@router.get("/async/items/{item_id}")
async def read_item_async(item_id: int, cursor: AsyncDictCursor) -> Item:
    await cursor.execute("SELECT id, name, price FROM items WHERE id = %s", (item_id,))
    row = await cursor.fetchone()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"item {item_id} not found")
    return Item(**row)


@router.get("/async/slow", tags=["demo"])
async def slow_async(
    cursor: AsyncCursor, seconds: Annotated[float, Query(gt=0, le=60)] = 2
) -> dict[str, float]:
    """DEMO: a long query that other requests do not wait for."""
    await cursor.execute("SELECT SLEEP(%s)", (seconds,))
    return {"slept": seconds}


# -- the pool, and the error codes --------------------------------------------


@router.get("/stats")
def read_stats(request: Request) -> PoolStats:
    """Connections open, idle, in use; callers waiting; counters since startup."""
    return get_pool(request).stats()


@router.get("/slow", tags=["demo"])
def slow(
    cursor: Cursor, seconds: Annotated[float, Query(gt=0, le=60)] = 2
) -> dict[str, float]:
    """DEMO: hold a connection. More of these at once than the pool has
    connections (see EXAMPLE_MAX_SIZE) make the others wait: code 2."""
    cursor.execute("SELECT SLEEP(%s)", (seconds,))
    return {"slept": seconds}


@router.get("/bad-sql", tags=["demo"])
def bad_sql(cursor: Cursor) -> None:
    """DEMO, broken on purpose: the table does not exist. Answers code 0."""
    cursor.execute("SELECT * FROM no_such_table")


# -- building the app ---------------------------------------------------------


def create_app(database_url: str, **pool_options: Any) -> FastAPI:
    """The app on *database_url* (``mysql://user:password@host:port/database``).

    *pool_options* go to ``mysql_pool_lifespan`` (``size``, ``max_size``,
    ``acquire_timeout``...). Nothing connects before the app starts. A
    connection held over 10 s (``/slow?seconds=12``) is logged as a leak,
    naming its route.
    """
    pool_options.setdefault("leak_timeout", 10.0)
    app = FastAPI(
        title="fastapi-mysqlpool example",
        lifespan=mysql_pool_lifespan(database_url, lifespan=lifespan, **pool_options),
    )
    app.include_router(router)
    # Kubernetes probes (kept out of /docs): see README.md next to this file.
    # (/metrics, for Prometheus, comes with the prometheus extra.)
    app.include_router(health_router())
    # Prometheus scrapes /metrics/; the collector reads the pool's stats()
    # then, so requests pay nothing. (A registry per app: the example is
    # built many times in one process by the tests. An app of its own would
    # use prometheus_client's global REGISTRY.)
    registry = CollectorRegistry()
    registry.register(PoolCollector(app))
    app.mount("/metrics", make_asgi_app(registry=registry))
    return app


def pool_options_from_env() -> dict[str, Any]:
    """``EXAMPLE_MAX_SIZE=N``: a pool of at most N connections (N >= 1)."""
    max_size = os.environ.get("EXAMPLE_MAX_SIZE")
    return {"max_size": int(max_size)} if max_size else {}


def app_from_env() -> FastAPI:
    """``uvicorn --factory example_app.main:app_from_env``: the app on $DATABASE_URL.

    A factory rather than a module-level ``app``, so importing this module
    needs no database settings.
    """
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError(
            "set DATABASE_URL=mysql://user:password@host:port/database, or run "
            "`python -m example_app`, which starts a throwaway database"
        )
    return create_app(url, **pool_options_from_env())
