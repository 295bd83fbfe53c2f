"""OpenTelemetry spans and metrics, and slow-statement warnings, through real
apps (FastAPIInstrumentor's server spans) on a real server, recorded by the
SDK's in-memory exporter and reader."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import MySQLdb
import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

from fastapi_mysqlpool import (
    AsyncCursor,
    AsyncReadCursor,
    Cursor,
    Pool,
    ReadCursor,
    add_pool_task,
    get_pool,
    mysql_pool_lifespan,
    stream_rows,
)
from fastapi_mysqlpool._telemetry import describe

from .servers import Database, serve

# Distinctive parameter values: none may appear in any span or metric.
SECRETS = ("sekret-4f1c9a", "sekret-77b2e0", "sekret-d00d1e", "sekret-a5a5a5")


@dataclass
class Otel:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def db_spans(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.kind is SpanKind.CLIENT]

    def points(self, name: str, pool: str | None = None) -> list[Any]:
        """*name*'s data points (of the pool named *pool* only)."""
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
            if pool is None
            or point.attributes.get("db.client.connection.pool.name") == pool
        ]


def reset_otel_globals() -> None:
    # As opentelemetry's own test utilities do: the API lets a provider be
    # set once per process.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()


@pytest.fixture
def otel() -> Iterator[Otel]:
    """The SDK set up as an app would (global providers), undone afterwards."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    reset_otel_globals()
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    try:
        yield Otel(exporter, reader, tracer_provider, meter_provider)
    finally:
        reset_otel_globals()
        tracer_provider.shutdown()
        meter_provider.shutdown()


@pytest.fixture
def table(db: Database) -> str:
    return db.create_table("things", "id INT PRIMARY KEY, secret VARCHAR(40)")


def make_app(db: Database, table: str, otel: Otel, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1, **options))
    insert = f"INSERT INTO {table} (id, secret) VALUES (%s, %s)"
    select = f"SELECT secret FROM {table} WHERE secret = %s"

    @app.get("/read")
    async def read(cursor: AsyncReadCursor) -> Any:
        await cursor.execute(select, (SECRETS[0],))
        return len(await cursor.fetchall())

    @app.get("/read-sync")
    def read_sync(cursor: ReadCursor) -> Any:
        cursor.execute(select, (SECRETS[0],))
        return len(cursor.fetchall())

    @app.get("/export")
    async def export(request: Request) -> Any:
        return stream_rows(request, select, (SECRETS[0],))

    @app.post("/sync/{id}")
    def sync_route(id: int, cursor: Cursor) -> dict[str, Any]:
        cursor.execute(insert, (id, SECRETS[0]))
        cursor.execute(select, (SECRETS[0],))
        return {"rows": len(cursor.fetchall())}

    @app.post("/async/{id}")
    async def async_route(id: int, cursor: AsyncCursor) -> dict[str, Any]:
        await cursor.execute(insert, (id, SECRETS[1]))
        await cursor.execute(select, (SECRETS[1],))
        return {"rows": len(await cursor.fetchall())}

    @app.post("/duplicate/{id}")
    async def duplicate(id: int, cursor: AsyncCursor) -> None:
        await cursor.execute(insert, (id, SECRETS[2]))
        try:
            await cursor.execute(insert, (id, SECRETS[2]))
        except MySQLdb.IntegrityError:
            raise HTTPException(409, "exists") from None

    @app.post("/tasks/{id}")
    def tasks(id: int, background_tasks: BackgroundTasks) -> None:
        def sync_task(cursor: Any) -> None:
            cursor.execute(insert, (id, SECRETS[3]))

        async def async_task(cursor: Any) -> None:
            await cursor.execute(select, (SECRETS[3],))

        add_pool_task(background_tasks, sync_task)
        add_pool_task(background_tasks, async_task)

    @app.post("/pool/{id}")
    async def pool_paths(id: int, request: Request) -> None:
        pool = get_pool(request)
        async with pool.cursor() as cursor:
            await cursor.execute(insert, (id, SECRETS[0]))
        async with pool.lease() as cursor:
            await _in_thread(cursor.execute, select, (SECRETS[0],))

        def fetch() -> None:
            with pool.fetch() as cursor:
                cursor.execute(select, (SECRETS[0],))

        await _in_thread(fetch)

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider
    )
    return app


async def _in_thread(func: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(func, *args)


def server_span(spans: list[ReadableSpan]) -> ReadableSpan:
    (found,) = [s for s in spans if s.kind is SpanKind.SERVER]
    return found


def assert_no_secret(otel: Otel) -> None:
    """No parameter value anywhere: span names, attributes, events, statuses,
    and metric data points' attributes."""
    seen = []
    for span in otel.finished():
        seen.append(span.name)
        seen.append(span.status.description or "")
        seen.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            seen.append(event.name)
            seen.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
    data = otel.metrics.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    seen.extend(f"{k}={v}" for k, v in point.attributes.items())
    text = "\n".join(seen)
    assert "db.query.text" in text  # what is scanned is really there
    for secret in SECRETS:
        assert secret not in text


