"""Reads on real GTID replication: a primary and two replicas started here."""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_mysqlpool import (
    AsyncCursor,
    AsyncReadCursor,
    ReadCursor,
    get_pool,
    mysql_pool_lifespan,
)
from fastapi_mysqlpool._replicas import ReplicaSet
from fastapi_mysqlpool.testing import TemporaryServer

from .replication import Replication

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers() -> Iterator[Replication]:
    with Replication() as replication:
        yield replication


_users = itertools.count()


class User:
    """A user of its own on the primary (replicated), and a table."""

    def __init__(self, servers: Replication) -> None:
        self.servers = servers
        self.name = f"r{next(_users)}_{secrets.token_hex(3)}"
        self.password = f"pw-{secrets.token_hex(8)}"
        self.table = f"{self.name}_items"
        primary = servers.primary
        for sql in (
            f"CREATE USER '{self.name}'@'%' IDENTIFIED BY '{self.password}'",
            f"GRANT ALL ON `test`.* TO '{self.name}'@'%'",
            f"GRANT PROCESS, SLAVE MONITOR ON *.* TO '{self.name}'@'%'",
            f"CREATE TABLE test.`{self.table}` (id INT PRIMARY KEY, v INT)",
            f"INSERT INTO test.`{self.table}` VALUES (1, 0)",
        ):
            servers.on(primary, sql)
        servers.wait_synced()

    def url(self, server: TemporaryServer) -> str:
        return f"mysql://{self.name}:{self.password}@{server.host}:{server.port}/test"

    def connections(self, server: TemporaryServer) -> int:
        rows = self.servers.on(
            server,
            "SELECT COUNT(*) FROM information_schema.processlist WHERE user = %s",
            (self.name,),
        )
        return int(rows[0][0])

    def drop(self) -> None:
        with contextlib.suppress(Exception):
            self.servers.on(self.servers.primary, f"DROP USER '{self.name}'@'%'")


@pytest.fixture
def user(servers: Replication) -> Iterator[User]:
    made = User(servers)
    yield made
    made.drop()


def make_app(user: User, **options: Any) -> FastAPI:
    servers = user.servers
    options.setdefault("replicas", [user.url(r) for r in servers.replicas])
    app = FastAPI(
        lifespan=mysql_pool_lifespan(user.url(servers.primary), size=2, **options)
    )
    table = user.table

    @app.get("/server")
    async def server(cursor: AsyncReadCursor) -> int:
        await cursor.execute("SELECT @@server_id")
        return int((await cursor.fetchone())[0])

    @app.get("/server-sync")
    def server_sync(cursor: ReadCursor) -> int:
        cursor.execute("SELECT @@server_id")
        return int(cursor.fetchone()[0])

    @app.post("/items/{id}")
    async def create(id: int, cursor: AsyncCursor) -> int:
        await cursor.execute(f"INSERT INTO `{table}` VALUES (%s, 0)", (id,))
        await cursor.execute("SELECT @@server_id")
        return int((await cursor.fetchone())[0])

    @app.get("/items/{id}")
    async def read(id: int, cursor: AsyncReadCursor) -> list[Any]:
        await cursor.execute(
            f"SELECT id, @@server_id FROM `{table}` WHERE id=%s", (id,)
        )
        return list(await cursor.fetchall())

    @app.post("/refused/{id}")
    async def refused(id: int, cursor: AsyncReadCursor) -> None:
        await cursor.execute(f"INSERT INTO `{table}` VALUES (%s, 0)", (id,))

    @app.post("/raw/{id}")
    def raw(id: int, cursor: ReadCursor) -> int:
        # Around the cursor's check: the server's read_only must refuse it.
        cursor.execute("SELECT @@server_id")
        server_id = int(cursor.fetchone()[0])
        cursor.connection.query(f"INSERT INTO `{table}` VALUES ({id}, 0)")
        return server_id

    return app


def replica_set(app: FastAPI) -> ReplicaSet:
    router = get_pool(app).read_router
    assert isinstance(router, ReplicaSet)
    return router


def server_ids(client: TestClient, count: int, path: str = "/server") -> Counter[int]:
    answers = [client.get(path) for _ in range(count)]
    assert all(a.status_code == 200 for a in answers), [a.json() for a in answers]
    return Counter(a.json() for a in answers)


