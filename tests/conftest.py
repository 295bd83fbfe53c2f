"""Fixtures: real MariaDB servers, a user per test, a real uvicorn server.

By default the suite starts its own throwaway servers. Set
``FASTAPI_MYSQLPOOL_TEST_URL=mysql://root:pw@host:port/db`` (a user allowed to
create users and databases) to run against an existing server instead; tests
marked ``destructive`` (they stop, restart or reconfigure the server) are then
skipped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import MySQLdb
import pytest

from fastapi_mysqlpool._config import parse_url
from fastapi_mysqlpool.testing import TemporaryServer

from .servers import Database, serve

__all__ = ["serve"]

URL_ENV = "FASTAPI_MYSQLPOOL_TEST_URL"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ExistingServer:
    """The server named by FASTAPI_MYSQLPOOL_TEST_URL (never stopped by tests)."""

    def __init__(self, url: str) -> None:
        params = parse_url(url)
        self.host = params.get("host", "127.0.0.1")
        self.port = params.get("port", 3306)
        self.database = params.get("database", "test")
        self._admin = {k: v for k, v in params.items() if k != "database"}

    def connect(self, **overrides: Any) -> Any:
        params = {**self._admin, "database": self.database, "autocommit": True}
        params.update(overrides)
        return MySQLdb.connect(**{k: v for k, v in params.items() if v is not None})


@pytest.fixture(scope="session")
def server() -> Iterator[TemporaryServer | ExistingServer]:
    url = os.environ.get(URL_ENV)
    if url:
        yield ExistingServer(url)
        return
    with TemporaryServer() as temporary:
        yield temporary


@pytest.fixture(scope="session")
def disposable_server() -> Iterator[TemporaryServer]:
    """A second throwaway server that tests may stop, kill and reconfigure."""
    if os.environ.get(URL_ENV):
        pytest.skip(f"destructive test: needs its own server ({URL_ENV} is set)")
    with TemporaryServer() as temporary:
        yield temporary


_counter = itertools.count()


@contextlib.contextmanager
def _database(server: Any) -> Iterator[Database]:
    name = f"t{os.getpid()}_{next(_counter)}"
    password = f"pw-{secrets.token_hex(8)}"
    with contextlib.closing(server.connect()) as admin:
        cursor = admin.cursor()
        cursor.execute(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", (password,))
        cursor.execute(f"GRANT ALL ON `{server.database}`.* TO '{name}'@'%'")
        cursor.execute(f"GRANT PROCESS ON *.* TO '{name}'@'%'")
    db = Database(server, name, password)
    try:
        yield db
    finally:
        db.close()
        if not getattr(server, "running", True):
            server.start()  # a destructive test left it stopped
        with contextlib.closing(server.connect()) as admin:
            db.kill_connections(admin)
            admin.cursor().execute(f"DROP USER '{name}'@'%'")


@pytest.fixture
def make_db(server: Any) -> Iterator[Callable[[], Database]]:
    """Make fresh MySQL users, each with its own :class:`Database` helper."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(_database(server))


@pytest.fixture
def db(make_db: Callable[[], Database]) -> Database:
    """A fresh MySQL user (so its connections can be counted) and helpers."""
    return make_db()


@pytest.fixture
def numbers(db: Database) -> str:
    """A table of the numbers 0-999: crossed with itself, a million rows."""
    table = db.create_table("numbers", "n INT PRIMARY KEY")
    values = ",".join(f"({n})" for n in range(1000))
    db.query(f"INSERT INTO {table} VALUES {values}")
    return table


@pytest.fixture
def fault_db(disposable_server: TemporaryServer) -> Iterator[Database]:
    """:func:`db` on the disposable server, restored to defaults afterwards."""
    if not disposable_server.running:
        disposable_server.start()
    with _database(disposable_server) as database:
        yield database
    with contextlib.closing(disposable_server.connect()) as admin:
        cursor = admin.cursor()
        cursor.execute("SET GLOBAL max_connections = 151")
        cursor.execute("SET GLOBAL wait_timeout = 28800")
