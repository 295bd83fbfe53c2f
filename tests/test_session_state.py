"""Session state never reaches the next borrower (issue 16, section 1).

The server reports what changed (session tracking, read through
``mariadb_get_infov``); the statement templates, never the parameters, show
what it does not report (locks, user variables assigned by SELECT, CALL).
A changed session is reset (COM_RESET_CONNECTION) and set up again, off the
request's path.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import MySQLdb
import MySQLdb.cursors
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

import fastapi_mysqlpool._housekeeper
from fastapi_mysqlpool import (
    AsyncCursor,
    Cursor,
    Pool,
    _session,
    get_pool,
    mysql_pool_lifespan,
)
from fastapi_mysqlpool._connection import PooledConnection
from fastapi_mysqlpool._cursors import leased_cursor_class
from fastapi_mysqlpool._session import REPORTED, UNREPORTED, scan

from .servers import Database, serve
from .test_pool import wait_until

U, R = UNREPORTED, REPORTED

# -- the template scan (no server) ---------------------------------------------


@pytest.mark.parametrize(
    ("template", "flags"),
    [
        ("SELECT 1", 0),
        ("SELECT 'a; set x=1'", 0),
        ("UPDATE t SET a = %s", 0),
        ("INSERT INTO t VALUES ('a@b.example')", 0),
        ("SELECT `lock`, `tables` FROM `call`", 0),
        ("SELECT * FROM recall WHERE executed AND xa_flag", 0),
        # Locks the server does not report, wherever the statement starts.
        ("LOCK TABLES t WRITE", U),
        ("lock table t read", U),
        ("-- note\nLOCK TABLES t WRITE", U),
        ("# note\nLOCK TABLES t WRITE", U),
        ("/* note */ LOCK TABLES t WRITE", U),
        ("/*M!100100 LOCK TABLES t WRITE */", U),
        ("/*!40000 LOCK TABLES t WRITE */", U),
        ("SELECT 1; LOCK TABLES t WRITE", U),
        ("SELECT 1 --LOCK TABLES t WRITE", U),  # "--" + no space: not a comment
        ("SELECT 1 -- LOCK TABLES t WRITE", 0),
        ("SELECT 1 /* ; LOCK TABLES t WRITE */", 0),
        ("SELECT 'it''s; LOCK TABLES t WRITE'", 0),
        ('SELECT "; LOCK TABLES t WRITE"', 0),
        # A backslash ends the string under NO_BACKSLASH_ESCAPES: both readings.
        ("SELECT 'C:\\' ; LOCK TABLES t WRITE; -- '", U),
        ("FLUSH TABLES WITH READ LOCK", U),
        ("FLUSH TABLES t FOR EXPORT", U),
        ("FLUSH STATUS", 0),
        ("SELECT GET_LOCK('a', 1)", U),
        ("select get_lock ('a', 1)", U),
        ("SELECT 'GET_LOCK(' FROM t", 0),
        ("BACKUP STAGE START", U),
        # Row locks end with the transaction: not counted.
        ("SELECT * FROM t WHERE id = %s FOR UPDATE", 0),
        ("SELECT * FROM t LOCK IN SHARE MODE", 0),
        # User variables assigned by SELECT, which the server does not report.
        ("SELECT @x := 1", U),
        ("UPDATE t SET n = (@n := @n + 1)", U),
        ("SELECT a INTO @v FROM t", U),
        ("SELECT a FROM t INTO @`v`", U),
        ("SELECT @v, @@sql_mode, @@session_track_state_change", 0),
        # Procedures, dynamic SQL, handlers, XA, tracking itself.
        ("CALL p()", U),
        ("call p(%s)", U),
        ("BEGIN NOT ATOMIC CALL p(); END", R | U),
        ("EXECUTE IMMEDIATE 'SELECT 1 INTO @v'", U),
        ("EXECUTE s", U),
        ("HANDLER t OPEN", U),
        ("XA START 'x'", U),
        ("SET session_track_state_change = OFF", U | R),
        ("SET STATEMENT session_track_state_change = 0 FOR SET @x = 1", U | R),
        ("SET @@session.session_track_state_change = 0", U | R),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", U | R),
        ("SET SESSION TRANSACTION READ ONLY", R),
        # What the server reports (counted only where it cannot be read).
        ("SET @x = 1", R),
        ("  set session sql_mode = ''", R),
        ("/* c */ USE other", R),
        ("-- c\nUSE other", R),
        ("/*!40101 SET NAMES utf8 */", R),
        ("/*M! SET @m = 1 */", R),
        ("SELECT 1; -- c\nSET @x = 1", R),
        ("CREATE TEMPORARY TABLE t (id INT)", R),
        ("CREATE OR REPLACE TEMPORARY TABLE orders (id INT)", R),
        ("DROP TEMPORARY TABLE t", R),
        ("CREATE TABLE t (id INT)", 0),
        ("PREPARE s FROM 'SELECT 1'", R),
        ("DEALLOCATE PREPARE s", R),
        ("BEGIN NOT ATOMIC SET @z = 1; END", R),
        ("l1: BEGIN NOT ATOMIC SELECT 1 INTO @v; END", R | U),
        ("SET STATEMENT max_statement_time = 1 FOR SELECT 1", R),
        # bytes as str; unterminated quotes and comments end at the end.
        (b"-- x\nLOCK TABLES t WRITE", U),
        ("SELECT 'unterminated; LOCK TABLES t WRITE", 0),
        ("SELECT 1 /* unterminated; LOCK TABLES t WRITE", 0),
        ("SELECT 'x\\", 0),
    ],
)
def test_template_scan(template: str | bytes, flags: int) -> None:
    assert scan(template) == flags


def test_template_flags_are_remembered_and_bounded() -> None:
    template = "SELECT * FROM t WHERE id = %s -- unique 7f3e"
    assert _session.template_flags(template) == 0
    assert _session._cache[template] == 0
    huge = "SELECT 1" + " " * _session.CACHED_TEMPLATE_MAX + "; LOCK TABLES t WRITE"
    assert _session.template_flags(huge) == U
    assert huge not in _session._cache


# -- what the server reports ---------------------------------------------------


@pytest.fixture
def routines(db: Database) -> Iterator[dict[str, str]]:
    """Stored routines that change the session, named after the test's user."""
    names = {
        "p_var": f"{db.user}_p_var",
        "p_tmp": f"{db.user}_p_tmp",
        "p_into": f"{db.user}_p_into",
        "f_var": f"{db.user}_f_var",
        "shadow": db.create_table("shadow", "id INT"),
    }
    db.query(f"INSERT INTO `{names['shadow']}` VALUES (1)")
    db.query(f"CREATE PROCEDURE `{names['p_var']}`() SET @x = 'left over'")
    db.query(
        f"CREATE PROCEDURE `{names['p_tmp']}`() "
        f"CREATE TEMPORARY TABLE `{names['shadow']}` (id INT)"
    )
    db.query(f"CREATE PROCEDURE `{names['p_into']}`() SELECT 'left over' INTO @x")
    db.query(
        f"CREATE FUNCTION `{names['f_var']}`() RETURNS INT NOT DETERMINISTIC "
        "BEGIN SET @x = 'left over'; RETURN 1; END"
    )
    yield names
    for kind in ("p_var", "p_tmp", "p_into"):
        db.query(f"DROP PROCEDURE IF EXISTS `{names[kind]}`")
    db.query(f"DROP FUNCTION IF EXISTS `{names['f_var']}`")


