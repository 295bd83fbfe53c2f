"""Faults on a real server the suite owns: restarts, KILLs, timeouts, limits,
disconnects and shutdowns. Nothing committed is lost, every failure is a JSON
503, and the pool recovers by itself."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_mysqlpool import Cursor, Pool, get_pool, mysql_pool_lifespan

from .middleware import Deadline
from .servers import Database, serve
from .test_pool import wait_until

destructive = [pytest.mark.destructive, pytest.mark.slow]


def insert_app(db: Database, table: str, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, **options))

    @app.post("/rows/{id}")
    def insert(id: int, cursor: Cursor) -> dict[str, int]:
        cursor.execute(f"INSERT INTO {table} (id) VALUES (%s)", (id,))
        return {"id": id}

    @app.get("/ping")
    def ping(cursor: Cursor) -> int:
        cursor.execute("SELECT 1")
        return int(cursor.fetchone()[0])

    return app


class Milestone:
    """Lets the test wait until the writers saw N successes after a moment."""

    def __init__(self) -> None:
        self._after = 0.0
        self._needed = 0
        self._count = 0
        self._event = anyio.Event()

    def record(self, moment: float, success: bool) -> None:
        if success and moment > self._after:
            self._count += 1
            if self._count >= self._needed:
                self._event.set()

    async def reached(self, after: float, successes: int) -> None:
        self._after, self._needed, self._count = after, successes, 0
        self._event = anyio.Event()
        await self._event.wait()


def assert_json_503(response: httpx.Response | Any) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["code"] in (1, 2)
    assert response.headers["retry-after"] == "1"


@pytest.mark.anyio
@pytest.mark.destructive
@pytest.mark.slow
async def test_restart_under_write_load_loses_nothing(fault_db: Database) -> None:
    server = fault_db.server
    table = fault_db.create_table("writes", "id INT PRIMARY KEY")
    app = insert_app(fault_db, table, size=4, max_size=8)
    committed: set[int] = set()
    failures: list[httpx.Response] = []
    timeline: list[tuple[float, int]] = []
    ids = itertools.count()
    done = anyio.Event()
    milestone = Milestone()

    async def writer(client: httpx.AsyncClient) -> None:
        while not done.is_set():
            row = next(ids)
            response = await client.post(f"/rows/{row}")
            now = time.monotonic()
            timeline.append((now, response.status_code))
            milestone.record(now, response.status_code == 200)
            if response.status_code == 200:
                committed.add(row)
            else:
                failures.append(response)

    with serve(app) as url:
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as client,
            anyio.create_task_group() as group,
        ):
            for _ in range(6):
                group.start_soon(writer, client)
            await milestone.reached(after=0, successes=50)
            await anyio.to_thread.run_sync(server.stop)
            await anyio.sleep(2)  # the outage under test
            await anyio.to_thread.run_sync(server.start)
            back = time.monotonic()
            with anyio.fail_after(10):
                await milestone.reached(after=back, successes=50)
            done.set()

    stored = {row[0] for row in fault_db.query(f"SELECT id FROM {table}")}
    assert committed <= stored  # every 2xx is in the table
    assert failures, "the outage went unnoticed"
    for response in failures:
        assert_json_503(response)
    first_success = min(t for t, s in timeline if t > back and s == 200)
    assert first_success - back < 1.5


def test_killed_idle_connections_never_fail_a_request(db: Database) -> None:
    table = db.create_table("rows", "id INT PRIMARY KEY")
    app = insert_app(db, table, size=4)
    with TestClient(app) as client:
        for row in range(4):
            assert client.post(f"/rows/{row}").status_code == 200
        assert db.kill_connections() == 4
        for row in range(4, 12):
            assert client.post(f"/rows/{row}").status_code == 200
        assert get_pool(app).stats().errors >= 1
    assert db.scalar(f"SELECT COUNT(*) FROM {table}") == 12


@pytest.mark.destructive
@pytest.mark.slow
def test_wait_timeout_expiry_never_fails_a_request(fault_db: Database) -> None:
    fault_db.query("SET GLOBAL wait_timeout = 2")  # sessions opened from now on
    table = fault_db.create_table("rows", "id INT PRIMARY KEY")
    app = insert_app(fault_db, table, size=3)
    with TestClient(app) as client:
        assert client.get("/ping").status_code == 200
        before = fault_db.connection_ids()
        time.sleep(3)  # the behaviour under test: idle past wait_timeout
        for row in range(6):
            assert client.post(f"/rows/{row}").status_code == 200
        stats = get_pool(app).stats()
    # Kept alive by the housekeeper's pings (every wait_timeout / 2).
    assert stats.errors == 0
    assert before <= fault_db.connection_ids() | before


@pytest.mark.anyio
async def test_max_size_3_under_10_slow_requests(db: Database) -> None:
    app = FastAPI(
        lifespan=mysql_pool_lifespan(db.cfg, size=1, max_size=3, acquire_timeout=0.5)
    )

    @app.get("/slow")
    def slow(cursor: Cursor) -> int:
        cursor.execute("SELECT SLEEP(0.3), CONNECTION_ID()")
        return int(cursor.fetchone()[1])

    peak = 0
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            responses: list[httpx.Response] = []

            async def one() -> None:
                responses.append(await client.get("/slow"))

            async def watch() -> None:
                nonlocal peak
                while len(responses) < 10:
                    count = await anyio.to_thread.run_sync(db.connection_count)
                    peak = max(peak, count)

            async with anyio.create_task_group() as group:
                group.start_soon(watch)
                for _ in range(10):
                    group.start_soon(one)
        stats = get_pool(app).stats()
    succeeded = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert peak <= 3
    assert len({r.json() for r in succeeded}) <= 3
    assert len(succeeded) >= 3
    assert refused, "with 10 x 0.3 s on 3 connections, some wait beyond 0.5 s"
    for response in refused:
        assert response.json() == {"code": 2, "message": "Database Server Is Busy"}
    assert stats.timeouts == len(refused)


@pytest.mark.destructive
@pytest.mark.slow
def test_server_down_fails_fast_backs_off_and_recovers_alone(
    fault_db: Database,
) -> None:
    server = fault_db.server
    table = fault_db.create_table("rows", "id INT PRIMARY KEY")
    app = insert_app(fault_db, table, size=3)
    with TestClient(app) as client:
        pool = get_pool(app)
        assert client.get("/ping").status_code == 200
        server.stop()
        for _ in range(50):
            request_started = time.monotonic()
            response = client.get("/ping")
            assert_json_503(response)
            assert response.json()["code"] == 1
            assert time.monotonic() - request_started < 1  # refused: no hang
        # Backoff (doubling from 50 ms): a handful of connection attempts for
        # 50 requests; errors also counts the 3 dead idle connections.
        attempts = pool.stats().errors - 3
        assert 1 <= attempts <= 6
        server.start()
        back = time.monotonic()
        # No traffic needed: the housekeeper reconnects and refills.
        wait_until(lambda: pool.stats().idle == 3, timeout=5)
        assert time.monotonic() - back < 1.5
        assert client.post("/rows/1").status_code == 200


def test_client_disconnect_leaves_no_open_transaction(db: Database) -> None:
    table = db.create_table("rows", "id INT PRIMARY KEY")
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    entered = threading.Event()

    @app.post("/slow/{id}")
    def slow(id: int, cursor: Cursor) -> None:
        cursor.execute(f"INSERT INTO {table} (id) VALUES (%s)", (id,))
        entered.set()
        cursor.execute("SELECT SLEEP(0.5)")

    with serve(app) as url:
        with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=url) as client:
            client.post("/slow/1", timeout=0.2)  # gives up mid-request
        assert entered.is_set()
        pool = get_pool(app)
        wait_until(lambda: pool.stats().idle == 1)
        assert db.open_transactions() == 0
        assert pool.stats().closed == 0  # back in the pool, not discarded
        with httpx.Client(base_url=url) as client:
            assert client.post("/slow/2", timeout=5).status_code == 200


def test_a_cancelled_request_rolls_back(db: Database) -> None:
    """Cancellation is a BaseException: rollback, and the connection is reused."""
    table = db.create_table("rows", "id INT PRIMARY KEY")
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    app.add_middleware(Deadline, seconds=0.2)

    @app.post("/slow/{id}")
    async def slow(id: int, cursor: Cursor) -> None:
        cursor.execute(f"INSERT INTO {table} (id) VALUES (%s)", (id,))
        await anyio.sleep(5)  # cancelled here, by the middleware's deadline

    with TestClient(app) as client:
        assert client.post("/slow/1").status_code == 504
        pool = get_pool(app)
        wait_until(lambda: pool.stats().idle == 1)
        assert db.open_transactions() == 0
        assert db.scalar(f"SELECT COUNT(*) FROM {table}") == 0
        assert pool.stats().closed == 0  # rolled back, so reused
        assert client.post("/slow/2").status_code == 504


def test_a_cancelled_sync_route_runs_to_its_end_then_rolls_back(db: Database) -> None:
    """anyio cannot stop a thread: the route finishes, but its answer is lost."""
    table = db.create_table("rows", "id INT PRIMARY KEY")
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    app.add_middleware(Deadline, seconds=0.2)
    finished = threading.Event()

    @app.post("/slow/{id}")
    def slow(id: int, cursor: Cursor) -> None:
        time.sleep(0.5)  # outlasts the deadline: what is under test
        cursor.execute(f"INSERT INTO {table} (id) VALUES (%s)", (id,))
        finished.set()

    with TestClient(app) as client:
        assert client.post("/slow/1").status_code == 504
        assert finished.is_set()  # the deadline waited for the thread
        pool = get_pool(app)
        wait_until(lambda: pool.stats().idle == 1)
        assert db.open_transactions() == 0
        assert db.scalar(f"SELECT COUNT(*) FROM {table}") == 0


def test_shutdown_lets_requests_in_flight_finish_then_closes_all(
    db: Database,
) -> None:
    table = db.create_table("rows", "id INT PRIMARY KEY")
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=2, max_size=5))
    inside = threading.Semaphore(0)

    @app.post("/rows/{id}")
    def slow_insert(id: int, cursor: Cursor) -> dict[str, int]:
        inside.release()
        cursor.execute("SELECT SLEEP(0.5)")
        cursor.execute(f"INSERT INTO {table} (id) VALUES (%s)", (id,))
        return {"id": id}

    statuses: list[int] = []
    with serve(app) as url:
        clients = [
            threading.Thread(
                target=lambda row=row: statuses.append(
                    httpx.post(f"{url}/rows/{row}", timeout=10).status_code
                )
            )
            for row in range(5)
        ]
        for thread in clients:
            thread.start()
        for _ in clients:
            assert inside.acquire(timeout=10)
        # Leaving the block shuts uvicorn down with the 5 requests in flight.
    for thread in clients:
        thread.join()
    assert statuses == [200] * 5
    assert db.scalar(f"SELECT COUNT(*) FROM {table}") == 5
    assert db.connection_count(settle_at=0) == 0


@pytest.mark.destructive
def test_server_connection_limit_answers_busy(fault_db: Database) -> None:
    """Error 1040 (max_connections) while the pool needs a new connection."""
    app = insert_app(fault_db, "unused", size=0, max_size=5)
    # MariaDB's floor for max_connections is 10, and SUPER (our admin) gets
    # one more: fill the server up with other connections first.
    fillers = [fault_db.server.connect() for _ in range(10)]
    try:
        status = dict(fault_db.query("SHOW GLOBAL STATUS LIKE 'Threads_connected'"))
        limit = int(status["Threads_connected"]) - 1
        fault_db.query(f"SET GLOBAL max_connections = {limit}")
        with TestClient(app) as client:
            response = client.get("/ping")
    finally:
        for conn in fillers:
            conn.close()
    assert_json_503(response)
    assert response.json() == {"code": 2, "message": "Database Server Is Busy"}


def test_a_pool_used_by_threads_and_the_loop_at_once(db: Database) -> None:
    """Background-style threads and requests share one bounded pool."""
    with Pool(db.cfg, size=1, max_size=2, acquire_timeout=30) as pool:

        def work() -> None:
            for _ in range(20):
                with pool.fetch() as cursor:
                    cursor.execute("SELECT 1")

        async def main() -> None:
            async with anyio.create_task_group() as group:
                for _ in range(4):
                    group.start_soon(anyio.to_thread.run_sync, work)
                for _ in range(40):
                    async with pool.lease() as cursor:
                        cursor.execute("SELECT 1")

        anyio.run(main)
        stats = pool.stats()
        assert (stats.in_use, stats.opened) == (0, 2)
        assert stats.requests == 4 * 20 + 40


@pytest.mark.slow
def test_requests_queued_behind_a_failing_refill_fail_fast(db: Database) -> None:
    """size == max_size: the housekeeper's refill holds every slot while it
    tries to connect. When that fails, the queued request gets a slot, and
    fails fast with code 1: it does not wait out acquire_timeout for code 2."""
    with socket.create_server(("127.0.0.1", 0)) as black_hole:  # never answers
        cfg = {**db.cfg, "port": black_hole.getsockname()[1], "connect_timeout": 1}
        app = FastAPI(
            lifespan=mysql_pool_lifespan(
                cfg, size=2, max_size=2, fillup=False, acquire_timeout=5
            )
        )

        @app.get("/ping")
        def ping(cursor: Cursor) -> None:
            cursor.execute("SELECT 1")

        with TestClient(app) as client:
            started = time.monotonic()
            response = client.get("/ping")  # queued: the refill has the slots
            elapsed = time.monotonic() - started
    assert response.json()["code"] == 1
    assert elapsed < 3  # the refill's connect_timeout, not acquire_timeout


@pytest.mark.destructive
@pytest.mark.slow
def test_no_refill_storm_while_the_server_is_full(fault_db: Database) -> None:
    """Refilling against "Too many connections" backs off too."""
    fillers = [fault_db.server.connect() for _ in range(10)]
    try:
        status = dict(fault_db.query("SHOW GLOBAL STATUS LIKE 'Threads_connected'"))
        fault_db.query(
            f"SET GLOBAL max_connections = {int(status['Threads_connected']) - 1}"
        )
        pool = Pool(fault_db.cfg, size=2, max_size=2, fillup=False)
        try:
            time.sleep(2)  # the behaviour under test: what it does meanwhile
            attempts = pool.stats().errors
        finally:
            pool.close()
    finally:
        for conn in fillers:
            conn.close()
    # Backing off from 0.1 s, doubling: a handful of tries in 2 s, not thousands.
    assert 1 <= attempts <= 10, attempts