def test_each_statement_is_a_client_span_under_the_server_span(
    db: Database, table: str, otel: Otel
) -> None:
    app = make_app(db, table, otel)
    with TestClient(app) as client:
        for path in ("/sync/1", "/async/2"):
            otel.spans.clear()
            assert client.post(path).json() == {"rows": 1}
            spans = otel.finished()
            server = server_span(spans)
            statements = [s for s in spans if s.kind is SpanKind.CLIENT]
            assert [s.name for s in statements] == [
                f"INSERT {table}",
                f"SELECT {table}",
                "COMMIT",
            ], path
            for span in statements:
                assert span.parent is not None
                assert span.parent.span_id == server.context.span_id
                assert span.context.trace_id == server.context.trace_id
                assert span.status.status_code is StatusCode.UNSET
            insert, select, commit = (s.attributes for s in statements)
            assert insert == {
                "db.system.name": "mariadb",
                "db.namespace": db.server.database,
                "server.address": db.server.host,
                "server.port": db.server.port,
                "db.operation.name": "INSERT",
                "db.collection.name": table,
                "db.query.text": f"INSERT INTO {table} (id, secret) VALUES (%s, %s)",
            }
            assert select["db.query.text"] == (
                f"SELECT secret FROM {table} WHERE secret = %s"
            )
            assert commit["db.operation.name"] == "COMMIT"
            assert commit["db.query.text"] == "COMMIT"
            assert "db.collection.name" not in commit
    assert_no_secret(otel)


def test_tasks_and_the_pools_own_cursors_are_traced_too(
    db: Database, table: str, otel: Otel
) -> None:
    app = make_app(db, table, otel)
    with TestClient(app) as client:
        assert client.post("/tasks/1").status_code == 200
        names = [s.name for s in otel.db_spans()]
        # A sync task (pool.lease(): COMMIT on the loop), an async one.
        assert names == [f"INSERT {table}", "COMMIT", f"SELECT {table}", "COMMIT"]
        server = server_span(otel.finished())
        for span in otel.db_spans():
            assert span.context.trace_id == server.context.trace_id
        otel.spans.clear()
        assert client.post("/pool/2").status_code == 200
        # cursor(), lease(), fetch(): each commits what it used.
        assert [s.name for s in otel.db_spans()] == [
            f"INSERT {table}",
            "COMMIT",
            f"SELECT {table}",
            "COMMIT",
            f"SELECT {table}",
            "COMMIT",
        ]
        server = server_span(otel.finished())
        for span in otel.db_spans():
            assert span.parent is not None
            assert span.parent.span_id == server.context.span_id
    assert_no_secret(otel)


def test_a_streamed_statement_is_a_span_too(
    db: Database, table: str, otel: Otel
) -> None:
    app = make_app(db, table, otel)
    with TestClient(app) as client:
        assert client.post("/sync/1").status_code == 200
        otel.spans.clear()
        answer = client.get("/export")
        assert answer.status_code == 200
        assert answer.text.count("\n") == 1
    selected, commit = otel.db_spans()
    assert (selected.name, commit.name) == (f"SELECT {table}", "COMMIT")
    assert selected.kind is SpanKind.CLIENT
    assert selected.attributes is not None
    assert "%s" in str(selected.attributes["db.query.text"])
    server = server_span(otel.finished())
    assert selected.parent is not None
    assert selected.parent.span_id == server.context.span_id
    assert_no_secret(otel)


def test_read_cursors_are_traced_with_no_commit(
    db: Database, table: str, otel: Otel
) -> None:
    app = make_app(db, table, otel)
    with TestClient(app) as client:
        assert client.post("/sync/1").status_code == 200
        otel.spans.clear()
        assert client.get("/read").json() == 1
        assert client.get("/read-sync").json() == 1
    # Autocommit: the SELECTs and nothing else (the switch to autocommit is
    # the library's own setting, not a transaction's end).
    assert [s.name for s in otel.db_spans()] == [f"SELECT {table}"] * 2
    assert_no_secret(otel)


