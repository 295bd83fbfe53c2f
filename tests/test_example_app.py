"""The example app (example_app/), against a real server, as its README runs it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from example_app.main import app_from_env, create_app
from fastapi_mysqlpool import PoolStats, get_pool

from .servers import Database

ROOT = Path(__file__).resolve().parent.parent
ERROR = {"code": 0, "message": "Something Went Wrong"}
UNAVAILABLE = {"code": 1, "message": "Database Server Is Not Available"}
BUSY = {"code": 2, "message": "Database Server Is Busy"}


def wait_until(condition: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(0.02)


@contextlib.contextmanager
def own_database(db: Database) -> Iterator[str]:
    """A database of the test's user alone, dropped afterwards; its URL.

    The example names its tables `items` and `counter`: in a database of
    their own they start empty and cannot meet another test's.
    """
    name = f"{db.user}_example"
    db.query(f"CREATE DATABASE `{name}`")
    db.query(f"GRANT ALL ON `{name}`.* TO '{db.user}'@'%'")
    try:
        yield db.url.rsplit("/", 1)[0] + "/" + name
    finally:
        db.query(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def url(db: Database) -> Iterator[str]:
    with own_database(db) as database_url:
        yield database_url


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    # `with`: runs the lifespan, which opens the pool and creates the tables.
    with TestClient(create_app(url, size=2)) as test_client:
        yield test_client


def test_ping(client: TestClient) -> None:
    response = client.get("/ping")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_the_apps_lifespan_created_the_tables(db: Database, client: TestClient) -> None:
    database = f"{db.user}_example"
    tables = db.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
        (database,),
    )
    assert sorted(row[0] for row in tables) == ["counter", "items"]


def test_counter_increments_after_each_response(
    db: Database, client: TestClient
) -> None:
    # TestClient returns once the background tasks have run.
    assert [client.get("/counter").json() for _ in range(3)] == [
        {"value": 0},
        {"value": 1},
        {"value": 2},
    ]
    assert db.scalar(f"SELECT value FROM `{db.user}_example`.counter") == 3


def test_items_crud(client: TestClient) -> None:
    created = client.post("/items", json={"name": "pen", "price": 1.5})
    assert created.status_code == 201
    pen = created.json()
    assert pen == {"id": pen["id"], "name": "pen", "price": "1.50"}
    cup = client.post("/items", json={"name": "cup", "price": "4"}).json()

    assert client.get(f"/items/{pen['id']}").json() == pen
    assert client.get("/items").json() == [pen, cup]
    assert client.get("/items", params={"limit": 1}).json() == [pen]

    updated = client.put(f"/items/{pen['id']}", json={"name": "pen", "price": 2})
    assert updated.json() == {**pen, "price": "2.00"}
    # Saved unchanged: found (MySQL reports 0 changed rows), not a 404.
    same = client.put(f"/items/{pen['id']}", json={"name": "pen", "price": 2})
    assert (same.status_code, same.json()) == (200, updated.json())

    deleted = client.delete(f"/items/{pen['id']}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert client.get("/items").json() == [cup]


def test_async_routes(client: TestClient) -> None:
    pen = client.post("/items", json={"name": "pen", "price": 1.5}).json()
    assert client.get(f"/async/items/{pen['id']}").json() == pen
    assert client.get("/async/items/999").status_code == 404
    assert client.get("/async/slow", params={"seconds": 0.01}).json() == {"slept": 0.01}


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "price": 1},
        {"name": "x" * 65, "price": 1},
        {"name": "pen", "price": -0.01},
        {"name": "pen", "price": 1.001},
        {"name": "pen"},
        {"price": 1},
    ],
)
def test_bad_input_is_422(client: TestClient, body: dict[str, object]) -> None:
    assert client.post("/items", json=body).status_code == 422
    assert client.put("/items/1", json=body).status_code == 422
    assert client.get("/items").json() == []


def test_bad_path_and_query_are_422(client: TestClient) -> None:
    assert client.get("/items/abc").status_code == 422
    assert client.get("/items", params={"limit": 0}).status_code == 422
    assert client.get("/slow", params={"seconds": -1}).status_code == 422


def test_missing_item_is_404(client: TestClient) -> None:
    missing = {"detail": "item 999 not found"}
    for response in (
        client.get("/items/999"),
        client.put("/items/999", json={"name": "pen", "price": 1}),
        client.delete("/items/999"),
    ):
        assert (response.status_code, response.json()) == (404, missing)
    assert client.get("/items").json() == []  # the PUT created nothing


def test_duplicate_name_is_409(client: TestClient) -> None:
    pen = client.post("/items", json={"name": "pen", "price": 1}).json()
    cup = client.post("/items", json={"name": "cup", "price": 1}).json()
    conflict = {"detail": "an item named 'pen' already exists"}

    again = client.post("/items", json={"name": "pen", "price": 2})
    assert (again.status_code, again.json()) == (409, conflict)
    renamed = client.put(f"/items/{cup['id']}", json={"name": "pen", "price": 2})
    assert (renamed.status_code, renamed.json()) == (409, conflict)
    assert client.get("/items").json() == [pen, cup]  # both rolled back


def test_bad_sql_demo_is_code_0(client: TestClient) -> None:
    response = client.get("/bad-sql")
    assert (response.status_code, response.json()) == (500, ERROR)
    assert "no_such_table" not in response.text
    assert client.get("/ping").status_code == 200  # the connection was kept


def test_stats(client: TestClient) -> None:
    client.get("/ping")
    stats = client.get("/stats").json()
    assert set(stats) == {field.name for field in dataclasses.fields(PoolStats)}
    assert stats["size"] == stats["idle"] == 2
    assert stats["in_use"] == stats["waiting"] == stats["timeouts"] == 0
    assert stats["requests"] >= 2  # the lifespan's and /ping's


def test_metrics_for_prometheus(client: TestClient) -> None:
    client.get("/ping")
    scraped = client.get("/metrics/")
    assert scraped.status_code == 200
    requests = get_pool(client.app).stats().requests
    assert f'mysqlpool_acquires_total{{pool="default"}} {float(requests)}' in (
        scraped.text
    )
    assert 'mysqlpool_connections{pool="default",state="idle"} 2.0' in scraped.text


@pytest.mark.slow
def test_slow_holding_every_connection_is_code_2(url: str) -> None:
    app = create_app(url, size=1, max_size=1, acquire_timeout=0.2)
    with TestClient(app) as client:
        holder = threading.Thread(target=client.get, args=("/slow?seconds=1",))
        holder.start()
        try:
            wait_until(lambda: get_pool(app).stats().in_use == 1)
            busy = client.get("/ping")
        finally:
            holder.join()
        assert client.get("/ping").status_code == 200
    assert (busy.status_code, busy.json()) == (503, BUSY)
    assert busy.headers["retry-after"] == "1"


@pytest.mark.destructive
@pytest.mark.slow
def test_database_down_is_code_1_and_the_app_recovers(fault_db: Database) -> None:
    with own_database(fault_db) as url, TestClient(create_app(url, size=1)) as client:
        assert client.get("/ping").status_code == 200
        fault_db.server.stop()
        down = client.get("/ping")
        fault_db.server.start()
        wait_until(lambda: client.get("/ping").status_code == 200)
    assert (down.status_code, down.json()) == (503, UNAVAILABLE)


def test_app_from_env_needs_database_url(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(RuntimeError, match="DATABASE_URL"):
        app_from_env()
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("EXAMPLE_MAX_SIZE", "1")
    app = app_from_env()
    with TestClient(app) as client:
        assert client.get("/ping").status_code == 200
        assert client.get("/stats").json()["max_size"] == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(process: subprocess.Popen[bytes], port: int, log: Path) -> bool:
    """Whether the app answers /ping (failing if its process has died)."""
    assert process.poll() is None, log.read_text()
    try:
        return httpx.get(f"http://127.0.0.1:{port}/ping").status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
def test_python_m_example_app_runs_on_a_throwaway_server(tmp_path: Path) -> None:
    """The README's one command: no DATABASE_URL, so it starts its own server,
    serves, and on Ctrl-C (SIGINT) stops and removes everything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXAMPLE_")}
    env.pop("DATABASE_URL", None)
    port = free_port()
    output, errors = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with output.open("wb") as stdout, errors.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "example_app", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        wait_until(lambda: answers(process, port, errors), timeout=90)
        found = re.search(r"^Data dir: (\S+)", output.read_text(), re.MULTILINE)
        assert found, output.read_text()
        data_dir = Path(found[1])
        server_pid = int((data_dir / "mysqld.pid").read_text())
        assert httpx.get(f"http://127.0.0.1:{port}/ping").json() == {"status": "ok"}

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:  # the test failed: leave nothing behind
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert not data_dir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)  # the server is gone too
    assert "Traceback" not in errors.read_text()


def test_health_routes(client: TestClient, db: Database) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["pool"]["size"] == 2
    assert db.password not in ready.text
    paths = client.get("/openapi.json").json()["paths"]
    assert "/readyz" not in paths
    assert "/healthz" not in paths
    assert get_pool(client.app).leaks is not None  # leak_timeout=10
