"""The password never appears in logs, reprs, error messages or responses."""

from __future__ import annotations

import logging
import threading

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_mysqlpool import (
    Cursor,
    Pool,
    PoolStartupError,
    PoolTimeout,
    get_pool,
    mysql_pool_lifespan,
)

from .servers import Database


def test_the_password_is_never_shown(
    fault_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    password = fault_db.password
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)

    # A wrong password at startup: the message names the user, not a password.
    wrong = {**fault_db.cfg, "password": password + "-wrong"}
    app = FastAPI(lifespan=mysql_pool_lifespan(wrong, timeout=1))
    with pytest.raises(PoolStartupError) as startup, TestClient(app):
        pass
    seen.append(str(startup.value))

    release = threading.Event()
    app = FastAPI(
        lifespan=mysql_pool_lifespan(
            fault_db.url, size=1, max_size=1, acquire_timeout=0.1
        )
    )

    @app.get("/sql")
    def sql(cursor: Cursor) -> None:
        cursor.execute("SELEC password")

    @app.get("/hold")
    def hold(cursor: Cursor) -> None:
        release.wait(10)

    @app.get("/ping")
    def ping(cursor: Cursor) -> None:
        cursor.execute("SELECT 1")

    with TestClient(app, raise_server_exceptions=False) as client:
        pool = get_pool(app)
        seen += [repr(pool), repr(pool.config), str(pool.config), str(pool.stats())]
        seen.append(client.get("/sql").text)
        holder = threading.Thread(target=client.get, args=("/hold",))
        holder.start()
        try:
            seen.append(client.get("/ping").text)  # code 2: acquire timeout
        finally:
            release.set()
            holder.join()
        with pytest.raises(PoolTimeout) as timeout, pool.fetch(), pool.fetch():
            pass
        seen.append(str(timeout.value))
        fault_db.server.stop()  # code 1: the server is gone
        seen.append(client.get("/ping").text)
        seen.append(client.get("/ping").text)
        fault_db.server.start()

    with pytest.raises(ConnectionError) as drained:
        Pool(wrong, size=0, fillup=False).fetch().__enter__()
    seen.append(str(drained.value))

    seen += [record.getMessage() for record in caplog.records]
    seen += [caplog.text]
    assert len(seen) > 10
    for text in seen:
        assert password not in text, text
    # The messages do name where the trouble is.
    assert f"{fault_db.user}@127.0.0.1" in str(startup.value)
