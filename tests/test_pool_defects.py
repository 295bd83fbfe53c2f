"""Pool defects from a hostile review (issue 16): read timeouts that left
queries running, max_idle defeated by the keepalive, async connects that waited
for a worker thread, needless KILLs after server errors, and options that
slipped through their checks."""

from __future__ import annotations

from typing import Any

import pytest

from fastapi_mysqlpool import Pool, mysql_pool_lifespan

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
