"""The benchmarked apps: one FastAPI app per variant, all serving the same routes.

    GET /item/{id}  primary-key lookup on `bench_items`, returns the row
    GET /items      ?limit=100&after=0: a page of rows as dicts (`DictCursor`)
    GET /slow       `SELECT SLEEP(0.2)`, run the same way the variant runs queries

Start one with (the runner does this for you):

    BENCH_VARIANT=seed BENCH_DB_URL=mysql://root@127.0.0.1:3306/test \\
        uvicorn benchmarks.apps:create_app --factory

Each builder is written out in full rather than sharing helpers: the point of a
variant is to be the literal pattern a user would write, so it should read as one.
Imports of optional dependencies live inside the builders, so a variant whose
imports fail (e.g. `lib_async` before the library has it) fails alone.
"""

# No `from __future__ import annotations` here: FastAPI resolves string annotations
# in module globals, where the builders' local dependencies do not exist.
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from benchmarks.db import parse_url

ITEM_SQL = "SELECT id, name, value FROM bench_items WHERE id=%s"
# A page after a given id (keyset pagination, the way list APIs page cheaply).
LIST_SQL = "SELECT id, name, value FROM bench_items WHERE id > %s ORDER BY id LIMIT %s"
SLOW_SQL = "SELECT SLEEP(0.2)"
POOL_SIZE = 32
#: What `benchmarks.run --endpoint` measures: the path whose answer every
#: variant must give byte for byte alike (wrk's requests vary the id).
ENDPOINTS = {"item": "/item/1", "list": "/items?limit=100"}

Config = dict[str, Any]


def _mysqlclient_pool_lifespan(cfg: Config) -> Callable[[FastAPI], Any]:
    """The seed article's lifespan: a mysqlclient-pool stored on `app.state`."""
    from mysqlclient_pool import ConnectionPool

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = ConnectionPool(cfg, size=POOL_SIZE)
        try:
            yield
        finally:
            app.state.pool.close()

    return lifespan


def build_seed(cfg: Config) -> FastAPI:
    """Baseline: sync routes, `with pool.fetch() as cursor` inline (commits on exit)."""
    from MySQLdb.cursors import DictCursor

    app = FastAPI(lifespan=_mysqlclient_pool_lifespan(cfg))

    @app.get("/item/{id}")
    def read(id: int, request: Request) -> Any:
        with request.app.state.pool.fetch() as cursor:
            cursor.execute(ITEM_SQL, (id,))
            return cursor.fetchone()

    @app.get("/items")
    def items(request: Request, limit: int = 100, after: int = 0) -> Any:
        with request.app.state.pool.fetch(cursor_type=DictCursor) as cursor:
            cursor.execute(LIST_SQL, (after, limit))
            return cursor.fetchall()

    @app.get("/slow")
    def slow(request: Request) -> Any:
        with request.app.state.pool.fetch() as cursor:
            cursor.execute(SLOW_SQL)
            return cursor.fetchone()

    return app


def build_naive_dep(cfg: Config) -> FastAPI:
    """The seed pool behind a sync generator dependency.

    FastAPI runs the generator's enter and exit as two separate thread-pool hops
    (and the route body as a third), which is the overhead this variant shows.
    """
    from MySQLdb.cursors import DictCursor

    app = FastAPI(lifespan=_mysqlclient_pool_lifespan(cfg))

    def get_cur(request: Request) -> Iterator[Any]:
        with request.app.state.pool.fetch() as cur:
            yield cur

    def get_dict_cur(request: Request) -> Iterator[Any]:
        with request.app.state.pool.fetch(cursor_type=DictCursor) as cur:
            yield cur

    @app.get("/item/{id}")
    def read(id: int, cursor: Annotated[Any, Depends(get_cur)]) -> Any:
        cursor.execute(ITEM_SQL, (id,))
        return cursor.fetchone()

    @app.get("/items")
    def items(
        cursor: Annotated[Any, Depends(get_dict_cur)], limit: int = 100, after: int = 0
    ) -> Any:
        cursor.execute(LIST_SQL, (after, limit))
        return cursor.fetchall()

    @app.get("/slow")
    def slow(cursor: Annotated[Any, Depends(get_cur)]) -> Any:
        cursor.execute(SLOW_SQL)
        return cursor.fetchone()

    return app