def reported(conn: PooledConnection, sql: str) -> bool:
    """Run *sql* as the pool does and say whether the server's flag (alone:
    the template scan is off) marked the session changed."""
    conn.session_changed = False
    conn.in_cursor_call = True  # no template scan
    try:
        conn.query(sql)
        conn.store_result()
        while conn.next_result() == 0:
            conn.store_result()
        conn.note_status()  # the check-in's look at the last answer
    finally:
        conn.in_cursor_call = False
    return conn.session_changed


# Measured on MariaDB 10.11 (with libmariadb 3.3): True = the server sets
# SERVER_SESSION_STATE_CHANGED.
SERVER_REPORTS = {
    "SET @x = 1": True,
    "SET time_zone = '+02:00'": True,
    "SET sql_mode = 'ANSI_QUOTES'": True,
    "SET autocommit = 1": True,
    "SET NAMES latin1": True,
    "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE": True,
    "SET STATEMENT max_statement_time = 10 FOR SELECT 1": True,  # a false alarm
    "CREATE TEMPORARY TABLE tmp (id INT)": True,
    "CREATE OR REPLACE TEMPORARY TABLE tmp (id INT)": True,
    "-- c\nUSE information_schema": True,
    "PREPARE s FROM 'SELECT 1'": True,
    "EXECUTE IMMEDIATE 'SET @y = 1'": True,
    "BEGIN NOT ATOMIC SET @z = 1; END": True,
    "/*M! SET @m = 1 */": True,
    "SELECT 1; -- c\nSET @w = 1": True,  # in the second result's answer
    "SET @w = 1; SELECT 1": True,  # in the first one's
    "CALL {p_var}()": True,
    "CALL {p_tmp}()": True,
    "SELECT {f_var}()": True,  # only in the rows' last packet
    # Not reported: plain statements...
    "SELECT 1": False,
    "SELECT 'a; set x=1'": False,
    "INSERT INTO {shadow} VALUES (2)": False,
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE": False,  # next transaction only
    # ...and what the template scan must find instead.
    "SELECT @x := 1": False,
    "SELECT 1 INTO @v": False,
    "EXECUTE IMMEDIATE 'SELECT 1 INTO @v'": False,
    "CALL {p_into}()": False,
    "LOCK TABLES {shadow} WRITE": False,
    "SELECT GET_LOCK('{shadow}', 0)": False,
    "HANDLER {shadow} OPEN": False,
    "XA START 'x'": False,
    "SET session_track_state_change = OFF": False,
    "SET STATEMENT session_track_state_change = 0 FOR SET @q = 1": False,
}


