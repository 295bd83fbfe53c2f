"""A throwaway primary and two replicas with GTID replication, for tests."""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import time
from collections.abc import Iterator
from typing import Any

from fastapi_mysqlpool.testing import TemporaryServer

_FAST = {
    "innodb_flush_log_at_trx_commit": 2,
    "sync_binlog": 0,
    "innodb_buffer_pool_size": "32M",
}


class Replication:
    """A primary and replicas, each a :class:`TemporaryServer` of its own."""

    def __init__(self, replicas: int = 2) -> None:
        self.primary = TemporaryServer(
            options={
                **_FAST,
                "server_id": 1,
                "log_bin": "primary-bin",
                "binlog_format": "ROW",
                # A stored function for the tests of the replicas' read_only.
                "log_bin_trust_function_creators": 1,
            }
        )
        self.replicas = [
            TemporaryServer(
                options={
                    **_FAST,
                    "server_id": 2 + i,
                    "read_only": 1,
                    "relay_log": "relay-bin",
                    "relay_log_recovery": 1,
                }
            )
            for i in range(replicas)
        ]

    @property
    def servers(self) -> list[TemporaryServer]:
        return [self.primary, *self.replicas]

    def start(self) -> None:
        # One data directory initialized, copied for the replicas (parallel
        # bootstraps may collide on their temporary files), then all three
        # started at once.
        primary = self.primary
        primary._initialize()
        for replica in self.replicas:
            shutil.copytree(primary.datadir, replica.datadir)
        with concurrent.futures.ThreadPoolExecutor(len(self.servers)) as starts:
            for started in [starts.submit(s.start) for s in self.servers]:
                started.result()
        for replica in self.replicas:
            self.attach(replica)

    def attach(self, replica: TemporaryServer) -> None:
        with contextlib.closing(replica.connect()) as conn:
            cursor = conn.cursor()
            cursor.execute("STOP SLAVE")
            cursor.execute(
                "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER='root', "
                "MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, "
                "MASTER_CONNECT_RETRY=1",
                (self.primary.host, self.primary.port),
            )
            cursor.execute("START SLAVE")

    def close(self) -> None:
        for server in reversed(self.servers):
            with contextlib.suppress(Exception):
                server.close()

    def __enter__(self) -> Replication:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- checks ------------------------------------------------------------------

    def primary_gtid(self) -> str:
        with contextlib.closing(self.primary.connect()) as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT @@gtid_binlog_pos")
            return str(cursor.fetchone()[0])

    def wait_synced(self, *replicas: TemporaryServer, timeout: float = 10) -> None:
        """Until *replicas* (default: all) applied everything the primary wrote
        (MASTER_GTID_WAIT: the server's own wait, no polling)."""
        position = self.primary_gtid()
        for replica in replicas or self.replicas:
            with contextlib.closing(replica.connect()) as conn:
                cursor = conn.cursor()
                cursor.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (position, timeout))
                if cursor.fetchone()[0] != 0:
                    raise AssertionError(f"{replica!r} did not catch up")

    def on(self, server: TemporaryServer, sql: str, args: Any = None) -> Any:
        """Run *sql* as root on *server*; its rows."""
        with contextlib.closing(server.connect()) as conn:
            cursor = conn.cursor()
            cursor.execute(sql, args)
            return cursor.fetchall()

    def replica_status(self, server: TemporaryServer) -> dict[str, Any]:
        with contextlib.closing(server.connect()) as conn:
            cursor = conn.cursor()
            cursor.execute("SHOW SLAVE STATUS")
            names = [d[0] for d in cursor.description]
            return dict(zip(names, cursor.fetchone(), strict=True))


@contextlib.contextmanager
def replication() -> Iterator[Replication]:
    started = time.monotonic()
    with Replication() as servers:
        servers.startup_seconds = time.monotonic() - started  # type: ignore[attr-defined]
        yield servers