def test_reads_go_to_both_replicas_and_writes_to_the_primary(user: User) -> None:
    app = make_app(user)
    with TestClient(app) as client:
        pool = get_pool(app)
        assert [r.state for r in pool.replicas] == ["healthy", "healthy"]
        assert server_ids(client, 20) == {2: 10, 3: 10}  # round robin on ties
        assert server_ids(client, 10, "/server-sync") == {2: 5, 3: 5}
        assert client.post("/items/7").json() == 1
        user.servers.wait_synced()
        seen = {tuple(client.get("/items/7").json()[0]) for _ in range(4)}
        assert seen == {(7, 2), (7, 3)}
        stats = pool.stats()
        assert [r.state for r in stats.replicas] == ["healthy", "healthy"]
        assert all(r.lag is not None and r.lag < 5 for r in stats.replicas)
        assert sum(r.pool.requests for r in stats.replicas) == 34
        assert stats.requests == 1  # the write only
        # The replicas' connections are in autocommit: nothing for reset.
        assert all(r.pool.resets == 0 for r in stats.replicas)


def test_a_write_through_a_read_cursor_is_refused(user: User) -> None:
    servers = user.servers
    app = make_app(user)
    with TestClient(app, raise_server_exceptions=False) as client:
        # Refused before it is sent, on a replica...
        answer = client.post("/refused/8")
        assert (answer.status_code, answer.json()["code"]) == (500, 0)
        # ...and by the replicas' read_only when sent around the check.
        for _ in range(2):
            answer = client.post("/raw/9")
            assert (answer.status_code, answer.json()["code"]) == (500, 0)
        for server in servers.replicas:
            assert servers.on(server, f"SELECT id FROM test.`{user.table}`") == ((1,),)
    # And on the primary (no replicas): refused before it is sent.
    app = make_app(user, replicas=None)
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/refused/8")
        assert (answer.status_code, answer.json()["code"]) == (500, 0)
        assert client.get("/server").json() == 1
    rows = servers.on(servers.primary, f"SELECT id FROM test.`{user.table}`")
    assert rows == ((1,),)


def test_a_stopped_replica_takes_no_reads_until_it_runs_again(
    user: User, caplog: pytest.LogCaptureFixture
) -> None:
    servers = user.servers
    stopped = servers.replicas[0]
    app = make_app(user)
    caplog.set_level(logging.INFO, "fastapi_mysqlpool")
    with TestClient(app) as client:
        replica = get_pool(app).replicas[0]
        try:
            servers.on(stopped, "STOP SLAVE SQL_THREAD")
            started = time.monotonic()
            assert replica_set(app).wait_state(replica, "stopped", 3)
            assert time.monotonic() - started < 2.5
            assert server_ids(client, 10) == {3: 10}
        finally:
            servers.on(stopped, "START SLAVE SQL_THREAD")
        assert replica_set(app).wait_state(replica, "healthy", 3)
        assert server_ids(client, 10) == {2: 5, 3: 5}
    changes = [r.getMessage() for r in caplog.records if "replica" in r.getMessage()]
    target = replica.target
    assert [m for m in changes if target in m and "stopped" in m] == [
        f"replica {target} is stopped: it takes no new reads"
    ]
    assert len([m for m in changes if target in m and "healthy" in m]) == 2  # 2x


def test_a_lagging_replica_takes_no_reads_until_it_catches_up(user: User) -> None:
    servers = user.servers
    held = servers.replicas[1]
    app = make_app(user, max_replica_lag=1)
    with TestClient(app) as client:
        replica = get_pool(app).replicas[1]
        # A row lock held on the replica holds its SQL thread: it lags.
        with contextlib.closing(held.connect()) as lock:
            cursor = lock.cursor()
            cursor.execute("BEGIN")
            cursor.execute(f"SELECT * FROM test.`{user.table}` WHERE id=1 FOR UPDATE")
            servers.on(
                servers.primary, f"UPDATE test.`{user.table}` SET v=1 WHERE id=1"
            )
            assert replica_set(app).wait_state(replica, "lagging", 5)
            assert get_pool(app).stats().replicas[1].lag > 1
            assert server_ids(client, 10) == {2: 10}
            cursor.execute("ROLLBACK")
        assert replica_set(app).wait_state(replica, "healthy", 5)
        assert server_ids(client, 10) == {2: 5, 3: 5}


def test_a_killed_replica_fails_over_without_failed_requests(user: User) -> None:
    servers = user.servers
    killed = servers.replicas[0]
    app = make_app(user)
    with TestClient(app) as client:
        replica = get_pool(app).replicas[0]
        assert server_ids(client, 10) == {2: 5, 3: 5}  # connections open on both
        killed.kill()
        try:
            # No request in flight at the kill: none may fail.
            assert server_ids(client, 20) == {3: 20}
            assert replica.state == "unreachable"
        finally:
            killed.start()
        assert replica_set(app).wait_state(replica, "healthy", 10)
        assert server_ids(client, 10) == {2: 5, 3: 5}