def test_a_failed_statement_is_an_error_span_without_its_message(
    db: Database, table: str, otel: Otel
) -> None:
    app = make_app(db, table, otel)
    with TestClient(app) as client:
        assert client.post("/duplicate/1").status_code == 409
    first, failed, rollback = otel.db_spans()
    assert first.status.status_code is StatusCode.UNSET
    assert failed.name == f"INSERT {table}"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description is None  # "Duplicate entry '1'..."
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "MySQLdb.IntegrityError"
    assert failed.attributes["db.response.status_code"] == "1062"
    assert not failed.events  # no exception event: its message quotes values
    # The request failed: the library rolled back.
    assert rollback.name == "ROLLBACK"
    assert rollback.status.status_code is StatusCode.UNSET
    durations = otel.points("db.client.operation.duration")
    errors = [p for p in durations if "error.type" in p.attributes]
    assert len(errors) == 1
    assert errors[0].attributes["db.response.status_code"] == "1062"
    assert errors[0].count == 1
    assert_no_secret(otel)


def test_batches_and_procedures_are_one_span_each(
    db: Database, table: str, otel: Otel
) -> None:
    db.query(f"DROP PROCEDURE IF EXISTS {table}_count")
    db.query(f"CREATE PROCEDURE {table}_count(IN s VARCHAR(40)) SELECT 1")
    rows = [(i, SECRETS[i % 4]) for i in range(3)]
    insert = f"INSERT INTO {table} (id, secret) VALUES (%s, %s)"
    with Pool(db.cfg, size=1) as pool:
        with pool.fetch() as cursor:
            cursor.executemany(insert, rows)
            cursor.callproc(f"{table}_count", (SECRETS[0],))
            cursor.fetchall()
            cursor.nextset()
        sync = [(s.name, s.attributes) for s in otel.db_spans()]
        otel.spans.clear()

        async def run() -> None:
            async with pool.cursor() as cursor:
                await cursor.executemany(insert.replace("INSERT", "REPLACE"), rows[:2])
                await cursor.callproc(f"{table}_count", (SECRETS[1],))
                while await cursor.nextset():
                    pass

        anyio.run(run)
        asynchronous = [(s.name, s.attributes) for s in otel.db_spans()]
    for spans, operation, size in ((sync, "INSERT", 3), (asynchronous, "REPLACE", 2)):
        (batch_name, batch), (call_name, call), (commit_name, _) = spans
        assert batch_name == f"BATCH {operation} {table}"
        assert batch is not None
        assert batch["db.operation.name"] == f"BATCH {operation}"
        assert batch["db.operation.batch.size"] == size
        assert call_name == "CALL"
        assert call is not None
        assert call["db.query.text"] == f"CALL {table}_count(%s)"
        assert commit_name == "COMMIT"
    assert_no_secret(otel)


def test_metrics_match_stats(db: Database, table: str, otel: Otel) -> None:
    app = make_app(db, table, otel, name="orders", max_size=3)
    with TestClient(app) as client:
        for id in range(1, 4):
            assert client.post(f"/async/{id}").status_code == 200
        stats = get_pool(app).stats()
        # (Pools of other tests may still be open: this one is "orders".)
        points = {
            name: otel.points(f"db.client.connection.{name}", pool="orders")
            for name in ("count", "max", "idle.min", "pending_requests", "timeouts")
        }
        waits = otel.points("db.client.connection.wait_time", pool="orders")
    pool_name = {"db.client.connection.pool.name": "orders"}
    count = {
        p.attributes["db.client.connection.state"]: p.value for p in points["count"]
    }
    assert count == {"idle": stats.idle, "used": stats.in_use}
    assert [(p.value, dict(p.attributes)) for p in points["max"]] == [(3, pool_name)]
    assert [p.value for p in points["idle.min"]] == [1]
    assert [p.value for p in points["pending_requests"]] == [stats.waiting]
    assert [p.value for p in points["timeouts"]] == [stats.timeouts]
    for name in ("count", "pending_requests"):
        for point in points[name]:
            assert point.attributes["db.client.connection.pool.name"] == "orders"
    # One wait per connection handed out.
    assert sum(p.count for p in waits) == stats.requests
    # Three statements per request, each measured.
    durations = otel.points("db.client.operation.duration")
    by_operation = {p.attributes["db.operation.name"]: p.count for p in durations}
    assert by_operation == {"INSERT": 3, "SELECT": 3, "COMMIT": 3}
    for point in durations:
        assert point.attributes["db.system.name"] == "mariadb"
        assert point.attributes["server.port"] == db.server.port
        assert "db.query.text" not in point.attributes  # unbounded cardinality


