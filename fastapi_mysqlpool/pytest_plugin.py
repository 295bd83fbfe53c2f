"""The pytest plugin (``pip install 'fastapi-mysqlpool[testing]'``): a
throwaway server for the session, and tests that roll back.

Fixtures:

- ``mysql_url`` (session): the URL of a throwaway MariaDB/MySQL server
  (:class:`~fastapi_mysqlpool.testing.TemporaryServer`), started on first use
  and removed at the end; or of an existing server named by ``--mysql-url``
  or the ``FASTAPI_MYSQLPOOL_TEST_URL`` environment variable.
- ``mysql_rollback``: the test runs in one transaction, rolled back when it
  ends: every borrow from a pool serving requests (a
  ``mysql_pool_lifespan`` app, started before or during the test) gets one
  connection, each request inside a savepoint (see
  :class:`~fastapi_mysqlpool.testing.Rollback`, which it yields: its
  ``pin(pool)`` pins a pool made without the lifespan).

Registered through the ``pytest11`` entry point as ``fastapi_mysqlpool``
(``-p no:fastapi_mysqlpool`` turns it off).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .testing import Rollback, TemporaryServer

#: Names an existing server to test against instead of a throwaway one.
URL_ENV = "FASTAPI_MYSQLPOOL_TEST_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastapi-mysqlpool")
    group.addoption(
        "--mysql-url",
        default=None,
        help=(
            "mysql://user:password@host:port/database of an existing server for "
            f"the mysql_url fixture (default: ${URL_ENV}, else a throwaway server)"
        ),
    )


@pytest.fixture(scope="session")
def mysql_url(pytestconfig: pytest.Config) -> Iterator[str]:
    """The URL of the session's server (a throwaway one unless named)."""
    url = pytestconfig.getoption("mysql_url") or os.environ.get(URL_ENV)
    if url:
        yield url
        return
    with TemporaryServer() as server:
        yield server.url


@pytest.fixture
def mysql_rollback() -> Iterator[Rollback]:
    """Run the test in one transaction, rolled back when it ends."""
    with Rollback() as rollback:
        yield rollback