@pytest.mark.parametrize("statement", SERVER_REPORTS)
def test_what_the_server_reports(
    db: Database, routines: dict[str, str], statement: str
) -> None:
    conn = PooledConnection(**db.cfg)
    try:
        conn.setup_session()
        assert conn.tracked
        sql = statement.format(**routines)
        assert reported(conn, sql) is SERVER_REPORTS[statement]
    finally:
        conn.close()


# -- through real apps ---------------------------------------------------------


class Statement(BaseModel):
    sql: str
    args: list[Any] | None = None


STATE = (
    "SELECT CONNECTION_ID(), @@time_zone, @@sql_mode, DATABASE(), @x, "
    "@@autocommit, @@tx_isolation, @@character_set_client, "
    "@@collation_connection, @@session_track_state_change, "
    "IS_FREE_LOCK('{shadow}'), (SELECT COUNT(*) FROM `{database}`.`{shadow}`)"
)


def make_app(cfg: Any, names: dict[str, str], **options: Any) -> FastAPI:
    """An app running the SQL it is sent (as a template, with bound args)
    and showing its connection's session state."""
    options = {"size": 1, "max_size": 1, **options}
    app = FastAPI(lifespan=mysql_pool_lifespan(cfg, **options))
    state = STATE.format(database=cfg["database"], **names)

    @app.post("/sync/run", status_code=201)
    def sync_run(statement: Statement, cursor: Cursor) -> dict[str, Any]:
        cursor.execute(statement.sql, statement.args)
        while cursor.nextset():
            pass
        return {"id": cursor.lastrowid}

    @app.post("/sync/many")
    def sync_many(statement: Statement, cursor: Cursor) -> None:
        cursor.executemany(statement.sql, statement.args)

    @app.post("/sync/callproc/{name}")
    def sync_callproc(name: str, cursor: Cursor) -> None:
        cursor.callproc(name)
        while cursor.nextset():
            pass

    @app.get("/sync/state")
    def sync_state(cursor: Cursor) -> list[Any]:
        cursor.execute(state)
        return list(cursor.fetchone())

    @app.post("/async/run", status_code=201)
    async def async_run(statement: Statement, cursor: AsyncCursor) -> dict[str, Any]:
        await cursor.execute(statement.sql, statement.args)
        while await cursor.nextset():
            pass
        return {"id": cursor.lastrowid}

    @app.post("/async/many")
    async def async_many(statement: Statement, cursor: AsyncCursor) -> None:
        await cursor.executemany(statement.sql, statement.args or [])

    @app.post("/async/callproc/{name}")
    async def async_callproc(name: str, cursor: AsyncCursor) -> None:
        await cursor.callproc(name)
        while await cursor.nextset():
            pass

    @app.get("/async/state")
    async def async_state(cursor: AsyncCursor) -> list[Any]:
        await cursor.execute(state)
        row = await cursor.fetchone()
        assert row is not None
        return list(row)

    return app


