"""The README's pitfalls, as they behave: the trap and the pattern that avoids it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from fastapi_mysqlpool import Cursor, mysql_pool_lifespan

from .servers import Database


@pytest.mark.parametrize(
    ("scope", "committed"),
    [
        # The default ("request") tears down after the response went out: the
        # request's connection is back in the pool and the write is lost.
        (None, False),
        # Torn down before the request's commit, which then includes the write.
        ("function", True),
    ],
)
def test_a_yield_dependency_writing_in_its_teardown(
    db: Database, scope: Any, committed: bool
) -> None:
    table = db.create_table("audit", "what VARCHAR(20)")
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))

    def audited(cursor: Cursor) -> Iterator[Any]:
        yield cursor
        cursor.execute(f"INSERT INTO {table} VALUES ('done')")

    @app.post("/work")
    def work(cursor: Any = Depends(audited, scope=scope)) -> str:
        cursor.execute("SELECT 1")
        return "ok"

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/work").status_code == 200
    assert db.scalar(f"SELECT COUNT(*) FROM {table}") == int(committed)
