"""Connection settings: dicts and mysql:// URLs, sensible defaults, no password."""

from __future__ import annotations

from typing import Any

import pytest

from fastapi_mysqlpool._config import (
    DEFAULT_CHARSET,
    DEFAULT_CONNECT_TIMEOUT,
    ConnectConfig,
    host_configs,
    make_config,
)


def test_url_with_everything() -> None:
    config = make_config(
        "mysql://us%40er:p%3Ass@db.example:3307/shop"
        "?charset=latin1&connect_timeout=2&autocommit=false&unix_socket=/run/mysqld/s.sock"
    )
    assert dict(config) == {
        "user": "us@er",
        "password": "p:ss",
        "host": "db.example",
        "port": 3307,
        "database": "shop",
        "charset": "latin1",
        "connect_timeout": 2,
        "autocommit": False,
        "unix_socket": "/run/mysqld/s.sock",
    }


@pytest.mark.parametrize("scheme", ["mysql", "mariadb", "mysql+mysqldb"])
def test_schemes(scheme: str) -> None:
    assert make_config(f"{scheme}://u@h/d")["database"] == "d"


def test_defaults_a_user_expects_and_overrides() -> None:
    config = make_config({"host": "h", "user": "u"})
    assert config["charset"] == DEFAULT_CHARSET == "utf8mb4"
    assert config["connect_timeout"] == DEFAULT_CONNECT_TIMEOUT
    assert config["autocommit"] is False
    assert make_config({"charset": "latin1"})["charset"] == "latin1"


@pytest.mark.parametrize(
    ("cfg", "error", "message"),
    [
        ("postgres://u:secret@h/d", ValueError, "unsupported database URL scheme"),
        ("mysql://u:secret@h:notaport/d", ValueError, "invalid port"),
        ("mysql://u:secret@h/d?port=x", ValueError, "'port' must be an integer"),
        ("mysql://u:secret@h/d?autocommit=maybe", ValueError, "must be a boolean"),
        ("mysql://u:20/secret@h/d", ValueError, "percent-encode special characters"),
        (42, TypeError, "cfg must be a dict"),
    ],
)
def test_bad_settings_never_echo_the_password(
    cfg: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        make_config(cfg)
    assert "secret" not in str(raised.value)


def test_repr_and_target_hide_the_password() -> None:
    config = ConnectConfig(
        {"host": "h", "port": 3306, "user": "u", "password": "secret", "db": "d"}
    )
    assert "secret" not in repr(config)
    assert "secret" not in str(config)
    assert "'password': '***'" in repr(config)
    assert config.target == "u@h:3306/d"
    assert ConnectConfig({"unix_socket": "/run/s", "user": "u"}).target == "u@/run/s"


def test_a_url_may_name_several_hosts() -> None:
    config = make_config("mysql://u:p%2C@h1:3306,h2:3307,h3/db")
    assert config["host"] == ["h1:3306", "h2:3307", "h3"]
    assert config["password"] == "p,"
    assert config.target == "u@h1:3306,h2:3307,h3:3306/db"
    assert [
        (address, c["host"], c["port"], c["password"])
        for address, c in host_configs(config)
    ] == [
        ("h1:3306", "h1", 3306, "p,"),
        ("h2:3307", "h2", 3307, "p,"),
        ("h3:3306", "h3", 3306, "p,"),
    ]
    assert "p," not in repr(host_configs(config))


def test_a_dict_may_name_several_hosts() -> None:
    config = make_config({"host": ["h1", "h2:3307", "[::1]:3308"], "port": 3310})
    assert [address for address, _ in host_configs(config)] == [
        "h1:3310",
        "h2:3307",
        "[::1]:3308",
    ]
    single = make_config({"host": ["h1:3307"]})
    assert (single["host"], single["port"]) == ("h1", 3307)
    assert host_configs(single) == [("h1:3307", single)]


@pytest.mark.parametrize(
    "cfg",
    [
        {"host": []},
        {"host": ["h1", 3]},
        {"host": ["h1", "h2:x"]},
        {"host": ["h1", ":3306"]},
        {"host": ["h1", "h2"], "unix_socket": "mysqld.sock"},
        "mysql://u@h1,h2:99999/db",
    ],
)
def test_bad_host_lists(cfg: Any) -> None:
    with pytest.raises(ValueError, match=r"host|port"):
        make_config(cfg)
