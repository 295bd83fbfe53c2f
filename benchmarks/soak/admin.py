"""The database side of the soak: an admin connection that watches and KILLs
the app's, the app's own user and tables, and the check of its writes."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import MySQLdb

from benchmarks.db import DbUrl, ensure_table
from benchmarks.soak.app import COUNTER_ROWS, COUNTERS_TABLE, TASKS_TABLE, WRITES_TABLE

if TYPE_CHECKING:
    from benchmarks.soak.load import Load


def url_of(db: DbUrl) -> str:
    auth = quote(db.user, safe="")
    if db.password:
        auth += ":" + quote(db.password, safe="")
    return f"mysql://{auth}@{db.host}:{db.port}/{quote(db.database, safe='')}"


class Admin:
    """An autocommit connection as the admin user, to watch and KILL the app's.

    Each instance is used from one worker thread at a time; the lock also keeps
    `close()` from pulling the connection out from under a running query.
    """

    def __init__(self, db: DbUrl) -> None:
        self._conn = MySQLdb.connect(**db.mysqldb_kwargs(), autocommit=True)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock, contextlib.suppress(MySQLdb.Error):
            self._conn.close()

    def rows(self, sql: str, args: Sequence[Any] | None = None) -> list[Any]:
        with self._lock:
            cursor = self._conn.cursor()
            cursor.execute(sql, args)
            return list(cursor.fetchall())

    def connections(self, user: str) -> tuple[int, int, int]:
        """The user's connections on the server: all, busy (running a
        statement) and killed but not yet gone."""
        commands = [
            row[0]
            for row in self.rows(
                "SELECT command FROM information_schema.processlist WHERE user = %s",
                (user,),
            )
        ]
        killed = commands.count("Killed")
        return len(commands), len(commands) - killed - commands.count("Sleep"), killed

    def kill(self, user: str, idle_only: bool) -> tuple[int, int]:
        """KILL the user's connections (only `Sleep` ones with *idle_only*).

        Returns how many busy and idle connections were killed."""
        busy = idle = 0
        for thread_id, command in self.rows(
            "SELECT id, command FROM information_schema.processlist WHERE user = %s",
            (user,),
        ):
            if command == "Killed" or (idle_only and command != "Sleep"):
                continue
            try:
                self.rows(f"KILL CONNECTION {int(thread_id)}")
            except MySQLdb.OperationalError:  # 1094: it ended in the meantime
                continue
            if command == "Sleep":
                idle += 1
            else:
                busy += 1
        return busy, idle

    def open_transactions(self, user: str) -> int:
        return int(
            self.rows(
                "SELECT COUNT(*) FROM information_schema.innodb_trx t "
                "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                "WHERE p.user = %s",
                (user,),
            )[0][0]
        )

    def wait_gone(self, user: str, timeout: float) -> tuple[int, float]:
        """Wait up to *timeout* s for the user to have no connection left.

        Returns the count at the end and the seconds waited."""
        started = time.monotonic()
        while True:
            count = self.connections(user)[0]
            waited = time.monotonic() - started
            if count == 0 or waited > timeout:
                return count, waited
            time.sleep(0.05)


@contextlib.contextmanager
def admin_connection(db: DbUrl) -> Iterator[Admin]:
    admin = Admin(db)
    try:
        yield admin
    finally:
        admin.close()


def server_version(db: DbUrl) -> str:
    with admin_connection(db) as admin:
        return str(admin.rows("SELECT VERSION()")[0][0])


@contextlib.contextmanager
def app_database(admin_db: DbUrl) -> Iterator[DbUrl]:
    """Create the app's user and tables; drop them all on the way out."""
    ensure_table(admin_db)  # bench_items, shared with benchmarks.run
    user = f"soak_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    db = admin_db.database
    with admin_connection(admin_db) as admin:
        admin.rows(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
        try:
            admin.rows(f"GRANT SELECT, INSERT, UPDATE ON `{db}`.* TO '{user}'@'%'")
            for table, columns in (
                (WRITES_TABLE, "id BIGINT PRIMARY KEY, payload VARCHAR(64) NOT NULL"),
                (COUNTERS_TABLE, "id INT PRIMARY KEY, n BIGINT NOT NULL"),
                (TASKS_TABLE, "id BIGINT PRIMARY KEY"),
            ):
                admin.rows(f"DROP TABLE IF EXISTS {table}")
                admin.rows(f"CREATE TABLE {table} ({columns}) ENGINE=InnoDB")
            values = ", ".join(f"({i}, 0)" for i in range(1, COUNTER_ROWS + 1))
            admin.rows(f"INSERT INTO {COUNTERS_TABLE} (id, n) VALUES {values}")
            yield DbUrl(admin_db.host, admin_db.port, user, password, db)
        finally:
            # Sessions outlive DROP USER: end any the app left (the report has
            # already counted them).
            with contextlib.suppress(MySQLdb.Error):
                admin.kill(user, idle_only=False)
            with contextlib.suppress(MySQLdb.Error):
                admin.rows(f"DROP USER IF EXISTS '{user}'@'%'")
            for table in (WRITES_TABLE, COUNTERS_TABLE, TASKS_TABLE):
                with contextlib.suppress(MySQLdb.Error):
                    admin.rows(f"DROP TABLE IF EXISTS {table}")


def check_writes(admin: Admin, load: Load) -> dict[str, Any]:
    """Compare what the clients were told with what the database holds."""
    present = {row[0] for row in admin.rows(f"SELECT id FROM {WRITES_TABLE}")}
    acked = set(load.acked_inserts)
    tasks_present = {row[0] for row in admin.rows(f"SELECT id FROM {TASKS_TABLE}")}
    tasks_acked = set(load.acked_tasks)
    counted = int(admin.rows(f"SELECT COALESCE(SUM(n), 0) FROM {COUNTERS_TABLE}")[0][0])
    return {
        "inserts": {
            "attempted": load.requests["insert"],
            "acknowledged": len(acked),
            "present": len(present),
            "acknowledged_missing": len(acked - present),
            "present_not_acknowledged": len(present - acked),
        },
        "bumps": {
            "attempted": load.requests["bump"],
            "acknowledged": load.acked_bumps,
            "counted": counted,
        },
        "tasks": {
            "scheduled": len(tasks_acked),
            "present": len(tasks_present),
            "missing": len(tasks_acked - tasks_present),
            "unexpected": len(tasks_present - tasks_acked),
        },
    }