def build_seed_async_blocking(cfg: Config) -> FastAPI:
    """The seed pattern pasted into `async def` routes: blocks the event loop."""
    from MySQLdb.cursors import DictCursor

    app = FastAPI(lifespan=_mysqlclient_pool_lifespan(cfg))

    @app.get("/item/{id}")
    async def read(id: int, request: Request) -> Any:
        with request.app.state.pool.fetch() as cursor:
            cursor.execute(ITEM_SQL, (id,))
            return cursor.fetchone()

    @app.get("/items")
    async def items(request: Request, limit: int = 100, after: int = 0) -> Any:
        with request.app.state.pool.fetch(cursor_type=DictCursor) as cursor:
            cursor.execute(LIST_SQL, (after, limit))
            return cursor.fetchall()

    @app.get("/slow")
    async def slow(request: Request) -> Any:
        with request.app.state.pool.fetch() as cursor:
            cursor.execute(SLOW_SQL)
            return cursor.fetchone()

    return app


def _asyncmy_lifespan(cfg: Config) -> Callable[[FastAPI], Any]:
    """A raw asyncmy pool on `app.state`."""
    import asyncmy

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncmy.create_pool(
            minsize=POOL_SIZE, maxsize=POOL_SIZE, **cfg
        )
        try:
            yield
        finally:
            app.state.pool.close()
            await app.state.pool.wait_closed()

    return lifespan


def build_asyncmy(cfg: Config) -> FastAPI:
    """A raw asyncmy pool in async routes: the native-async reference point."""
    from asyncmy.cursors import DictCursor

    app = FastAPI(lifespan=_asyncmy_lifespan(cfg))

    # Every variant commits once per request (mysqlclient-pool's fetch() does), so
    # this one does too, to compare the same round trips.
    @app.get("/item/{id}")
    async def read(id: int, request: Request) -> Any:
        async with request.app.state.pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute(ITEM_SQL, (id,))
                row = await cur.fetchone()
            await conn.commit()
        return row

    @app.get("/items")
    async def items(request: Request, limit: int = 100, after: int = 0) -> Any:
        async with request.app.state.pool.acquire() as conn:
            async with conn.cursor(DictCursor) as cur:
                await cur.execute(LIST_SQL, (after, limit))
                rows = await cur.fetchall()
            await conn.commit()
        return rows

    @app.get("/slow")
    async def slow(request: Request) -> Any:
        async with request.app.state.pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute(SLOW_SQL)
                row = await cur.fetchone()
            await conn.commit()
        return row

    return app


def build_lib_sync(cfg: Config) -> FastAPI:
    """The library under test, sync path."""
    from fastapi_mysqlpool import get_cursor, get_dict_cursor, mysql_pool_lifespan

    app = FastAPI(lifespan=mysql_pool_lifespan(cfg, size=POOL_SIZE))

    @app.get("/item/{id}")
    def read(id: int, cursor: Annotated[Any, Depends(get_cursor)]) -> Any:
        cursor.execute(ITEM_SQL, (id,))
        return cursor.fetchone()

    @app.get("/items")
    def items(
        cursor: Annotated[Any, Depends(get_dict_cursor)],
        limit: int = 100,
        after: int = 0,
    ) -> Any:
        cursor.execute(LIST_SQL, (after, limit))
        return cursor.fetchall()

    @app.get("/slow")
    def slow(cursor: Annotated[Any, Depends(get_cursor)]) -> Any:
        cursor.execute(SLOW_SQL)
        return cursor.fetchone()

    return app


