"""Every example of the documentation (docs_src/) runs, against a real server.

Each test imports an example afresh (its app reads DATABASE_URL when
imported), serves it with TestClient and checks what the page says it does,
in the database as well as in the answers. tests/test_docs.py checks that
every example is on a page and named here.
"""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import MySQLdb
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from prometheus_client import REGISTRY

from fastapi_mysqlpool import CursorReleasedError, get_pool
from fastapi_mysqlpool._config import parse_url

from .servers import Database
from .test_telemetry import reset_otel_globals

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "docs_src" / "tutorial" / "schema.sql"


def load(example: str) -> ModuleType:
    """docs_src/<example>.py, imported afresh."""
    name = "docs_src." + example.replace("/", ".")
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@contextlib.contextmanager
def client_of(example: str) -> Iterator[TestClient]:
    with TestClient(load(example).app) as client:
        yield client


class Tables:
    """The example's database, seen from a connection of the test's own."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, sql: str, args: Any = None) -> tuple[Any, ...]:
        connection = MySQLdb.connect(**parse_url(self.url), autocommit=True)
        with contextlib.closing(connection):
            cursor = connection.cursor()
            cursor.execute(sql, args)
            return tuple(cursor.fetchall())

    def scalar(self, sql: str, args: Any = None) -> Any:
        return self.query(sql, args)[0][0]

    def add(self, name: str, price: int) -> int:
        self.query("INSERT INTO items (name, price) VALUES (%s, %s)", (name, price))
        return int(self.scalar("SELECT id FROM items WHERE name = %s", (name,)))


@pytest.fixture
def url(db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty database of this test's own, as DATABASE_URL (and DB_*)."""
    name = f"{db.user}_docs"
    db.query(f"CREATE DATABASE `{name}`")
    db.query(f"GRANT ALL ON `{name}`.* TO '{db.user}'@'%'")
    database_url = db.url.rsplit("/", 1)[0] + "/" + name
    monkeypatch.setenv("DATABASE_URL", database_url)
    for key, value in {
        "DB_HOST": db.server.host,
        "DB_PORT": str(db.server.port),
        "DB_USER": db.user,
        "DB_PASSWORD": db.password,
        "DB_NAME": name,
    }.items():
        monkeypatch.setenv(key, value)
    try:
        yield database_url
    finally:
        db.query(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def tables(url: str) -> Tables:
    """The tutorial's schema (docs_src/tutorial/schema.sql), created empty."""
    tables = Tables(url)
    tables.query(SCHEMA.read_text())
    return tables


def test_getting_started_quickstart(url: str) -> None:
    with client_of("getting_started/quickstart") as client:
        assert client.post("/notes", params={"text": "hello"}).json() == {"id": 1}
        assert client.get("/notes/1").json() == {"text": "hello"}
        assert client.get("/notes/2").status_code == 404
    assert Tables(url).scalar("SELECT text FROM notes WHERE id = 1") == "hello"


def test_tutorial_sync_routes_tutorial001(tables: Tables) -> None:
    with client_of("tutorial/sync_routes/tutorial001") as client:
        created = client.post("/items", params={"name": "pen", "price": 2})
        assert created.status_code == 201
        item_id = created.json()["id"]
        assert client.get(f"/items/{item_id}").json() == {"name": "pen", "price": 2}
    assert tables.scalar("SELECT price FROM items WHERE id = %s", (item_id,)) == 2


def test_tutorial_sync_routes_tutorial002(tables: Tables) -> None:
    for name, price in [("pen", 2), ("ink", 5), ("pad", 3)]:
        tables.add(name, price)
    with client_of("tutorial/sync_routes/tutorial002") as client:
        assert client.get("/items", params={"limit": 2}).json() == [
            {"id": 1, "name": "pen", "price": 2},
            {"id": 2, "name": "ink", "price": 5},
        ]


def test_tutorial_sync_routes_tutorial003(tables: Tables) -> None:
    item_id = tables.add("pen", 2)
    with client_of("tutorial/sync_routes/tutorial003") as client:
        missing = client.post("/items/99/price", params={"price": 4})
        assert missing.status_code == 404
        done = client.post(f"/items/{item_id}/price", params={"price": 4})
        assert done.json() == {"id": item_id, "price": 4}
    assert tables.scalar("SELECT price FROM items WHERE id = %s", (item_id,)) == 4


def test_tutorial_async_routes_tutorial001(tables: Tables) -> None:
    with client_of("tutorial/async_routes/tutorial001") as client:
        item_id = client.post("/items", params={"name": "pen", "price": 2}).json()["id"]
        assert client.get(f"/items/{item_id}").json() == {"name": "pen", "price": 2}
    assert tables.scalar("SELECT name FROM items WHERE id = %s", (item_id,)) == "pen"


def test_tutorial_async_routes_tutorial002(tables: Tables) -> None:
    for name, price in [("pen", 2), ("ink", 5)]:
        tables.add(name, price)
    with client_of("tutorial/async_routes/tutorial002") as client:
        assert client.get("/items", params={"limit": 1}).json() == [
            {"id": 1, "name": "pen", "price": 2}
        ]
        assert client.get("/names").json() == ["ink", "pen"]


def test_tutorial_async_routes_tutorial003(tables: Tables) -> None:
    tables.add("pen", 2)
    with (
        client_of("tutorial/async_routes/tutorial003") as client,
        client.websocket_connect("/prices") as websocket,
    ):
        websocket.send_text("pen")
        assert websocket.receive_json() == {"name": "pen", "price": 2}
        websocket.send_text("ink")
        assert websocket.receive_json() == {"name": "ink", "price": None}
        # Between messages the session holds no connection.
        assert get_pool(client.app).stats().in_use == 0  # type: ignore[arg-type]


def test_tutorial_background_tasks_tutorial001(tables: Tables) -> None:
    item_id = tables.add("pen", 2)
    with client_of("tutorial/background_tasks/tutorial001") as client:
        # TestClient returns once the background tasks have run.
        assert client.get(f"/items/{item_id}").json() == {"name": "pen", "views": 0}
        assert client.get(f"/items/{item_id}").json() == {"name": "pen", "views": 1}
        deleting = client.delete(f"/items/{item_id}")
        assert (deleting.status_code, deleting.json()) == (202, {"deleting": item_id})
    assert tables.query("SELECT * FROM items") == ()


def test_tutorial_errors_tutorial001(tables: Tables) -> None:
    with client_of("tutorial/errors/tutorial001") as client:
        refused = client.post("/items", params={"name": "pen", "price": -1})
        assert refused.status_code == 422
        assert tables.query("SELECT * FROM items") == ()  # rolled back
        assert client.post("/items", params={"name": "pen", "price": 2}).is_success
    assert tables.scalar("SELECT COUNT(*) FROM items") == 1


def test_tutorial_errors_tutorial002(tables: Tables) -> None:
    with client_of("tutorial/errors/tutorial002") as client:
        assert client.post("/items", params={"name": "pen", "price": 2}).is_success
        again = client.post("/items", params={"name": "pen", "price": 3})
        assert (again.status_code, again.json()) == (409, {"detail": "already exists"})
    assert tables.query("SELECT name, price FROM items") == (("pen", 2),)


def test_tutorial_pool_tutorial001(tables: Tables) -> None:
    tables.add("pen", 2)
    tables.add("ink", 5)
    with client_of("tutorial/pool/tutorial001") as client:
        assert client.get("/startup").json() == {"items": 2}


def test_tutorial_pool_tutorial002(tables: Tables) -> None:
    item_id = tables.add("pen", 200)
    with client_of("tutorial/pool/tutorial002") as client:
        assert client.post("/items/reprice", params={"percent": 10}).json() == {
            "updated": 1
        }
        stats = client.get("/pool").json()
        assert stats["in_use"] == 0
        assert stats["size"] >= 1
        assert {"idle", "max_size", "opened", "waiting", "wait_time"} <= set(stats)
    assert tables.scalar("SELECT price FROM items WHERE id = %s", (item_id,)) == 220


@pytest.mark.slow
def test_tutorial_testing_test_main_test_async_test_overrides() -> None:
    """The testing page's test modules pass, run as a user runs them (the
    plugin loaded by its module name: the installed entry point may predate
    it): each test starts from an empty table."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:fastapi_mysqlpool",
            "-p",
            "fastapi_mysqlpool.pytest_plugin",
            "docs_src/tutorial/testing/test_main.py",
            "docs_src/tutorial/testing/test_async.py",
            "docs_src/tutorial/testing/test_overrides.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout


def test_how_to_production_timeout(tables: Tables) -> None:
    with client_of("how_to/production/timeout") as client:
        start = time.monotonic()
        answer = client.post("/items/slow", params={"name": "late"})
        elapsed = time.monotonic() - start
    assert (answer.status_code, answer.json()) == (504, {"detail": "Request Timed Out"})
    assert 1.0 <= elapsed < 4.0
    assert tables.query("SELECT * FROM items") == ()  # rolled back


def test_how_to_production_operate(url: str, db: Database) -> None:
    with client_of("how_to/production/operate") as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (200, "ready")
        assert client.get("/time-zone").json() == {"time_zone": "+00:00"}
        pool = get_pool(client.app)
        assert pool.leaks is not None
        assert pool.config.target.endswith(url.rsplit("/", 1)[1])  # DATABASE_URL's
        assert "/readyz" not in client.get("/openapi.json").json()["paths"]


def test_how_to_production_token(url: str, db: Database) -> None:
    with client_of("how_to/production/token") as client:
        assert client.get("/ping").json() == {"status": "ok"}
        pool = get_pool(client.app)
        assert callable(pool.config["password"])  # called per connection
        assert db.password not in repr(pool.config) + repr(pool)


def test_how_to_production_metrics(
    tables: Tables, caplog: pytest.LogCaptureFixture
) -> None:
    item_id = tables.add("pen", 2)
    example = load("how_to/production/metrics")
    try:
        with TestClient(example.app) as client:
            assert client.get(f"/items/{item_id}").json() == {"name": "pen"}
            scraped = client.get("/metrics/").text
        assert 'mysqlpool_acquires_total{pool="default"} 1.0' in scraped
    finally:
        REGISTRY.unregister(example.collector)
    assert caplog.records == []  # nothing slower than 0.5 s


def test_how_to_production_tracing(tables: Tables) -> None:
    item_id = tables.add("pen", 2)
    example = load("how_to/production/tracing")
    spans = InMemorySpanExporter()
    example.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    try:
        with TestClient(example.app) as client:
            assert client.get(f"/items/{item_id}").json() == {"name": "pen"}
        names = [span.name for span in spans.get_finished_spans()]
        assert "SELECT items" in names
        assert "COMMIT" in names
    finally:
        example.tracer_provider.shutdown()
        example.meter_provider.shutdown()
        reset_otel_globals()


def test_how_to_pitfalls_yield_dependency(tables: Tables) -> None:
    tables.add("audit", 0)
    with client_of("how_to/pitfalls/yield_dependency") as client:
        assert client.post("/items", params={"name": "pen"}).status_code == 201
    assert tables.query("SELECT name, views FROM items ORDER BY id") == (
        ("audit", 1),
        ("pen", 0),
    )


def test_how_to_large_results_export(tables: Tables) -> None:
    tables.add("pen", 2)
    tables.add("ink", 5)
    with client_of("how_to/large_results/export") as client:
        csv = client.get("/items.csv", params={"min_price": 3})
        ndjson = client.get("/items.ndjson")
        total = client.get("/items/total").json()
        assert get_pool(client.app).stats().in_use == 0
    assert csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert csv.text == "id,name,price\r\n2,ink,5\r\n"
    assert ndjson.headers["content-type"] == "application/x-ndjson"
    assert ndjson.text.splitlines() == [
        '{"id":1,"name":"pen","price":2}',
        '{"id":2,"name":"ink","price":5}',
    ]
    assert total == {"total": 7}


def test_how_to_large_results_trap(tables: Tables) -> None:
    tables.add("pen", 2)
    with client_of("how_to/large_results/trap") as client:
        # The body fails after the status went out: no answer to give.
        with pytest.raises(RuntimeError, match="response already started") as raised:
            client.get("/trap")
        assert isinstance(raised.value.__cause__, CursorReleasedError)
        assert "stream_rows(" in str(raised.value.__cause__)
        assert client.get("/pattern").text == "name\r\npen\r\n"


@pytest.mark.parametrize("variant", ["before", "after"])
def test_how_to_migrate_from_mysqlclient_pool(tables: Tables, variant: str) -> None:
    with client_of(f"how_to/migrate_from_mysqlclient_pool/{variant}") as client:
        item_id = client.post("/items", params={"name": "pen", "price": 2}).json()["id"]
        assert client.get(f"/items/{item_id}").json() == {"name": "pen", "price": 2}
    assert tables.scalar("SELECT price FROM items WHERE id = %s", (item_id,)) == 2


@pytest.mark.parametrize("variant", ["before", "after"])
def test_how_to_migrate_from_sqlalchemy(
    tables: Tables, variant: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if variant == "before":
        monkeypatch.setenv("DATABASE_URL", url.replace("mysql://", "mysql+asyncmy://"))
    with client_of(f"how_to/migrate_from_sqlalchemy/{variant}") as client:
        item_id = client.post("/items", params={"name": "pen", "price": 2}).json()["id"]
        assert client.get("/items").json() == [
            {"id": item_id, "name": "pen", "price": 2}
        ]
    assert tables.scalar("SELECT COUNT(*) FROM items") == 1
