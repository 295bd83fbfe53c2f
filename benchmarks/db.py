"""Database side of the benchmarks: URL parsing and the `bench_items` table.

The URL parser is deliberately our own (and tiny) so the harness does not depend
on the library under test for anything but the variants that exercise it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

FALLBACK_URL = "mysql://root@127.0.0.1:3306/test"
TABLE = "bench_items"
ROWS = 10_000


@dataclass(frozen=True)
class DbUrl:
    host: str
    port: int
    user: str
    password: str
    database: str

    def mysqldb_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `MySQLdb.connect` (and so for mysqlclient-pool)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "charset": "utf8mb4",
        }

    def redacted(self) -> str:
        """The URL without its password, for reports and JSON output."""
        auth = f"{self.user}:***@" if self.password else f"{self.user}@"
        return f"mysql://{auth}{self.host}:{self.port}/{self.database}"


def parse_url(url: str) -> DbUrl:
    """Parse `mysql://user:pass@host:port/db`; user, password and port optional."""
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb"):
        raise ValueError(f"expected a mysql:// URL, got {url!r}")
    database = parts.path.lstrip("/")
    if not database:
        raise ValueError(f"the URL names no database: {url!r}")
    return DbUrl(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=unquote(database),
    )


@contextlib.contextmanager
def database_url(url: str | None) -> Iterator[str]:
    """Yield the URL to benchmark against.

    An explicit URL wins; otherwise a throwaway server from the library's test
    helpers if it can be imported; otherwise the local development server.
    """
    if url:
        yield url
        return
    try:
        from fastapi_mysqlpool.testing import TemporaryServer
    except Exception:  # not written yet, or broken: the local server still works
        print(
            f"# TemporaryServer not importable; using {FALLBACK_URL}", file=sys.stderr
        )
        yield FALLBACK_URL
        return
    # Failing to start the throwaway server is an error, not a reason to silently
    # benchmark some other server: the user can pass --url instead.
    with TemporaryServer() as server:
        print("# using fastapi_mysqlpool.testing.TemporaryServer", file=sys.stderr)
        yield str(server.url)


def ensure_table(db: DbUrl) -> None:
    """Create and fill `bench_items` unless it already holds exactly the rows."""
    import MySQLdb

    conn = MySQLdb.connect(**db.mysqldb_kwargs())
    try:
        cur = conn.cursor()
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} ("
            " id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, value INT NOT NULL"
            ") ENGINE=InnoDB"
        )
        cur.execute(f"SELECT COUNT(*), MIN(id), MAX(id) FROM {TABLE}")
        if cur.fetchone() == (ROWS, 1, ROWS):
            return
        cur.execute(f"DELETE FROM {TABLE}")
        cur.executemany(
            f"INSERT INTO {TABLE} (id, name, value) VALUES (%s, %s, %s)",
            [(i, f"item-{i:05d}", (i * 7919) % 100_003) for i in range(1, ROWS + 1)],
        )
        conn.commit()
    finally:
        conn.close()