def test_with_no_healthy_replica_reads_fall_back_to_the_primary_or_fail(
    user: User,
) -> None:
    servers = user.servers
    for replica in servers.replicas:
        servers.on(replica, "STOP SLAVE")
    try:
        with TestClient(make_app(user)) as client:
            assert server_ids(client, 4) == {1: 4}
        app = make_app(user, replica_fallback=False)
        with TestClient(app, raise_server_exceptions=False) as client:
            answer = client.get("/server")
            assert (answer.status_code, answer.json()["code"]) == (503, 1)
            assert answer.headers["Retry-After"] == "1"
            assert [r.state for r in get_pool(app).stats().replicas] == [
                "stopped",
                "stopped",
            ]
    finally:
        for replica in servers.replicas:
            servers.on(replica, "START SLAVE")


def test_shutdown_closes_every_connection_on_every_server(user: User) -> None:
    servers = user.servers
    app = make_app(user, replica_max_size=3)
    with TestClient(app) as client:
        server_ids(client, 6)
        assert client.post("/items/11").json() == 1
        assert all(user.connections(s) > 0 for s in servers.servers)
        assert [r.pool.max_size for r in get_pool(app).stats().replicas] == [3, 3]
    for server in servers.servers:
        deadline = time.monotonic() + 5
        while user.connections(server) and time.monotonic() < deadline:
            time.sleep(0.01)  # the server drops a session shortly after QUIT
        assert user.connections(server) == 0, server


def test_the_lag_from_a_heartbeat_table(user: User) -> None:
    servers = user.servers
    beat = f"test.`{user.name}_heartbeat`"
    servers.on(servers.primary, f"CREATE TABLE {beat} (ts DATETIME(6))")
    servers.on(servers.primary, f"INSERT INTO {beat} VALUES (UTC_TIMESTAMP(6))")
    query = f"SELECT TIMESTAMPDIFF(MICROSECOND, ts, UTC_TIMESTAMP(6)) / 1e6 FROM {beat}"
    app = make_app(user, replica_lag_query=query, replica_fallback=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        replicas = get_pool(app).replicas
        assert [r.state for r in replicas] == ["healthy", "healthy"]
        assert server_ids(client, 4) == {2: 2, 3: 2}
        # A heartbeat 10 s old: both replicas 10 s behind.
        servers.on(servers.primary, f"UPDATE {beat} SET ts = ts - INTERVAL 10 SECOND")
        for replica in replicas:
            assert replica_set(app).wait_state(replica, "lagging", 3)
        assert get_pool(app).stats().replicas[0].lag >= 10
        assert client.get("/server").json()["code"] == 1
        servers.on(servers.primary, f"UPDATE {beat} SET ts = UTC_TIMESTAMP(6)")
        for replica in replicas:
            assert replica_set(app).wait_state(replica, "healthy", 3)
        assert server_ids(client, 4) == {2: 2, 3: 2}


def test_a_replica_takes_what_it_leaves_out_from_the_primary() -> None:
    from fastapi_mysqlpool._config import make_config
    from fastapi_mysqlpool._replicas import replica_config

    primary = make_config("mysql://app:s3cret@primary:3306/shop?read_timeout=7")
    url = replica_config(primary, "mysql://replica1:3307")
    assert (url["host"], url["port"], url["user"], url["password"]) == (
        "replica1",
        3307,
        "app",
        "s3cret",
    )
    assert (url["database"], url["read_timeout"], url["autocommit"]) == (
        "shop",
        7,
        True,
    )
    given = replica_config(primary, {"host": "r2", "db": "other", "passwd": "x"})
    assert (given["host"], given["db"], given["passwd"]) == ("r2", "other", "x")
    assert "database" not in given
    assert "password" not in given
    assert "port" not in given
    assert "s3cret" not in repr(url)
    with pytest.raises(TypeError):
        replica_config(primary, 42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"replica_max_size": 0}, ValueError),
        ({"max_replica_lag": 0}, ValueError),
        ({"max_replica_lag": float("nan")}, ValueError),
        ({"replicas": [42]}, TypeError),
    ],
)
def test_replica_options_are_checked_where_the_app_is_defined(
    options: dict[str, Any], error: type[Exception]
) -> None:
    options.setdefault("replicas", ["mysql://replica"])
    with pytest.raises(error):
        mysql_pool_lifespan("mysql://app@primary/shop", **options)
