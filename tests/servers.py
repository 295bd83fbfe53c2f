"""Test helpers: a per-test database user, and uvicorn in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from fastapi_mysqlpool._config import ConnectConfig


class Database:
    """A MySQL user of its own for one test, and an admin connection to check on it."""

    def __init__(self, server: Any, user: str, password: str) -> None:
        self.server = server
        self.user = user
        self.password = password
        self._admin: Any = None

    @property
    def cfg(self) -> dict[str, Any]:
        """Connection arguments for a pool (as this test's user)."""
        return {
            "host": self.server.host,
            "port": self.server.port,
            "user": self.user,
            "password": self.password,
            "database": self.server.database,
        }

    @property
    def url(self) -> str:
        return (
            f"mysql://{self.user}:{self.password}@{self.server.host}:"
            f"{self.server.port}/{self.server.database}"
        )

    @property
    def target(self) -> str:
        return ConnectConfig(self.cfg).target

    @property
    def admin(self) -> Any:
        """An autocommit root connection, reopened if the server restarted."""
        if self._admin is not None:
            try:
                self._admin.ping()
            except Exception:
                self.close()
        if self._admin is None:
            self._admin = self.server.connect()
        return self._admin

    def close(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None

    def query(self, sql: str, args: Any = None) -> tuple[Any, ...]:
        cursor = self.admin.cursor()
        cursor.execute(sql, args)
        rows = cursor.fetchall()
        return tuple(rows)

    def scalar(self, sql: str, args: Any = None) -> Any:
        return self.query(sql, args)[0][0]

    def create_table(self, name: str, columns: str) -> str:
        """A table named after this test's user (unique), created empty."""
        table = f"{self.user}_{name}"
        self.query(f"DROP TABLE IF EXISTS `{table}`")
        self.query(f"CREATE TABLE `{table}` ({columns}) ENGINE=InnoDB")
        return table

    def connection_ids(self) -> set[int]:
        """Server-side ids of this user's open connections."""
        rows = self.query(
            "SELECT id FROM information_schema.processlist WHERE user = %s",
            (self.user,),
        )
        return {row[0] for row in rows}

    def connection_count(self, settle_at: int | None = None) -> int:
        """This user's connections on the server. With *settle_at*, give the
        server up to 5 s to reach that count: it drops a session shortly
        after the client's QUIT, and lists one before its handshake ends."""
        deadline = time.monotonic() + 5
        count = len(self.connection_ids())
        while settle_at is not None and count != settle_at:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
            count = len(self.connection_ids())
        return count

    def open_transactions(self) -> int:
        """InnoDB transactions open on this user's connections."""
        return int(
            self.scalar(
                "SELECT COUNT(*) FROM information_schema.innodb_trx t "
                "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                "WHERE p.user = %s",
                (self.user,),
            )
        )

    def kill_when_running(self, connection_id: int, statement_start: str) -> None:
        """KILL a connection once it runs *statement_start*... (mid-query)."""
        self.wait_running(connection_id, statement_start)
        self.query(f"KILL {int(connection_id)}")

    def wait_running(self, connection_id: int, statement_start: str) -> None:
        """Until the server shows the connection running a statement that starts
        with *statement_start*."""
        deadline = time.monotonic() + 10
        running = (
            "SELECT 1 FROM information_schema.processlist "
            "WHERE id = %s AND info LIKE %s"
        )
        while not self.query(running, (connection_id, statement_start + "%")):
            if time.monotonic() > deadline:
                raise AssertionError(f"{statement_start!r} never ran")
            time.sleep(0.005)

    def kill_connections(self, admin: Any = None) -> int:
        """KILL every connection of this user; returns how many."""
        admin = admin or self.admin
        cursor = admin.cursor()
        cursor.execute(
            "SELECT id FROM information_schema.processlist WHERE user = %s",
            (self.user,),
        )
        ids = [row[0] for row in cursor.fetchall()]
        for thread_id in ids:
            with contextlib.suppress(Exception):
                cursor.execute(f"KILL {int(thread_id)}")
        return len(ids)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@contextlib.contextmanager
def serve(app: Any, **config: Any) -> Iterator[str]:
    """Run *app* in a real uvicorn server (own thread and loop); yield its URL.

    Raises if startup fails. Leaving the block shuts the server down (uvicorn
    finishes in-flight requests, then runs the lifespan shutdown).
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = {"log_level": "warning", "lifespan": "on", "loop": "asyncio", **config}
    server = _Server(uvicorn.Config(app, **options))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)
        finally:
            server.ready.set()

    thread = threading.Thread(target=run, name="uvicorn", daemon=True)
    thread.start()
    try:
        server.ready.wait(timeout=60)
        if not server.started:
            raise RuntimeError(f"uvicorn did not start: {errors}")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("uvicorn did not shut down")