def build_lib_async(cfg: Config, **options: Any) -> FastAPI:
    """The library under test, async path (assumes the same lifespan as sync)."""
    from fastapi_mysqlpool import (
        get_async_cursor,
        get_async_dict_cursor,
        mysql_pool_lifespan,
    )

    app = FastAPI(lifespan=mysql_pool_lifespan(cfg, size=POOL_SIZE, **options))

    @app.get("/item/{id}")
    async def read(id: int, cursor: Annotated[Any, Depends(get_async_cursor)]) -> Any:
        await cursor.execute(ITEM_SQL, (id,))
        return await cursor.fetchone()

    @app.get("/items")
    async def items(
        cursor: Annotated[Any, Depends(get_async_dict_cursor)],
        limit: int = 100,
        after: int = 0,
    ) -> Any:
        await cursor.execute(LIST_SQL, (after, limit))
        return await cursor.fetchall()

    @app.get("/slow")
    async def slow(cursor: Annotated[Any, Depends(get_async_cursor)]) -> Any:
        await cursor.execute(SLOW_SQL)
        return await cursor.fetchone()

    return app


# Telemetry's cost, for benchmarks/instructions.py: lib_async as it runs with
# opentelemetry-api installed and no SDK; with telemetry=False; with the SDK
# set up as a production app would (BatchSpanProcessor, a metric reader).


def build_lib_async_notel(cfg: Config) -> FastAPI:
    """lib_async with ``telemetry=False`` (as without opentelemetry-api)."""
    return build_lib_async(cfg, telemetry=False)


def build_lib_async_sdk(cfg: Config) -> FastAPI:
    """lib_async with an OpenTelemetry SDK: spans through a BatchSpanProcessor
    to an exporter that drops them, metrics aggregated for a reader."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    return build_lib_async(cfg)


def build_lib_async_read(cfg: Config, replicas: list[str] | None = None) -> FastAPI:
    """The library's read cursors in async routes (autocommit: no COMMIT)."""
    from fastapi_mysqlpool import (
        AsyncReadCursor,
        AsyncReadDictCursor,
        mysql_pool_lifespan,
    )

    app = FastAPI(
        lifespan=mysql_pool_lifespan(cfg, size=POOL_SIZE, replicas=replicas or None)
    )

    @app.get("/item/{id}")
    async def read(id: int, cursor: AsyncReadCursor) -> Any:
        await cursor.execute(ITEM_SQL, (id,))
        return await cursor.fetchone()

    @app.get("/items")
    async def items(
        cursor: AsyncReadDictCursor, limit: int = 100, after: int = 0
    ) -> Any:
        await cursor.execute(LIST_SQL, (after, limit))
        return await cursor.fetchall()

    @app.get("/slow")
    async def slow(cursor: AsyncReadCursor) -> Any:
        await cursor.execute(SLOW_SQL)
        return await cursor.fetchone()

    return app


def build_lib_async_replicas(cfg: Config) -> FastAPI:
    """lib_async_read over the replicas in BENCH_REPLICA_URLS (comma-separated
    mysql:// URLs; the primary's user, password and database fill in)."""
    replicas = [u for u in os.environ.get("BENCH_REPLICA_URLS", "").split(",") if u]
    if not replicas:
        raise RuntimeError("lib_async_replicas needs BENCH_REPLICA_URLS")
    return build_lib_async_read(cfg, replicas)


def build_lib_sync_read(cfg: Config) -> FastAPI:
    """The library's read cursors in def routes."""
    from fastapi_mysqlpool import ReadCursor, ReadDictCursor, mysql_pool_lifespan

    app = FastAPI(lifespan=mysql_pool_lifespan(cfg, size=POOL_SIZE))

    @app.get("/item/{id}")
    def read(id: int, cursor: ReadCursor) -> Any:
        cursor.execute(ITEM_SQL, (id,))
        return cursor.fetchone()

    @app.get("/items")
    def items(cursor: ReadDictCursor, limit: int = 100, after: int = 0) -> Any:
        cursor.execute(LIST_SQL, (after, limit))
        return cursor.fetchall()

    @app.get("/slow")
    def slow(cursor: ReadCursor) -> Any:
        cursor.execute(SLOW_SQL)
        return cursor.fetchone()

    return app


