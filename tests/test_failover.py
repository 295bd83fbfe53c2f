"""Several hosts on real servers: only a writable host for "primary", all
for "any"; a demoted host is left within a second, a promoted one found."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_mysqlpool import Cursor, Pool, QueryTimeout, mysql_pool_lifespan
from fastapi_mysqlpool.testing import TemporaryServer

pytestmark = pytest.mark.usefixtures("two_servers")


@pytest.fixture(scope="module")
def two_servers() -> Iterator[list[TemporaryServer]]:
    with contextlib.ExitStack() as stack:
        # One at a time: concurrent initializations share temporary files.
        servers = [stack.enter_context(TemporaryServer()) for _ in range(2)]
        yield servers


class Cluster:
    """The same user on every server, and helpers to promote and demote."""

    def __init__(self, servers: list[TemporaryServer]) -> None:
        self.servers = servers
        self.user = f"ha{secrets.token_hex(4)}"
        self.password = f"pw-{secrets.token_hex(8)}"
        for server in servers:
            self.admin(
                server,
                f"CREATE USER '{self.user}'@'%%' IDENTIFIED BY %s",
                (self.password,),
            )
            self.admin(server, f"GRANT ALL ON test.* TO '{self.user}'@'%'")
            self.admin(server, f"GRANT PROCESS ON *.* TO '{self.user}'@'%'")
            self.admin(
                server,
                "CREATE TABLE IF NOT EXISTS test.writes "
                "(id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
            )

    def admin(self, server: TemporaryServer, sql: str, args: Any = None) -> Any:
        with contextlib.closing(server.connect()) as conn:
            cursor = conn.cursor()
            cursor.execute(sql, args)
            return cursor.fetchall()

    def read_only(self, server: TemporaryServer, on: bool) -> None:
        self.admin(server, f"SET GLOBAL read_only = {int(on)}")

    def sessions(self, server: TemporaryServer) -> int:
        rows = self.admin(
            server,
            "SELECT COUNT(*) FROM information_schema.processlist WHERE user = %s",
            (self.user,),
        )
        return int(rows[0][0])

    def cfg(self) -> dict[str, Any]:
        return {
            "host": [f"127.0.0.1:{s.port}" for s in self.servers],
            "user": self.user,
            "password": self.password,
            "database": "test",
        }

    def close(self) -> None:
        for server in self.servers:
            if server.running:
                self.read_only(server, False)
                with contextlib.suppress(Exception):
                    self.admin(server, f"DROP USER '{self.user}'@'%'")


@pytest.fixture
def cluster(two_servers: list[TemporaryServer]) -> Iterator[Cluster]:
    for server in two_servers:
        if not server.running:
            server.start()
    made = Cluster(two_servers)
    try:
        yield made
    finally:
        made.close()


def wait_for(condition: Any, timeout: float) -> float:
    """Poll *condition* (no event to wait on: a server's state) until true;
    the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
    return time.monotonic() - started


def write_app(cluster: Cluster, **options: Any) -> FastAPI:
    app = FastAPI(lifespan=mysql_pool_lifespan(cluster.cfg(), **options))

    @app.post("/")
    def write(cursor: Cursor) -> int:
        cursor.execute("INSERT INTO writes (v) VALUES (1)")
        cursor.execute("SELECT @@port")
        return int(cursor.fetchone()[0])

    return app


def test_primary_connects_only_to_the_writable_host(cluster: Cluster) -> None:
    a, b = cluster.servers
    cluster.read_only(a, True)
    with Pool(cluster.cfg(), size=3) as pool:
        assert cluster.sessions(a) <= 1  # the monitor's, at most
        with pool.fetch() as cursor:
            cursor.execute("SELECT @@port")
            assert cursor.fetchone()[0] == b.port
        stats = pool.stats()
        assert [(h.state, h.current, h.connections) for h in stats.hosts] == [
            ("read_only", False, 0),
            ("up", True, 3),
        ]
        assert stats.current_hosts == (f"127.0.0.1:{b.port}",)
        assert cluster.password not in repr(stats)


def test_a_demoted_primary_is_left_and_a_promoted_one_serves_within_a_second(
    cluster: Cluster,
) -> None:
    a, b = cluster.servers
    cluster.read_only(b, True)
    with TestClient(write_app(cluster, size=2)) as client:
        assert client.post("/").json() == a.port
        # The switchover: a demoted, b promoted.
        cluster.read_only(a, True)
        cluster.read_only(b, False)
        promoted = time.monotonic()
        while True:
            response = client.post("/")
            if response.status_code == 200:
                break
            assert (response.status_code, response.json()["code"]) == (503, 1)
            assert time.monotonic() - promoted < 1.5
        assert response.json() == b.port
        # Connections to the demoted host are dropped, none opened again.
        wait_for(lambda: cluster.sessions(a) <= 1, 2)


def test_with_no_writable_host_requests_fail_fast_and_recover_without_traffic(
    cluster: Cluster,
) -> None:
    a, b = cluster.servers
    cluster.read_only(a, True)
    cluster.read_only(b, True)
    app = write_app(cluster, size=2, fillup=False)
    with TestClient(app) as client:
        for _ in range(5):
            started = time.monotonic()
            response = client.post("/")
            assert (response.status_code, response.json()["code"]) == (503, 1)
            assert response.headers["Retry-After"] == "1"
            assert time.monotonic() - started < 0.5
        pool = app.state.mysql_pool if hasattr(app.state, "mysql_pool") else None
        cluster.read_only(b, False)
        # The pool notices by itself and opens its connections to b.
        took = wait_for(lambda: cluster.sessions(b) >= 3, 3)  # 2 + the monitor
        assert took < 1.2
        assert client.post("/").json() == b.port
        del pool


def test_a_stopped_host_is_skipped(cluster: Cluster) -> None:
    a, b = cluster.servers
    with Pool(cluster.cfg(), size=2) as pool:
        a.kill()
        try:
            for _ in range(5):
                with pool.fetch() as cursor:
                    cursor.execute("SELECT @@port")
                    assert cursor.fetchone()[0] == b.port
            wait_for(lambda: pool.stats().hosts[0].state == "down", 1)
            assert (pool.stats().hosts[0].last_error or "").startswith("(20")
        finally:
            a.start()
        # Back: a is the primary again (the first writable in order).
        wait_for(lambda: pool.stats().hosts[0].state == "up", 3)
        assert pool.stats().current_hosts == (f"127.0.0.1:{a.port}",)


def test_target_any_spreads_over_every_healthy_host(cluster: Cluster) -> None:
    a = cluster.servers[0]
    cluster.read_only(a, True)  # read-only hosts serve "any"
    with Pool(cluster.cfg(), size=6, target="any") as pool:
        stats = pool.stats()
        assert [h.connections for h in stats.hosts] == [3, 3]
        assert len(stats.current_hosts) == 2


def test_a_timed_out_statement_is_killed_on_its_own_host(cluster: Cluster) -> None:
    """With target="any" the pool's sessions live on both hosts: the KILL of
    a statement that outlasted read_timeout goes to the one it runs on (the
    pool's own choice of host would be the other, the first in order)."""
    b = cluster.servers[1]

    def sleeping() -> int:
        rows = cluster.admin(
            b,
            "SELECT COUNT(*) FROM information_schema.processlist "
            "WHERE user = %s AND info LIKE 'SELECT SLEEP%%'",
            (cluster.user,),
        )
        return int(rows[0][0])

    def sleep_on_b(pool: Pool) -> None:
        with pool.fetch() as first, pool.fetch() as second:
            on_b = []
            for cursor in (first, second):
                cursor.execute("SELECT @@port")
                if cursor.fetchone()[0] == b.port:
                    on_b.append(cursor)
            assert len(on_b) == 1
            on_b[0].execute("SELECT SLEEP(5)")

    with Pool({**cluster.cfg(), "read_timeout": 1}, size=2, target="any") as pool:
        assert [h.connections for h in pool.stats().hosts] == [1, 1]
        with pytest.raises(QueryTimeout):
            sleep_on_b(pool)
        assert sleeping() == 0


def test_a_write_refused_as_read_only_leaves_the_host_at_once(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without waiting for the monitor (made slow here): the refused write
    itself marks the host down."""
    from fastapi_mysqlpool import _hosts

    monkeypatch.setattr(_hosts, "MONITOR_INTERVAL", 60.0)
    a, b = cluster.servers
    with TestClient(write_app(cluster, size=1)) as client:
        assert client.post("/").json() == a.port
        cluster.read_only(a, True)
        refused = client.post("/")
        assert (refused.status_code, refused.json()["code"]) == (503, 1)
        assert client.post("/").json() == b.port
        assert cluster.sessions(a) == 1  # the monitor's only
