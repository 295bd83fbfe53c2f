"""The pytest plugin, run as users run it: test files in a pytester directory,
against a real server (this test's user), through TestClient and httpx."""

from __future__ import annotations

import importlib.metadata
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from .servers import Database
from .test_quality import ROOT

pytest_plugins = ("pytester",)

# Loaded by its module name whether or not the entry point is installed.
PLUGIN_ARGS = ("-p", "no:fastapi_mysqlpool", "-p", "fastapi_mysqlpool.pytest_plugin")

# An app as a user writes one: sync and async routes, a failing route, a
# background task; the table is this test's (formatted in).
APP = """
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.testclient import TestClient

from fastapi_mysqlpool import (
    AsyncCursor, Cursor, add_pool_task, get_pool, mysql_pool_lifespan,
)

TABLE = "{table}"


def make_app(url):
    app = FastAPI(lifespan=mysql_pool_lifespan(url, size=1))

    @app.post("/sync/{{name}}")
    def add_sync(name: str, cursor: Cursor):
        cursor.execute(f"INSERT INTO {{TABLE}} (name) VALUES (%s)", (name,))
        return {{"id": cursor.lastrowid}}

    @app.post("/async/{{name}}")
    async def add_async(name: str, cursor: AsyncCursor):
        await cursor.execute(f"INSERT INTO {{TABLE}} (name) VALUES (%s)", (name,))
        return {{"id": cursor.lastrowid}}

    @app.post("/fail/{{name}}")
    async def add_then_fail(name: str, cursor: AsyncCursor):
        await cursor.execute(f"INSERT INTO {{TABLE}} (name) VALUES (%s)", (name,))
        raise HTTPException(409, "refused")

    @app.post("/fail-sync/{{name}}")
    def add_then_fail_sync(name: str, cursor: Cursor):
        cursor.execute(f"INSERT INTO {{TABLE}} (name) VALUES (%s)", (name,))
        raise HTTPException(409, "refused")

    @app.post("/later/{{name}}")
    def add_later(name: str, tasks: BackgroundTasks):
        add_pool_task(tasks, insert, name)
        add_pool_task(tasks, ainsert, name + "-async")

    @app.get("/names")
    async def names(cursor: AsyncCursor):
        await cursor.execute(f"SELECT name FROM {{TABLE}} ORDER BY name")
        return [row[0] for row in await cursor.fetchall()]

    @app.get("/names-sync")
    def names_sync(cursor: Cursor):
        cursor.execute(f"SELECT name FROM {{TABLE}} ORDER BY name")
        return [row[0] for row in cursor.fetchall()]

    return app


def insert(cursor, name):
    cursor.execute(f"INSERT INTO {{TABLE}} (name) VALUES (%s)", (name,))


async def ainsert(cursor, name):
    await cursor.execute(f"INSERT INTO {{TABLE}} (name) VALUES (%s)", (name,))


@pytest.fixture(scope="session")
def app(mysql_url):
    return make_app(mysql_url)


@pytest.fixture
def client(app, mysql_rollback):
    with TestClient(app) as client:
        yield client


@pytest.fixture
def committing_client(app):
    with TestClient(app) as client:
        yield client


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def aclient(app, mysql_rollback):
    # ASGITransport sends no lifespan events: LifespanManager runs startup
    # and shutdown around the client.
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test"
        ) as client:
            yield client
"""

SAME_KEY_TESTS = """
def test_{first}({client}):
    assert {client}.post("/sync/alice").status_code == 200
    assert {client}.get("/names").json() == ["alice"]


def test_{second}({client}):
    assert {client}.post("/async/alice").status_code == 200
    assert {client}.get("/names-sync").json() == ["alice"]
"""


@pytest.fixture
def users(db: Database) -> str:
    return db.create_table(
        "users", "id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40) NOT NULL UNIQUE"
    )


@pytest.fixture
def run(
    pytester: pytest.Pytester, db: Database, users: str
) -> Callable[..., pytest.RunResult]:
    """Write *conftest* (the app) and *tests*, run pytest on them in-process."""
    pytester.makeconftest(APP.format(table=users))

    def run_tests(
        tests: str, *args: str, plugin_args: tuple[str, ...] = PLUGIN_ARGS
    ) -> pytest.RunResult:
        pytester.makepyfile(test_inner=textwrap.dedent(tests))
        return pytester.runpytest(
            *plugin_args, f"--mysql-url={db.url}", "-p", "no:cacheprovider", *args
        )

    return run_tests


def rows(db: Database, table: str) -> tuple[Any, ...]:
    return db.query(f"SELECT name FROM `{table}`")


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_two_tests_inserting_the_same_key_pass_in_either_order(
    run: Callable[..., pytest.RunResult], db: Database, users: str, order: Any
) -> None:
    tests = SAME_KEY_TESTS.format(first=order[0], second=order[1], client="client")
    result = run(tests, "-v")
    result.assert_outcomes(passed=2)
    ran = [line.split("::")[1].split()[0] for line in result.outlines if "::" in line]
    assert ran == [f"test_{order[0]}", f"test_{order[1]}"]
    assert rows(db, users) == ()