def test_timeouts_are_counted(db: Database, otel: Otel) -> None:
    with Pool(db.cfg, size=1, max_size=1, acquire_timeout=0.05, name="t") as pool:
        held = pool.acquire(1)
        with pytest.raises(ConnectionError), pool.fetch():
            pass
        pool.checkin(held, reusable=True)
        (point,) = otel.points("db.client.connection.timeouts", pool="t")
        assert point.value == pool.stats().timeouts == 1


def test_telemetry_false_records_nothing(db: Database, table: str, otel: Otel) -> None:
    app = make_app(db, table, otel, telemetry=False, name="off")
    with TestClient(app) as client:
        assert client.post("/async/1").status_code == 200
        assert get_pool(app).telemetry is None
    assert otel.db_spans() == []
    assert otel.points("db.client.operation.duration") == []
    assert otel.points("db.client.connection.count", pool="off") == []


def test_without_an_sdk_nothing_is_made(db: Database) -> None:
    """The providers the API reads are unset: a statement gets no Timing (no
    span, no clock, no attributes), the one test that it costs."""
    reset_otel_globals()
    assert trace._TRACER_PROVIDER is None
    assert metrics_internal._METER_PROVIDER is None
    with Pool(db.cfg, size=1) as pool:
        telemetry = pool.telemetry
        assert telemetry is not None
        conn = pool.acquire(1)
        try:
            assert conn.telemetry is telemetry
            assert telemetry.start(conn, "SELECT 1") is None
            # A provider set later is picked up at the next statement.
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
            assert trace._TRACER_PROVIDER is provider  # what start() reads
            timing = telemetry.start(conn, "SELECT 1")
            assert timing is not None
            timing.end(None)
            meter_provider = MeterProvider()
            metrics.set_meter_provider(meter_provider)
            assert metrics_internal._METER_PROVIDER is meter_provider
        finally:
            pool.checkin(conn, reusable=True)
            reset_otel_globals()


@pytest.mark.parametrize(
    ("template", "name", "collection"),
    [
        ("SELECT a FROM items WHERE id = %s", "SELECT items", "items"),
        (
            "select * from `shop`.`items` where x = %s",
            "SELECT shop.items",
            "shop.items",
        ),
        ("INSERT INTO items (a, b) VALUES (%s, %s)", "INSERT items", "items"),
        ("UPDATE items SET a = %s WHERE id = %s", "UPDATE items", "items"),
        ("DELETE FROM items WHERE id = %s", "DELETE items", "items"),
        ("SELECT * FROM a JOIN b ON a.id = b.id", "SELECT", None),
        ("SELECT * FROM a, b", "SELECT", None),
        ("SELECT * FROM a WHERE id IN (SELECT id FROM b)", "SELECT", None),
        ("/* why */ SELECT 1", "SELECT", None),
        (b"ROLLBACK", "ROLLBACK", None),
    ],
)
def test_names_follow_the_conventions(
    template: str | bytes, name: str, collection: str | None
) -> None:
    described = describe(template)
    assert described.name == name
    assert described.attributes.get("db.collection.name") == collection


# -- slow_query ---------------------------------------------------------------------


def test_slow_statements_are_logged_with_their_template(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1, slow_query=0.05))

    @app.get("/fast")
    async def fast(cursor: AsyncCursor) -> None:
        await cursor.execute("SELECT %s", (SECRETS[0],))

    @app.get("/slow")
    async def slow(cursor: AsyncCursor) -> None:
        await cursor.execute("SELECT SLEEP(0.1), %s", (SECRETS[1],))

    @app.get("/slow-sync")
    def slow_sync(cursor: Cursor) -> None:
        cursor.execute("SELECT SLEEP(0.1), %s, 'sync'", (SECRETS[2],))

    with caplog.at_level(logging.WARNING, "fastapi_mysqlpool"), TestClient(app) as c:
        assert c.get("/fast").status_code == 200
        assert caplog.records == []
        assert c.get("/slow").status_code == 200
        assert c.get("/slow-sync").status_code == 200
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].endswith(": SELECT SLEEP(0.1), %s")
    assert messages[1].endswith(": SELECT SLEEP(0.1), %s, 'sync'")
    for message in messages:
        assert "slow statement: 0." in message
        assert "slow_query=0.05 s" in message
        assert not any(secret in message for secret in SECRETS)


