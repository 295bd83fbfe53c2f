"""A real failover: semi-synchronous GTID replication, the primary SIGKILLed
under concurrent writes through uvicorn, the replica promoted by hand. The
app follows by itself, loses no acknowledged write, and never writes to the
old primary when it comes back read-only."""

from __future__ import annotations

import contextlib
import itertools
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import MySQLdb.cursors
import pytest
from fastapi import FastAPI

from fastapi_mysqlpool import Cursor, mysql_pool_lifespan
from fastapi_mysqlpool.testing import TemporaryServer

from .servers import serve

pytestmark = pytest.mark.slow

_SEMI_SYNC = {
    "log_bin": "binlog",
    "binlog_format": "ROW",
    "log_slave_updates": "ON",
    "gtid_strict_mode": "ON",
    "rpl_semi_sync_slave_enabled": "ON",
    "rpl_semi_sync_master_wait_point": "AFTER_SYNC",
}


def admin(server: TemporaryServer, sql: str, args: Any = None) -> Any:
    with contextlib.closing(server.connect()) as conn:
        cursor = conn.cursor(MySQLdb.cursors.DictCursor)
        cursor.execute(sql, args)
        return cursor.fetchall()


@pytest.fixture
def replicated() -> Iterator[tuple[TemporaryServer, TemporaryServer]]:
    with contextlib.ExitStack() as stack:
        primary = stack.enter_context(
            TemporaryServer(options={**_SEMI_SYNC, "server_id": 1})
        )
        replica = stack.enter_context(
            TemporaryServer(options={**_SEMI_SYNC, "server_id": 2, "read_only": 1})
        )
        # Turned on once started: each start writes (CREATE DATABASE), which
        # would wait for a replica's acknowledgement. A long timeout: never
        # fall back to asynchronous replication (which could lose writes).
        admin(primary, "SET GLOBAL rpl_semi_sync_master_timeout = 600000")
        admin(primary, "SET GLOBAL rpl_semi_sync_master_enabled = ON")
        admin(replica, "RESET MASTER")  # its own start's writes: forgotten
        admin(
            replica,
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = %s, "
            "MASTER_USER = 'root', MASTER_USE_GTID = slave_pos",
            (primary.port,),
        )
        admin(replica, "START SLAVE")
        deadline = time.monotonic() + 20
        while (
            admin(primary, "SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'")[0][
                "Value"
            ]
            != "1"
        ):
            assert time.monotonic() < deadline, "semi-sync never started"
            time.sleep(0.05)  # the server's state: nothing to wait on
        yield primary, replica


def promote(replica: TemporaryServer) -> None:
    """What an operator (or orchestrator) does: apply what was received,
    stop replicating, take writes."""
    admin(replica, "STOP SLAVE IO_THREAD")
    received = admin(replica, "SHOW SLAVE STATUS")[0]["Gtid_IO_Pos"]
    assert (
        admin(replica, "SELECT MASTER_GTID_WAIT(%s, 30) AS r", (received,))[0]["r"] == 0
    )
    admin(replica, "STOP SLAVE")
    admin(replica, "RESET SLAVE ALL")
    admin(replica, "SET GLOBAL read_only = 0")


class Writers:
    """Clients writing concurrently; each write a unique id."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.ids = itertools.count()
        self.acked: list[tuple[int, float]] = []  # (id, when answered)
        self.sent: dict[int, float] = {}  # id: when sent
        self.failed: list[tuple[int, int]] = []  # (status, code)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(count)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                write = next(self.ids)
                self.sent[write] = time.monotonic()
                response = client.post(f"/write/{write}")
                if response.status_code == 200:
                    self.acked.append((write, time.monotonic()))
                else:
                    body = response.json()
                    self.failed.append((response.status_code, body["code"]))

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def wait_acked(self, count: int, after: float = 0.0) -> float:
        """Until *count* writes answered after *after* were acknowledged;
        when the first of them was."""
        deadline = time.monotonic() + 20
        while True:
            later = [when for _, when in self.acked if when > after]
            if len(later) >= count:
                return min(later)
            assert time.monotonic() < deadline, self.failed[-5:]
            time.sleep(0.01)


def test_writes_follow_a_promoted_replica_and_none_is_lost(
    replicated: tuple[TemporaryServer, TemporaryServer],
) -> None:
    primary, replica = replicated
    user, password = f"app{secrets.token_hex(3)}", secrets.token_hex(8)
    # Replicated to the replica: the same user and table on both.
    admin(primary, f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
    admin(primary, f"GRANT ALL ON test.* TO '{user}'@'%'")
    admin(primary, "CREATE TABLE test.writes (id INT PRIMARY KEY)")
    position = admin(primary, "SELECT @@gtid_binlog_pos AS p")[0]["p"]
    assert (
        admin(replica, "SELECT MASTER_GTID_WAIT(%s, 30) AS r", (position,))[0]["r"] == 0
    )
    cfg = {
        "host": [f"127.0.0.1:{primary.port}", f"127.0.0.1:{replica.port}"],
        "user": user,
        "password": password,
        "database": "test",
        "connect_timeout": 1,
    }
    app = FastAPI(lifespan=mysql_pool_lifespan(cfg, size=4, acquire_timeout=2))

    @app.post("/write/{write}")
    def write_one(write: int, cursor: Cursor) -> str:
        cursor.execute("INSERT INTO writes VALUES (%s)", (write,))
        return "ok"

    with serve(app) as url, Writers(url, 4) as writers:
        writers.wait_acked(50)
        primary.kill()
        killed = time.monotonic()
        # Writes fail (503 code 1) while no host takes them.
        deadline = time.monotonic() + 10
        while not writers.failed:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        promote(replica)
        promoted = time.monotonic()
        first = writers.wait_acked(50, after=promoted)
        assert first - promoted < 2.0
        primary.options["read_only"] = 1
        primary.options["rpl_semi_sync_master_enabled"] = "OFF"
        primary.start()
        restarted = time.monotonic()
        old_rows = admin(primary, "SELECT COUNT(*) AS n FROM test.writes")[0]["n"]
        writers.wait_acked(50, after=restarted + 0.5)  # the monitor saw it
    assert set(writers.failed) <= {(503, 1)}
    acked = {write for write, _ in writers.acked}
    on_new = {row["id"] for row in admin(replica, "SELECT id FROM test.writes")}
    assert acked <= on_new, f"lost: {sorted(acked - on_new)[:10]}"
    # Nothing sent after the kill went to the old primary. (A write committed
    # there just before it may be acknowledged just after: it is on both.)
    on_old = {row["id"] for row in admin(primary, "SELECT id FROM test.writes")}
    sent_after_kill = {
        write for write, _ in writers.acked if writers.sent[write] > killed
    }
    assert sent_after_kill
    assert not on_old & sent_after_kill
    assert len(on_old) == old_rows  # none since its restart
    print(f"first write acknowledged {first - promoted:.3f} s after the promotion")
    assert admin(primary, "SELECT @@global.read_only AS r")[0]["r"] == 1
