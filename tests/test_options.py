"""The pool's options (_options): defaults and checks, without a server."""

from __future__ import annotations

import pytest

from fastapi_mysqlpool import Pool, mysql_pool_lifespan
from fastapi_mysqlpool._options import (
    DEFAULT_ACQUIRE_TIMEOUT,
    DEFAULT_MAX_IDLE,
    DEFAULT_MAX_LIFETIME,
    DEFAULT_SIZE,
    DEFAULT_TIMEOUT,
    Settings,
    default_max_size,
)


def test_the_defaults() -> None:
    assert Settings.of({}) == Settings(
        size=DEFAULT_SIZE,
        timeout=DEFAULT_TIMEOUT,
        fillup=True,
        max_size=None,
        acquire_timeout=DEFAULT_ACQUIRE_TIMEOUT,
        max_lifetime=DEFAULT_MAX_LIFETIME,
        max_idle=DEFAULT_MAX_IDLE,
    )


def test_size_defaults_to_ten_or_max_size_if_lower() -> None:
    assert Settings.of({"max_size": 3}).size == 3
    assert Settings.of({"max_size": 30}).size == DEFAULT_SIZE
    assert Settings.of({"size": 0}).size == 0


def test_max_size_follows_the_worker_threads_but_never_below_size() -> None:
    assert default_max_size(1) == 40  # anyio's default, no event loop running
    assert default_max_size(50) == 50


def test_a_pool_keeps_what_it_was_given() -> None:
    pool = Pool({"host": "127.0.0.1"}, 2, 1.5, False, max_size=3, open=False)
    assert (pool.size, pool.timeout, pool.fillup, pool.max_size) == (2, 1.5, False, 3)
    assert pool.settings == Settings.of(
        {"size": 2, "timeout": 1.5, "fillup": False, "max_size": 3}
    )


def test_an_unknown_option_is_refused_as_python_would() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_sise'"):
        Pool({"host": "127.0.0.1"}, open=False, max_sise=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'open'"):
        mysql_pool_lifespan({"host": "127.0.0.1"}, open=False)  # type: ignore[call-overload]


def test_leak_timeout_and_configure_are_checked() -> None:
    assert Settings.of({}).leak_timeout is None
    assert Settings.of({}).configure is None
    assert Settings.of({"leak_timeout": 30}).leak_timeout == 30
    for bad in (0, -1, float("inf"), float("nan"), True, "30"):
        with pytest.raises(ValueError, match="leak_timeout"):
            Settings.of({"leak_timeout": bad})  # type: ignore[typeddict-item]
    assert Settings.of({"configure": print}).configure is print
    with pytest.raises(ValueError, match="configure must be callable"):
        Settings.of({"configure": "SET time_zone = '+00:00'"})  # type: ignore[typeddict-item]


def test_name_telemetry_and_slow_query() -> None:
    settings = Settings.of({})
    assert (settings.name, settings.telemetry, settings.slow_query) == (
        "default",
        True,
        None,
    )
    settings = Settings.of({"name": "orders", "telemetry": False, "slow_query": 0.5})
    assert (settings.name, settings.telemetry, settings.slow_query) == (
        "orders",
        False,
        0.5,
    )
    pool = Pool({"host": "127.0.0.1"}, open=False, name="orders", telemetry=False)
    assert pool.name == "orders"
    assert pool.telemetry is None  # nothing to record


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("name", "", "name must be a non-empty str"),
        ("name", 3, "name must be a non-empty str"),
        ("telemetry", 1, "telemetry must be a bool"),
        ("slow_query", -1, "slow_query must be >= 0"),
        ("slow_query", float("inf"), "slow_query must be >= 0"),
        ("slow_query", float("nan"), "slow_query must be a number of seconds"),
        ("slow_query", True, "slow_query must be a number of seconds"),
    ],
)
def test_name_telemetry_and_slow_query_are_checked(
    option: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.of({option: value})  # type: ignore[misc]
