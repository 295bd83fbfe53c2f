"""Pool defects from a hostile review (issue 16): read timeouts that left
queries running, max_idle defeated by the keepalive, async connects that waited
for a worker thread, needless KILLs after server errors, and options that
slipped through their checks."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fastapi_mysqlpool import Pool, _pool, mysql_pool_lifespan

from .servers import Database
from .test_pool import wait_until

# -- options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": 2.5}, "size must be an int"),
        ({"size": True}, "size must be an int"),
        ({"max_size": True}, "max_size must be an int"),
        ({"max_size": 4.0}, "max_size must be an int"),
        ({"max_size": "4"}, "max_size must be an int"),
        ({"max_idle": float("nan")}, "max_idle must be a number of seconds"),
        ({"max_lifetime": float("nan")}, "max_lifetime must be a number"),
        ({"timeout": float("nan")}, "timeout must be a number"),
        ({"acquire_timeout": float("nan")}, "acquire_timeout must be a number"),
        ({"acquire_timeout": True}, "acquire_timeout must be a number"),
        ({"max_idle": "600"}, "max_idle must be a number"),
        ({"timeout": float("inf")}, "timeout must be >= 0 and finite"),
        ({"max_lifetime": -1.0}, "max_lifetime must be > 0"),
    ],
)
def test_options_of_the_wrong_type_or_nan_are_refused(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Pool({"host": "127.0.0.1"}, fillup=False, open=False, **options)
    with pytest.raises(ValueError, match=message):
        mysql_pool_lifespan({"host": "127.0.0.1"}, **options)


def test_infinite_lifetimes_and_idle_times_mean_never() -> None:
    pool = Pool(
        {"host": "127.0.0.1"},
        size=1,
        max_size=2,
        max_lifetime=float("inf"),
        max_idle=float("inf"),
        fillup=False,
        open=False,
    )
    assert (pool.max_lifetime, pool.max_idle) == (float("inf"), float("inf"))


# -- max_idle and the keepalive ----------------------------------------------------


def test_max_idle_counts_from_the_last_caller_not_the_keepalive(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keepalive pings idle connections more often than max_idle: the
    connections a burst opened beyond size must still be closed."""
    monkeypatch.setattr(_pool, "KEEPALIVE_INTERVAL", 0.05)
    with Pool(db.cfg, size=1, max_size=3, max_idle=0.5) as pool:
        burst = threading.Barrier(3)

        def borrow() -> None:
            with pool.fetch() as cursor:
                cursor.execute("SELECT 1")
                burst.wait(10)  # all three held at once: two more opened

        threads = [threading.Thread(target=borrow) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert pool.stats().size == 3
        pinged = dict(db.query("SHOW GLOBAL STATUS LIKE 'Com_do'"))["Com_do"]
        wait_until(lambda: pool.stats().size == 1, timeout=3)
        # The survivor is still kept alive by the keepalive's DO 1.
        wait_until(
            lambda: (
                dict(db.query("SHOW GLOBAL STATUS LIKE 'Com_do'"))["Com_do"] != pinged
            )
        )
        stats = pool.stats()
    assert (stats.opened, stats.closed, stats.errors) == (3, 2, 0)
