"""Conflicts (deadlock, lock wait timeout): answered as code 3, or the whole
transaction run again (run_transaction, add_pool_task(retries=...))."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import MySQLdb
import pytest
from fastapi import BackgroundTasks, FastAPI
from fastapi.testclient import TestClient

from fastapi_mysqlpool import Cursor, Pool, add_pool_task, mysql_pool_lifespan
from fastapi_mysqlpool._retry import Retries
from fastapi_mysqlpool.testing import ImplicitCommitError, Rollback

from .servers import Database


class Deadlock:
    """Two transactions that deadlock on purpose: the caller's (*victim*)
    locks row 2 then row 1; a heavier one (it changed more rows, so InnoDB
    rolls the caller's back) holds row 1 and then asks for row 2."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.table = db.create_table("rows", "id INT PRIMARY KEY, v INT")
        self.ballast = db.create_table("ballast", "id INT PRIMARY KEY, v INT")
        db.query(f"INSERT INTO {self.table} VALUES (1, 0), (2, 0)")
        db.query(f"INSERT INTO {self.ballast} SELECT seq, 0 FROM seq_1_to_50")
        self.blocked = threading.Event()
        self.session: int | None = None

    def victim(self, cursor: Any) -> None:
        """The caller's transaction (blocks on row 1 the first time)."""
        cursor.execute(f"UPDATE {self.table} SET v = v + 1 WHERE id = 2")
        if not self.blocked.is_set():
            cursor.execute("SELECT CONNECTION_ID()")
            self.session = cursor.fetchone()[0]
            self.blocked.set()
        cursor.execute(f"UPDATE {self.table} SET v = v + 1 WHERE id = 1")

    async def avictim(self, cursor: Any) -> None:
        await cursor.execute(f"UPDATE {self.table} SET v = v + 1 WHERE id = 2")
        if not self.blocked.is_set():
            await cursor.execute("SELECT CONNECTION_ID()")
            self.session = (await cursor.fetchone())[0]
            self.blocked.set()
        await cursor.execute(f"UPDATE {self.table} SET v = v + 1 WHERE id = 1")

    @contextlib.contextmanager
    def other(self) -> Iterator[Callable[[], None]]:
        """The heavy transaction, holding row 1; call the yielded function
        once the victim waits for row 1: it closes the cycle and commits."""
        conn = self.db.server.connect(autocommit=False)
        try:
            cursor = conn.cursor()
            cursor.execute(f"UPDATE {self.ballast} SET v = v + 1")
            cursor.execute(f"UPDATE {self.table} SET v = v + 10 WHERE id = 1")

            def close_cycle() -> None:
                assert self.blocked.wait(10)
                assert self.session is not None
                self.db.wait_running(self.session, "UPDATE")
                cursor.execute(f"UPDATE {self.table} SET v = v + 10 WHERE id = 2")
                conn.commit()

            yield close_cycle
        finally:
            conn.close()

    def values(self) -> tuple[Any, ...]:
        return self.db.query(f"SELECT id, v FROM {self.table} ORDER BY id")


def test_a_deadlock_in_a_route_answers_code_3_with_retry_after(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    deadlock = Deadlock(db)
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.post("/")
    def route(cursor: Cursor) -> str:
        deadlock.victim(cursor)
        return "done"

    with TestClient(app) as client, deadlock.other() as close_cycle:
        thread = threading.Thread(target=close_cycle)
        thread.start()
        response = client.post("/")
        thread.join()
    assert response.status_code == 503
    assert response.json() == {"code": 3, "message": "Database Conflict, Try Again"}
    assert response.headers["Retry-After"] == "1"
    assert "Deadlock" not in response.text
    assert deadlock.values() == ((1, 10), (2, 10))  # the route's rolled back
    assert "Deadlock" in caplog.text  # the server's message: in the log only


def test_a_lock_wait_timeout_answers_code_3(db: Database) -> None:
    table = db.create_table("rows", "id INT PRIMARY KEY, v INT")
    db.query(f"INSERT INTO {table} VALUES (1, 0)")
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.post("/")
    def route(cursor: Cursor) -> str:
        cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
        cursor.execute(f"UPDATE {table} SET v = 1 WHERE id = 1")
        return "done"

    holder = db.server.connect(autocommit=False)
    try:
        holder.cursor().execute(f"SELECT * FROM {table} FOR UPDATE")
        with TestClient(app) as client:
            response = client.post("/")
    finally:
        holder.close()
    assert (response.status_code, response.json()["code"]) == (503, 3)


def test_run_transaction_runs_a_deadlocked_transaction_again(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    deadlock = Deadlock(db)
    calls: list[int] = []

    def work(cursor: Any, step: int) -> str:
        calls.append(step)
        deadlock.victim(cursor)
        return "committed"

    caplog.set_level(logging.WARNING, "fastapi_mysqlpool")
    with Pool(db.cfg, size=1) as pool, deadlock.other() as close_cycle:
        thread = threading.Thread(target=close_cycle)
        thread.start()
        assert pool.run_transaction(work, 7, retries=3) == "committed"
        thread.join()
    assert calls == [7, 7]
    assert deadlock.values() == ((1, 11), (2, 11))  # both committed, once each
    assert "retry 1 of 3" in caplog.text


def test_without_retries_a_deadlock_is_raised(db: Database) -> None:
    deadlock = Deadlock(db)
    calls: list[int] = []

    def work(cursor: Any) -> None:
        calls.append(1)
        deadlock.victim(cursor)

    with Pool(db.cfg, size=1) as pool, deadlock.other() as close_cycle:
        thread = threading.Thread(target=close_cycle)
        thread.start()
        with pytest.raises(MySQLdb.OperationalError) as raised:
            pool.run_transaction(work)
        thread.join()
    assert raised.value.args[0] == 1213
    assert calls == [1]


@pytest.mark.anyio
async def test_arun_transaction_retries_an_async_function(db: Database) -> None:
    deadlock = Deadlock(db)
    with Pool(db.cfg, size=1) as pool, deadlock.other() as close_cycle:
        thread = threading.Thread(target=close_cycle)
        thread.start()
        await pool.arun_transaction(deadlock.avictim, retries=1)
        thread.join()
    assert deadlock.values() == ((1, 11), (2, 11))


def test_other_errors_are_never_retried(db: Database) -> None:
    calls: list[int] = []

    def work(cursor: Any) -> None:
        calls.append(1)
        cursor.execute("SELECT * FROM no_such_table")

    with Pool(db.cfg, size=1) as pool, pytest.raises(MySQLdb.ProgrammingError):
        pool.run_transaction(work, retries=5)
    assert calls == [1]


def test_a_connection_lost_at_commit_is_never_retried(db: Database) -> None:
    """The COMMIT may have been applied: running the work again could apply
    it twice."""
    table = db.create_table("rows", "id INT PRIMARY KEY AUTO_INCREMENT")
    calls: list[int] = []

    def work(cursor: Any) -> None:
        calls.append(1)
        cursor.execute(f"INSERT INTO {table} VALUES ()")
        cursor.execute("SELECT CONNECTION_ID()")
        db.query(f"KILL {int(cursor.fetchone()[0])}")  # before the COMMIT

    with Pool(db.cfg, size=1) as pool, pytest.raises(MySQLdb.OperationalError):
        pool.run_transaction(work, retries=5)
    assert calls == [1]


def test_add_pool_task_retries_a_deadlocked_task(db: Database) -> None:
    deadlock = Deadlock(db)
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    @app.post("/")
    def route(background: BackgroundTasks) -> str:
        add_pool_task(background, deadlock.victim, retries=2)
        return "queued"

    with TestClient(app) as client, deadlock.other() as close_cycle:
        thread = threading.Thread(target=close_cycle)
        thread.start()
        assert client.post("/").status_code == 200  # the task ran meanwhile
        thread.join()
    assert deadlock.values() == ((1, 11), (2, 11))


@pytest.mark.parametrize("retries", [-1, 1.5, True, "2"])
def test_retries_must_be_a_count(retries: Any) -> None:
    with pytest.raises(ValueError, match="retries"):
        Retries(retries, "work")


def test_retries_stop_after_the_last_one_and_on_other_errors() -> None:
    deadlock = MySQLdb.OperationalError(1213, "Deadlock found")
    left = Retries(2, "work")
    delays = [left.delay_after(deadlock), left.delay_after(deadlock)]
    assert all(d is not None and 0 < d <= 0.04 for d in delays)
    assert left.delay_after(deadlock) is None
    assert Retries(2, "work").delay_after(MySQLdb.OperationalError(2013, "")) is None
    assert Retries(2, "work").delay_after(ValueError()) is None


@pytest.mark.parametrize("run_async", [False, True])
def test_under_mysql_rollback_a_deadlock_ends_the_test_saying_so(
    db: Database, *, run_async: bool
) -> None:
    """InnoDB rolls a deadlocked transaction back whole, savepoints included:
    a test in one transaction cannot go on, and must hear that, not that a
    statement committed implicitly or the connection failed."""
    deadlock = Deadlock(db)
    with (
        Pool(db.cfg, size=1) as pool,
        deadlock.other() as close_cycle,
        Rollback() as rollback,
    ):
        rollback.pin(pool)
        thread = threading.Thread(target=close_cycle)
        thread.start()
        if run_async:
            run = functools.partial(
                anyio.run,
                functools.partial(pool.arun_transaction, deadlock.avictim, retries=1),
            )
        else:
            run = functools.partial(pool.run_transaction, deadlock.victim, retries=1)
        with pytest.raises((ImplicitCommitError, RuntimeError), match="deadlock"):
            run()
        thread.join()
        with pytest.raises(RuntimeError, match="deadlock"), pool.fetch():
            pass  # later borrows fail, naming the cause
    assert deadlock.values() == ((1, 10), (2, 10))  # the other one's only