def build_asyncmy_autocommit(cfg: Config) -> FastAPI:
    """A raw asyncmy pool in autocommit, no COMMIT: the like-for-like read path
    to compare the read cursors with."""
    import asyncmy
    from asyncmy.cursors import DictCursor

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncmy.create_pool(
            minsize=POOL_SIZE, maxsize=POOL_SIZE, autocommit=True, **cfg
        )
        try:
            yield
        finally:
            app.state.pool.close()
            await app.state.pool.wait_closed()

    app = FastAPI(lifespan=lifespan)

    @app.get("/item/{id}")
    async def read(id: int, request: Request) -> Any:
        async with (
            request.app.state.pool.acquire() as conn,
            conn.cursor() as cur,
        ):
            await cur.execute(ITEM_SQL, (id,))
            return await cur.fetchone()

    @app.get("/items")
    async def items(request: Request, limit: int = 100, after: int = 0) -> Any:
        async with (
            request.app.state.pool.acquire() as conn,
            conn.cursor(DictCursor) as cur,
        ):
            await cur.execute(LIST_SQL, (after, limit))
            return await cur.fetchall()

    @app.get("/slow")
    async def slow(request: Request) -> Any:
        async with (
            request.app.state.pool.acquire() as conn,
            conn.cursor() as cur,
        ):
            await cur.execute(SLOW_SQL)
            return await cur.fetchone()

    return app


# Diagnostic variants, for benchmarks/instructions.py: they split the
# difference between lib_async and asyncmy.


def build_nodep(cfg: Config) -> FastAPI:
    """lib_async without the dependency: the cursor taken in the route."""
    from fastapi_mysqlpool import get_pool, mysql_pool_lifespan

    app = FastAPI(lifespan=mysql_pool_lifespan(cfg, size=POOL_SIZE))

    @app.get("/item/{id}")
    async def read(id: int, request: Request) -> Any:
        async with get_pool(request).cursor() as cursor:
            await cursor.execute(ITEM_SQL, (id,))
            return await cursor.fetchone()

    @app.get("/items")
    async def items(request: Request, limit: int = 100, after: int = 0) -> Any:
        async with get_pool(request).cursor(dict_rows=True) as cursor:
            await cursor.execute(LIST_SQL, (after, limit))
            return await cursor.fetchall()

    return app


async def _nothing(request: Request) -> None:
    """A dependency that does nothing: what FastAPI's injection costs alone."""


def build_asyncmy_dep(cfg: Config) -> FastAPI:
    """asyncmy, plus one trivial dependency."""
    from asyncmy.cursors import DictCursor

    app = FastAPI(lifespan=_asyncmy_lifespan(cfg))

    @app.get("/item/{id}")
    async def read(
        id: int, request: Request, _: Annotated[None, Depends(_nothing)]
    ) -> Any:
        async with request.app.state.pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute(ITEM_SQL, (id,))
                row = await cur.fetchone()
            await conn.commit()
        return row

    @app.get("/items")
    async def items(
        request: Request,
        _: Annotated[None, Depends(_nothing)],
        limit: int = 100,
        after: int = 0,
    ) -> Any:
        async with request.app.state.pool.acquire() as conn:
            async with conn.cursor(DictCursor) as cur:
                await cur.execute(LIST_SQL, (after, limit))
                rows = await cur.fetchall()
            await conn.commit()
        return rows

    return app


VARIANTS: dict[str, Callable[[Config], FastAPI]] = {
    "seed": build_seed,
    "naive_dep": build_naive_dep,
    "seed_async_blocking": build_seed_async_blocking,
    "asyncmy": build_asyncmy,
    "lib_sync": build_lib_sync,
    "lib_async": build_lib_async,
    "lib_async_notel": build_lib_async_notel,
    "lib_async_sdk": build_lib_async_sdk,
    "nodep": build_nodep,
    "asyncmy_dep": build_asyncmy_dep,
    "lib_async_read": build_lib_async_read,
    "lib_sync_read": build_lib_sync_read,
    "asyncmy_autocommit": build_asyncmy_autocommit,
    "lib_async_replicas": build_lib_async_replicas,
}


def build_app(variant: str, url: str) -> FastAPI:
    """Build (but do not start) a variant's app; raises if its imports fail."""
    # One kwargs dict for all: asyncmy accepts the same names as MySQLdb.connect.
    return VARIANTS[variant](parse_url(url).mysqldb_kwargs())


def create_app() -> FastAPI:
    """uvicorn factory: the variant and database come from the environment."""
    return build_app(os.environ["BENCH_VARIANT"], os.environ["BENCH_DB_URL"])
