"""A 3-node Galera cluster (started once for the module): connections spread
over Synced nodes, a desynced node left, a killed node costs only what ran
on it, and write conflicts between nodes answer code 3 or are retried."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI

from fastapi_mysqlpool import Cursor, Pool, add_pool_task, mysql_pool_lifespan

from .galera import GaleraNode, galera_cluster
from .servers import serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[GaleraNode]]:
    with galera_cluster() as cluster:
        yield cluster


class App:
    """A user of its own (replicated by Galera to every node) and a table."""

    def __init__(self, nodes: list[GaleraNode]) -> None:
        self.nodes = nodes
        self.user = f"g{secrets.token_hex(4)}"
        self.password = secrets.token_hex(8)
        self.admin(f"CREATE USER '{self.user}'@'%%' IDENTIFIED BY %s", (self.password,))
        self.admin(f"GRANT ALL ON test.* TO '{self.user}'@'%'")
        self.table = f"test.{self.user}_rows"
        self.admin(f"CREATE TABLE {self.table} (id INT PRIMARY KEY, v INT)")
        self.admin(f"INSERT INTO {self.table} VALUES (1, 0)")

    def admin(self, sql: str, args: Any = None, node: int = 0) -> Any:
        with contextlib.closing(self.nodes[node].connect()) as conn:
            cursor = conn.cursor()
            cursor.execute(sql, args)
            return cursor.fetchall()

    def cfg(self, order: tuple[int, ...] = (0, 1, 2)) -> dict[str, Any]:
        return {
            "host": [f"127.0.0.1:{self.nodes[i].port}" for i in order],
            "user": self.user,
            "password": self.password,
            "database": "test",
            "connect_timeout": 1,
        }

    def sessions(self, node: int) -> int:
        rows = self.admin(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE user = %s",
            (self.user,),
            node,
        )
        return int(rows[0][0])


@pytest.fixture
def app_user(nodes: list[GaleraNode]) -> App:
    return App([node for node in nodes if node.running])


def wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)  # a server's state: nothing to wait on


def test_target_any_spreads_over_the_nodes(app_user: App) -> None:
    with Pool(app_user.cfg(), size=6, target="any") as pool:
        stats = pool.stats()
        assert [h.connections for h in stats.hosts] == [2, 2, 2]
        assert [h.state for h in stats.hosts] == ["up"] * 3
        # The pool's, plus the monitor's (its thread connects on its own time).
        wait_for(lambda: [app_user.sessions(i) for i in range(3)] == [3, 3, 3], 3)


def test_a_desynced_node_takes_no_connections(app_user: App) -> None:
    with Pool(app_user.cfg(), size=6, target="any") as pool:
        app_user.admin("SET GLOBAL wsrep_desync = ON", node=2)
        try:
            wait_for(lambda: pool.stats().hosts[2].state == "not_synced", 2)
            wait_for(lambda: app_user.sessions(2) <= 1, 2)  # dropped
            with contextlib.ExitStack() as stack:  # new connections: elsewhere
                for _ in range(8):
                    cursor = stack.enter_context(pool.fetch())
                    cursor.execute("SELECT @@port")
                    assert cursor.fetchone()[0] != app_user.nodes[2].port
        finally:
            app_user.admin("SET GLOBAL wsrep_desync = OFF", node=2)
        wait_for(lambda: pool.stats().hosts[2].state == "up", 2)


def test_one_row_updated_on_two_nodes_one_wins_one_answers_code_3(
    app_user: App,
) -> None:
    both_updated = threading.Barrier(2, timeout=10)

    def make(order: tuple[int, ...]) -> FastAPI:
        app = FastAPI(lifespan=mysql_pool_lifespan(app_user.cfg(order), size=1))

        @app.post("/")
        def update(cursor: Cursor) -> int:
            cursor.execute(f"UPDATE {app_user.table} SET v = v + 1 WHERE id = 1")
            cursor.execute("SELECT @@port")
            port = int(cursor.fetchone()[0])
            both_updated.wait()  # then both commit
            return port

        return app

    answers: list[httpx.Response] = []
    with serve(make((0, 1, 2))) as url0, serve(make((1, 0, 2))) as url1:

        def post(url: str) -> None:
            answers.append(httpx.post(url, timeout=20))

        threads = [threading.Thread(target=post, args=(u,)) for u in (url0, url1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 503], [a.text for a in answers]
    lost = next(a for a in answers if a.status_code == 503)
    assert lost.json() == {"code": 3, "message": "Database Conflict, Try Again"}
    assert app_user.admin(f"SELECT v FROM {app_user.table}")[0][0] == 1


def test_add_pool_task_with_retries_completes_despite_conflicts(app_user: App) -> None:
    attempts: list[int] = []
    done = threading.Event()
    other = app_user.nodes[0]

    def task(cursor: Any) -> None:
        attempts.append(1)
        cursor.execute(f"UPDATE {app_user.table} SET v = v + 1 WHERE id = 1")
        if len(attempts) <= 2:
            # A conflicting write committed on another node: replicated
            # here, it aborts this transaction (Galera's brute-force abort).
            with contextlib.closing(other.connect()) as conn:
                conn.cursor().execute(
                    f"UPDATE {app_user.table} SET v = v + 100 WHERE id = 1"
                )
        cursor.execute("SELECT 1")
        done.set()

    app = FastAPI(lifespan=mysql_pool_lifespan(app_user.cfg((1, 0, 2)), size=1))

    @app.post("/")
    def route(background: BackgroundTasks) -> str:
        add_pool_task(background, task, retries=3)
        return "queued"

    with serve(app) as url:
        assert httpx.post(url, timeout=20).status_code == 200
    assert done.is_set()
    assert len(attempts) == 3
    assert app_user.admin(f"SELECT v FROM {app_user.table}")[0][0] == 201


def test_a_node_killed_under_load_costs_only_its_requests_in_flight(
    app_user: App,
) -> None:
    clients = 6
    app = FastAPI(lifespan=mysql_pool_lifespan(app_user.cfg(), size=6, target="any"))

    @app.post("/{key}")
    def write(key: int, cursor: Cursor) -> str:
        cursor.execute(f"INSERT INTO {app_user.table} VALUES (%s, 0)", (1000 + key,))
        return "ok"

    keys = iter(range(1_000_000))
    results: list[tuple[float, int]] = []
    stop = threading.Event()

    def client(url: str) -> None:
        with httpx.Client(base_url=url, timeout=20) as http:
            while not stop.is_set():
                response = http.post(f"/{next(keys)}")
                code = response.json()["code"] if response.status_code != 200 else 0
                results.append((time.monotonic(), response.status_code * 10 + code))

    with serve(app) as url:
        threads = [threading.Thread(target=client, args=(url,)) for _ in range(clients)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(results) >= 100, 20)
        app_user.nodes[2].kill()
        killed = time.monotonic()
        wait_for(lambda: sum(1 for t, _ in results if t > killed + 1) >= 100, 20)
        stop.set()
        for thread in threads:
            thread.join()
    failures = [outcome for _, outcome in results if outcome != 2000]
    # At most one request per client was on the killed node when it died.
    assert len(failures) <= clients, failures
    assert set(failures) <= {5031}
    assert all(outcome == 2000 for t, outcome in results if t > killed + 1)