def test_without_the_rollback_the_second_test_sees_the_first_ones_row(
    run: Callable[..., pytest.RunResult], db: Database, users: str
) -> None:
    """The test above can fail: without mysql_rollback, the key is taken."""
    tests = SAME_KEY_TESTS.format(first="a", second="b", client="committing_client")
    result = run(tests)
    result.assert_outcomes(passed=1, failed=1)
    assert rows(db, users) == (("alice",),)


def test_a_failing_request_rolls_back_only_its_own_work(
    run: Callable[..., pytest.RunResult], db: Database, users: str
) -> None:
    result = run(
        """
        def test_sync_client(client):
            assert client.post("/sync/alice").status_code == 200
            assert client.post("/fail/bob").status_code == 409
            assert client.post("/fail-sync/carol").status_code == 409
            assert client.post("/async/dave").status_code == 200
            # a duplicate key: 500, and nothing of that request is kept
            assert client.post("/sync/alice").status_code == 500
            assert client.get("/names").json() == ["alice", "dave"]
        """
    )
    result.assert_outcomes(passed=1)
    assert rows(db, users) == ()


def test_async_client_with_asgi_transport_and_lifespan_manager(
    run: Callable[..., pytest.RunResult], db: Database, users: str
) -> None:
    result = run(
        """
        import pytest


        @pytest.mark.anyio
        async def test_first(aclient):
            assert (await aclient.post("/async/alice")).status_code == 200
            assert (await aclient.post("/fail/bob")).status_code == 409
            assert (await aclient.get("/names")).json() == ["alice"]


        @pytest.mark.anyio
        async def test_second(aclient):
            assert (await aclient.post("/sync/alice")).status_code == 200
            assert (await aclient.get("/names-sync")).json() == ["alice"]
        """
    )
    result.assert_outcomes(passed=2)
    assert rows(db, users) == ()


def test_the_plugin_is_declared_as_a_pytest11_entry_point() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {
        "fastapi_mysqlpool": "fastapi_mysqlpool.pytest_plugin"
    }


def test_the_installed_entry_point_loads_the_plugin(
    run: Callable[..., pytest.RunResult], db: Database, users: str
) -> None:
    """As in a user's project: installed, the plugin needs no -p."""
    found = importlib.metadata.entry_points(group="pytest11", name="fastapi_mysqlpool")
    if not found:
        pytest.skip("the installed metadata predates the entry point: pip install -e .")
    assert [entry.value for entry in found] == ["fastapi_mysqlpool.pytest_plugin"]
    tests = SAME_KEY_TESTS.format(first="a", second="b", client="client")
    run(tests, plugin_args=()).assert_outcomes(passed=2)
    assert rows(db, users) == ()


def test_mysql_url_names_the_server_of_the_option_or_the_environment(
    pytester: pytest.Pytester, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_inner=f"""
        def test_url(mysql_url):
            assert mysql_url == {db.url!r}
        """
    )
    monkeypatch.setenv("FASTAPI_MYSQLPOOL_TEST_URL", db.url)
    pytester.runpytest(*PLUGIN_ARGS, "-p", "no:cacheprovider").assert_outcomes(passed=1)
    monkeypatch.setenv("FASTAPI_MYSQLPOOL_TEST_URL", "mysql://not-this@nowhere/x")
    result = pytester.runpytest(
        *PLUGIN_ARGS, f"--mysql-url={db.url}", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1)


@pytest.mark.slow
def test_mysql_url_is_a_throwaway_server_for_the_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FASTAPI_MYSQLPOOL_TEST_URL", raising=False)
    pytester.makepyfile(
        test_inner="""
        import contextlib

        import MySQLdb
        import pytest

        from fastapi_mysqlpool._config import parse_url

        seen = []


        @pytest.mark.parametrize("n", [1, 2])
        def test_server(mysql_url, n):
            seen.append(mysql_url)
            assert len(set(seen)) == 1  # one server for the session
            params = parse_url(mysql_url)
            with contextlib.closing(MySQLdb.connect(**params)) as conn:
                conn.query(b"SELECT DATABASE()")
                assert conn.store_result().fetch_row() == (("test",),)
        """
    )
    result = pytester.runpytest(*PLUGIN_ARGS, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_dependency_overrides_replace_the_database(
    run: Callable[..., pytest.RunResult], db: Database, users: str
) -> None:
    """The README's idiom: no startup (TestClient without `with`), no pool,
    every cursor dependency overridden, Annotated aliases included."""
    result = run(
        """
        from fastapi.testclient import TestClient

        from fastapi_mysqlpool import get_async_cursor, get_cursor


        class FakeCursor:
            lastrowid = 42

            def execute(self, sql, args=None):
                self.executed = (sql, args)


        class FakeAsyncCursor:
            async def execute(self, sql, args=None):
                pass

            async def fetchall(self):
                return [("zoe",)]


        def test_without_a_database(app):
            app.dependency_overrides[get_cursor] = FakeCursor
            app.dependency_overrides[get_async_cursor] = FakeAsyncCursor
            try:
                client = TestClient(app)
                assert client.post("/sync/alice").json() == {"id": 42}
                assert client.get("/names").json() == ["zoe"]
            finally:
                app.dependency_overrides.clear()
        """
    )
    result.assert_outcomes(passed=1)
    assert db.connection_count(settle_at=0) == 0  # nothing connected
