"""leak_timeout (_leaks): one warning naming who holds a connection too long."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_mysqlpool import AsyncCursor, Cursor, Pool, get_pool, mysql_pool_lifespan

from .servers import Database

LEAK_TIMEOUT = 0.2


class LeakLog(logging.Handler):
    """Collects the pool's leak warnings; :attr:`warned` is set at the first."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.warned = threading.Event()
        self.warnings: list[str] = []
        self.returns: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "leak_timeout" in message and record.levelno == logging.WARNING:
            self.warnings.append(message)
            self.warned.set()
        elif "reported as leaked" in message:
            self.returns.append(message)


@pytest.fixture
def leak_log() -> Iterator[LeakLog]:
    handler = LeakLog()
    logger = logging.getLogger("fastapi_mysqlpool")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def hold_past_the_timeout(leak_log: LeakLog) -> None:
    """Until the warning came, then long enough for several more checks."""
    assert leak_log.warned.wait(5), "no leak warning"
    time.sleep(4 * LEAK_TIMEOUT)  # time must pass: nothing to wait for


def test_a_route_holding_a_connection_too_long_is_named_once(
    db: Database, leak_log: LeakLog
) -> None:
    app = FastAPI(
        lifespan=mysql_pool_lifespan(db.cfg, size=1, leak_timeout=LEAK_TIMEOUT)
    )

    @app.get("/reports/{report_id}")
    def report(report_id: int, cursor: Cursor) -> int:
        cursor.execute("SELECT %s", (report_id,))
        hold_past_the_timeout(leak_log)
        return int(cursor.fetchone()[0])

    @app.get("/quick")
    async def quick(cursor: AsyncCursor) -> int:
        await cursor.execute("SELECT 1")
        return 1

    with TestClient(app) as client:
        pool = get_pool(app)
        for _ in range(5):
            assert client.get("/quick").status_code == 200
        assert pool.stats().leaks == 0
        assert client.get("/reports/7").json() == 7
        assert pool.stats().leaks == 1
    (warning,) = leak_log.warnings
    assert "GET /reports/{report_id}" in warning
    assert db.password not in warning
    (returned,) = leak_log.returns
    assert "GET /reports/{report_id}" in returned


def test_outside_a_request_the_warning_names_the_line_that_borrowed(
    db: Database, leak_log: LeakLog
) -> None:
    with Pool(db.cfg, size=1, leak_timeout=LEAK_TIMEOUT) as pool:
        with pool.fetch() as cursor:  # the line named
            line = _line() - 1
            cursor.execute("SELECT 1")
            hold_past_the_timeout(leak_log)
        with pool.fetch() as cursor:
            cursor.execute("SELECT 1")
        assert pool.stats().leaks == 1
    (warning,) = leak_log.warnings
    assert f"{__file__}:{line} in " in warning, warning


@pytest.mark.anyio
async def test_an_async_borrow_outside_a_request_is_named_too(
    db: Database, leak_log: LeakLog
) -> None:
    pool = Pool(db.cfg, size=1, leak_timeout=LEAK_TIMEOUT)
    try:
        async with pool.cursor() as cursor:
            line = _line() - 1
            await cursor.execute("SELECT 1")
            while not leak_log.warned.is_set():
                await cursor.execute("SELECT SLEEP(0.05)")
        assert pool.stats().leaks == 1
    finally:
        await pool.aclose()
    (warning,) = leak_log.warnings
    assert f"{__file__}:{line} in " in warning, warning


def test_unwatched_pools_pay_nothing(db: Database) -> None:
    """Without leak_timeout, the class's own methods run, and the app's
    wrapper records no request."""
    app = FastAPI(lifespan=mysql_pool_lifespan(db.cfg, size=1))
    with TestClient(app):
        pool = get_pool(app)
        assert pool.leaks is None
        assert not {"take_idle", "acquire", "aacquire", "checkin"} & set(vars(pool))
        assert type(app.middleware_stack).__name__ == "BindPool"
    with pytest.raises(ValueError, match="leak_timeout"):
        Pool(db.cfg, open=False, leak_timeout=0)


def _line() -> int:
    frame = __import__("sys")._getframe(1)
    return int(frame.f_lineno)