@pytest.fixture
def no_server_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """As with MySQL's libmysqlclient: no mariadb_get_infov."""
    monkeypatch.setattr(_session, "_infov", None)


# (how, what): "run" a template, or "callproc" a procedure.
CHANGES: dict[str, tuple[str, str]] = {
    "time_zone": ("run", "SET time_zone = '+05:00'"),
    "sql_mode": ("run", "SET sql_mode = 'ANSI_QUOTES'"),
    "USE": ("run", "USE information_schema"),
    "@var": ("run", "SET @x = 'left over'"),
    "@var after a comment": ("run", "-- note\nSET @x = 'left over'"),
    "@var by SELECT :=": ("run", "SELECT @x := 'left over'"),
    "@var by SELECT INTO": ("run", "SELECT 'left over' INTO @x"),
    "temporary table": ("run", "CREATE OR REPLACE TEMPORARY TABLE {shadow} (id INT)"),
    "CALL p() sets @var": ("run", "CALL {p_var}()"),
    "CALL p() creates a temporary table": ("run", "CALL {p_tmp}()"),
    "CALL p() does SELECT INTO @var": ("run", "CALL {p_into}()"),
    "callproc('p') sets @var": ("callproc", "{p_var}"),
    "callproc('p') creates a temporary table": ("callproc", "{p_tmp}"),
    "EXECUTE IMMEDIATE": ("run", "EXECUTE IMMEDIATE 'SET @x = ''left over'''"),
    "BEGIN NOT ATOMIC": ("run", "BEGIN NOT ATOMIC SET @x = 'left over'; END"),
    "/*M! */": ("run", "/*M! SET @x = 'left over' */"),
    "SET after a first result": ("run", "SELECT 1; -- c\nSET @x = 'left over'"),
    "autocommit": ("run", "SET autocommit = 1"),
    "isolation level": ("run", "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
    "character set": ("run", "SET NAMES latin1"),
    "LOCK TABLES": ("run", "-- note\nLOCK TABLES {shadow} WRITE"),
    "GET_LOCK": ("run", "SELECT GET_LOCK('{shadow}', 0)"),
    "a function sets @var": ("run", "SELECT {f_var}()"),
}
# Only the server can tell: a function's SET is not in the template.
SERVER_ONLY = {"a function sets @var"}


def apply(client: TestClient, kind: str, how: str, what: str) -> None:
    if how == "callproc":
        response = client.post(f"/{kind}/callproc/{what}")
    else:
        response = client.post(f"/{kind}/run", json={"sql": what})
    assert response.is_success, response.text


@pytest.mark.parametrize("tracking", ["server flag", "template scan only"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_no_session_change_reaches_the_next_borrower(
    db: Database,
    routines: dict[str, str],
    kind: str,
    tracking: str,
    request: pytest.FixtureRequest,
) -> None:
    if tracking == "template scan only":
        request.getfixturevalue("no_server_flag")
    app = make_app(db.cfg, routines)
    changes = {
        name: (how, what.format(**routines))
        for name, (how, what) in CHANGES.items()
        if tracking == "server flag" or name not in SERVER_ONLY
    }
    with TestClient(app) as client:
        baseline = client.get(f"/{kind}/state").json()
        assert baseline[-2:] == [1, 1]  # the lock is free, the real table seen
        leaked = {}
        for name, (how, what) in changes.items():
            apply(client, kind, how, what)
            # max_size=1: the same connection, once reset.
            state = client.get(f"/{kind}/state").json()
            if state != baseline:
                leaked[name] = state
        assert leaked == {}
        stats = get_pool(app).stats()
        # Reset, never reconnected; the counts add up.
        assert (stats.opened, stats.closed) == (1, 0)
        assert stats.resets == len(changes)
        assert stats.size == stats.opened - stats.closed == 1


def test_a_temporary_table_never_swallows_the_next_requests_insert(
    db: Database,
) -> None:
    """The data-loss case: a temporary `orders` shadowed the real table, and the
    next request's INSERT answered 201 into it; the row then vanished."""
    orders = db.create_table("orders", "id INT AUTO_INCREMENT PRIMARY KEY, item TEXT")
    app = make_app(db.cfg, {"shadow": orders})
    create = f"CREATE OR REPLACE TEMPORARY TABLE {orders} (id INT, item TEXT)"
    insert = f"INSERT INTO {orders} (item) VALUES (%s)"
    with serve(app) as url, httpx.Client(base_url=url) as client:
        for kind in ("sync", "async"):
            assert client.post(f"/{kind}/run", json={"sql": create}).status_code == 201
            answer = client.post(f"/{kind}/run", json={"sql": insert, "args": [kind]})
            assert answer.status_code == 201
            row = db.query(
                f"SELECT item FROM {orders} WHERE id = %s", (answer.json()["id"],)
            )
            assert row == ((kind,),)


@contextlib.contextmanager
def impatient(db: Database) -> Iterator[Any]:
    """An admin connection that waits 1 s for a table lock, not a day."""
    with contextlib.closing(db.server.connect()) as conn:
        conn.query("SET SESSION lock_wait_timeout = 1")
        yield conn.cursor()


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    "lock",
    [
        "-- note\nLOCK TABLES {shadow} WRITE",
        "/* note */ lock table {shadow} read",
        "SELECT GET_LOCK('{shadow}', 0)",
    ],
)
def test_no_lock_outlives_its_request(
    db: Database, routines: dict[str, str], kind: str, lock: str
) -> None:
    shadow = routines["shadow"]
    with TestClient(make_app(db.cfg, routines)) as client:
        apply(client, kind, "run", lock.format(**routines))
        # max_size=1: this request gets the connection once it is back.
        assert client.get(f"/{kind}/state").status_code == 200
        with impatient(db) as cursor:
            started = time.monotonic()
            cursor.execute(f"INSERT INTO `{shadow}` VALUES (2)")
            cursor.execute("SELECT IS_FREE_LOCK(%s)", (shadow,))
            assert cursor.fetchone() == (1,)
            assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("tracking", ["server flag", "template scan only"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_parameter_values_are_never_scanned(
    db: Database, kind: str, tracking: str, request: pytest.FixtureRequest
) -> None:
    """A client could otherwise force a reconnection per request."""
    if tracking == "template scan only":
        request.getfixturevalue("no_server_flag")
    todos = db.create_table("todos", "id INT AUTO_INCREMENT PRIMARY KEY, title TEXT")
    hostile = [
        "buy milk; set alarm",
        "x; LOCK TABLES t WRITE",
        "*/ SET @x = 1; /*",
        "'; CALL p(); -- ",
        "SELECT @x := 1 INTO @y",
    ]
    insert = f"INSERT INTO {todos} (title) VALUES (%s)"
    app = make_app(db.cfg, {"shadow": todos})
    with TestClient(app) as client:
        ids = set()
        for i in range(50):
            response = client.post(
                f"/{kind}/run", json={"sql": insert, "args": [hostile[i % 5]]}
            )
            assert response.status_code == 201
            ids.add(client.get(f"/{kind}/state").json()[0])
        many = client.post(
            f"/{kind}/many", json={"sql": insert, "args": [[t] for t in hostile]}
        )
        assert many.is_success
        update = f"UPDATE {todos} SET title = %s WHERE title = %s"
        many = client.post(
            f"/{kind}/many", json={"sql": update, "args": [hostile[:2], hostile[1:3]]}
        )
        assert many.is_success
        ids.add(client.get(f"/{kind}/state").json()[0])
        stats = get_pool(app).stats()
    assert len(ids) == 1
    assert (stats.opened, stats.resets) == (1, 0)
    assert db.scalar(f"SELECT COUNT(*) FROM {todos}") == 55


# -- the reset -------------------------------------------------------------------


def pool_state(pool: Pool) -> tuple[Any, ...]:
    with pool.fetch() as cursor:
        cursor.execute(
            "SELECT CONNECTION_ID(), @init, @@collation_connection, "
            "@@character_set_results, @@sql_mode, @@autocommit, @@time_zone, "
            "@@session_track_state_change, DATABASE()"
        )
        return tuple(cursor.fetchone())


def test_a_reset_restores_what_connecting_set_up(db: Database) -> None:
    cfg = {
        **db.cfg,
        "init_command": "SET @init = 42, time_zone = '+03:00'",
        "collation": "utf8mb4_unicode_ci",
        "sql_mode": "ANSI_QUOTES,STRICT_ALL_TABLES",
    }
    with Pool(cfg, size=1, max_size=1) as pool:
        fresh = pool_state(pool)
        assert fresh[1:4] == (42, "utf8mb4_unicode_ci", "utf8mb4")
        with pool.fetch() as cursor:
            cursor.execute(
                "SET @init = 0, collation_connection = 'utf8mb4_bin', "
                "character_set_results = NULL, sql_mode = '', autocommit = 1, "
                "time_zone = '+01:00', session_track_state_change = OFF"
            )
            cursor.execute("USE information_schema")
        assert pool_state(pool) == fresh
        # Tracking is on again: a change only the server reports is still seen.
        with pool.fetch() as cursor:
            cursor.execute("SET time_zone = '-01:00'")
        assert pool_state(pool) == fresh
        stats = pool.stats()
    assert (stats.opened, stats.closed, stats.resets) == (1, 0, 2)


@pytest.mark.parametrize(
    "change",
    ["client character set", "no database in cfg"],
)
def test_what_a_reset_cannot_restore_is_closed(db: Database, change: str) -> None:
    cfg = dict(db.cfg)
    if change == "no database in cfg":
        del cfg["database"]
    with Pool(cfg, size=1, max_size=1) as pool:
        with pool.fetch() as cursor:
            if change == "client character set":
                cursor.connection.set_character_set("latin1")
            else:
                cursor.execute(f"USE `{db.server.database}`")
        with pool.fetch() as cursor:
            cursor.execute("SELECT @@character_set_client, DATABASE()")
            row = cursor.fetchone()
        stats = pool.stats()
    database = None if change == "no database in cfg" else db.server.database
    assert row == ("utf8mb4", database)
    assert (stats.opened, stats.closed, stats.resets) == (2, 1, 0)


def test_the_next_transactions_isolation_level_is_not_inherited(
    db: Database,
) -> None:
    """SET TRANSACTION (no SESSION) outlives a COMMIT with no transaction open,
    and the server does not report it."""
    table = db.create_table("t", "id INT")

    def isolation(cursor: Any) -> Any:
        cursor.execute(f"INSERT INTO {table} VALUES (1)")  # starts a transaction
        cursor.execute(
            "SELECT trx_isolation_level FROM information_schema.innodb_trx "
            "WHERE trx_mysql_thread_id = CONNECTION_ID()"
        )
        return cursor.fetchone()

    with Pool(db.cfg, size=1, max_size=1) as pool:
        with pool.fetch() as cursor:
            fresh = isolation(cursor)
        with pool.fetch() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        with pool.fetch() as cursor:
            assert isolation(cursor) == fresh == ("REPEATABLE READ",)
        assert pool.stats().resets == 1


def test_a_role_set_by_a_borrower_is_not_kept(db: Database) -> None:
    """COM_RESET_CONNECTION keeps the current role: checked, then closed."""
    role = f"{db.user}_role"
    db.query(f"CREATE ROLE `{role}`")
    try:
        db.query(f"GRANT `{role}` TO `{db.user}`@`%`")
        db.query(f"SET DEFAULT ROLE `{role}` FOR `{db.user}`@`%`")
        with Pool(db.cfg, size=1, max_size=1) as pool:
            with pool.fetch() as cursor:
                cursor.execute("SET ROLE NONE")
            with pool.fetch() as cursor:
                cursor.execute("SELECT CURRENT_ROLE()")
                assert cursor.fetchone() == (role,)
            stats = pool.stats()
        assert (stats.opened, stats.closed, stats.resets) == (2, 1, 0)
    finally:
        db.query(f"DROP ROLE `{role}`")


@pytest.mark.destructive
def test_the_servers_init_connect_is_not_lost(fault_db: Database) -> None:
    """The server does not run init_connect again after a reset: with one
    set, a changed connection is closed, as before."""
    fault_db.query("SET GLOBAL init_connect = 'SET @ic = 7'")
    try:
        with Pool(fault_db.cfg, size=1, max_size=1) as pool:
            with pool.fetch() as cursor:
                cursor.execute("SET @ic = 0")
            with pool.fetch() as cursor:
                cursor.execute("SELECT @ic")
                assert cursor.fetchone() == (7,)
            stats = pool.stats()
        assert (stats.opened, stats.closed, stats.resets) == (2, 1, 0)
    finally:
        fault_db.query("SET GLOBAL init_connect = ''")


def test_with_the_housekeeper_behind_a_changed_connection_is_closed(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastapi_mysqlpool._housekeeper, "RESETS_QUEUED_MAX", 0)
    with Pool(db.cfg, size=1, max_size=1) as pool:
        with pool.fetch() as cursor:
            cursor.execute("SET @x = 1")
        with pool.fetch() as cursor:
            cursor.execute("SELECT @x")
            assert cursor.fetchone() == (None,)
        stats = pool.stats()
    assert (stats.opened, stats.closed, stats.resets) == (2, 1, 0)


def test_a_reset_connection_is_lent_as_fresh(db: Database) -> None:
    """A reset is a round trip, and the borrower's return is its last use: the
    next borrower needs no check of its own, and max_idle counts from then.
    (A reset connection used to keep the clocks of the borrow before.)"""
    with Pool(db.cfg, size=1, max_size=1) as pool:
        with pool.fetch() as cursor:
            conn = cursor.connection
            # As after a borrow that lasted 10 s (the request's own clock).
            conn.alive_at -= 10
            conn.returned_at -= 10
            cursor.execute("SET @x = 1")
        returned = time.monotonic()
        wait_until(lambda: pool.stats().resets == 1 and pool.stats().idle == 1)
        assert conn.returned_at >= returned - 1
        do_before = db.query("SHOW GLOBAL STATUS LIKE 'Com_do'")[0][1]
        with pool.fetch() as cursor:
            assert cursor.connection is conn
            cursor.execute("SELECT @x")
            assert cursor.fetchone() == (None,)
        # No DO 1 before the statement: the reset proved the session alive.
        assert db.query("SHOW GLOBAL STATUS LIKE 'Com_do'")[0][1] == do_before


def test_shutdown_closes_connections_waiting_for_a_reset(db: Database) -> None:
    pool = Pool(db.cfg, size=2, max_size=2)
    with pool.fetch() as one, pool.fetch() as two:
        one.execute("SET @x = 1")
        two.execute("SET @x = 2")
    started = time.monotonic()
    pool.close(timeout=5)
    assert time.monotonic() - started < 2
    stats = pool.stats()
    assert (stats.size, stats.in_use, stats.idle) == (0, 0, 0)
    assert stats.opened == stats.closed
    assert db.connection_count(settle_at=0) == 0


def test_a_failed_reset_is_reported(db: Database) -> None:
    conn = PooledConnection(**db.cfg)
    try:
        conn.setup_session()
        conn.expires_at = math.inf
        conn.query("SET @x = 1")
        assert conn.resettable(0)
        db.query(f"KILL {conn.thread_id()}")  # the pool then closes it
        assert conn.reset_session() is False
    finally:
        conn.close()


def test_cursor_statements_are_scanned_as_templates(db: Database) -> None:
    """What the sync cursor hands the scan: the template, once per call."""
    table = db.create_table("t", "id INT, title TEXT")
    conn = PooledConnection(**db.cfg)
    seen: list[Any] = []
    note = conn.note_template
    conn.note_template = lambda template: (seen.append(template), note(template))  # type: ignore[method-assign]
    try:
        cursor = conn.cursor(leased_cursor_class(MySQLdb.cursors.Cursor))
        cursor.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "x; LOCK TABLES"))
        cursor.executemany(
            f"INSERT INTO {table} VALUES (%s, %s)", [(2, "a"), (3, "; SET @x=1")]
        )
        cursor.executemany(f"UPDATE {table} SET id = %s WHERE id = %s", [(4, 3)])
        with pytest.raises(MySQLdb.ProgrammingError):
            cursor.execute("SELECT nonsense FROM nowhere %s", ("x",))
        conn.query("SELECT 1")  # raw SQL: its own template
        conn.store_result()
    finally:
        conn.close()
    assert seen == [
        f"INSERT INTO {table} VALUES (%s, %s)",
        f"INSERT INTO {table} VALUES (%s, %s)",
        f"UPDATE {table} SET id = %s WHERE id = %s",
        "SELECT nonsense FROM nowhere %s",
        "SELECT 1",
    ]
    assert not conn.session_changed