def test_slow_query_works_without_telemetry(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, "fastapi_mysqlpool"),
        Pool(db.cfg, size=1, telemetry=False, slow_query=0.0) as pool,
        pool.fetch() as cursor,
    ):
        cursor.execute("SELECT %s", (SECRETS[0],))
    messages = [r.getMessage() for r in caplog.records]
    assert [m.rsplit(": ", 1)[1] for m in messages] == ["SELECT %s", "COMMIT"]


def test_a_served_app_nests_spans_across_threads(
    db: Database, table: str, otel: Otel
) -> None:
    """Through uvicorn: a sync route's statements run in a worker thread and
    still nest under the request's server span."""
    app = make_app(db, table, otel)
    with serve(app) as url:
        assert httpx.post(f"{url}/sync/7").json() == {"rows": 1}
    spans = otel.finished()
    server = server_span(spans)
    statements = otel.db_spans()
    assert len(statements) == 3
    for span in statements:
        assert span.parent is not None
        assert span.parent.span_id == server.context.span_id


def test_a_long_statement_shows_its_start(db: Database, otel: Otel) -> None:
    long = "SELECT 1 /* " + "x" * 100_000 + " */"

    async def run() -> None:
        async with pool.cursor() as cursor:
            await cursor.execute(long)

    with Pool(db.cfg, size=1) as pool:
        anyio.run(run)
    select, _ = otel.db_spans()
    assert select.name == "SELECT"
    assert select.attributes is not None
    assert select.attributes["db.query.text"] == long[:4096]


def test_without_opentelemetry_the_pool_works_and_slow_query_too(db: Database) -> None:
    """opentelemetry-api not importable (the [otel] extra not installed).
    Recent FastAPI depends on it itself: only the library's import fails."""
    code = """
import builtins, json, logging, sys
real_import = builtins.__import__
def refuse(name, globals=None, *args, **kwargs):
    mine = (globals or {}).get("__name__") == "fastapi_mysqlpool._telemetry"
    if mine and name.startswith("opentelemetry"):
        raise ImportError(name)
    return real_import(name, globals, *args, **kwargs)
builtins.__import__ = refuse
from fastapi_mysqlpool import Pool
from fastapi_mysqlpool import _telemetry
assert not _telemetry.OTEL_INSTALLED
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
cfg = json.loads(sys.argv[1])
with Pool(cfg, size=1) as pool:
    assert pool.telemetry is None
    with pool.fetch() as cursor:
        cursor.execute("SELECT %s", ("x",))
with Pool(cfg, size=1, slow_query=0.0) as pool:
    assert pool.telemetry is not None and not pool.telemetry.otel
    with pool.fetch() as cursor:
        cursor.execute("SELECT %s", ("x",))
"""
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(db.cfg)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        line for line in out.stdout.splitlines() if line.startswith("slow statement")
    ]
    assert [line.rsplit(": ", 1)[1] for line in out.stdout.splitlines()] == [
        "SELECT %s",
        "COMMIT",
    ]


def test_fastapis_own_telemetry_parents_the_spans_too(
    db: Database, table: str, otel: Otel
) -> None:
    """FastAPI >= 0.165 traces requests itself once a provider is set (no
    FastAPIInstrumentor): the statements nest in its request's trace."""
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.get("/one")
    def one(cursor: Cursor) -> None:
        cursor.execute(f"SELECT secret FROM {table} WHERE id = %s", (1,))

    with TestClient(app) as client:
        assert client.get("/one").status_code == 200
    spans = {span.context.span_id: span for span in otel.finished()}
    server = server_span(list(spans.values()))
    statements = otel.db_spans()
    assert [s.name for s in statements] == [f"SELECT {table}", "COMMIT"]
    for span in statements:
        ancestor: ReadableSpan | None = span
        while ancestor is not None and ancestor is not server:
            parent = ancestor.parent
            ancestor = None if parent is None else spans.get(parent.span_id)
        assert ancestor is server, span.name
