"""Connection settings: a ``MySQLdb.connect`` kwargs dict or a ``mysql://`` URL.

Either may name several hosts (``mysql://u:pw@h1:3306,h2,h3:3307/db``, or
``{"host": ["h1:3306", "h2"], ...}``): the config then keeps ``host`` as a
list, and :func:`host_configs` gives one ``MySQLdb.connect`` config per host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_CHARSET = "utf8mb4"
#: Seconds; MySQLdb waits forever for an unreachable host without it.
DEFAULT_CONNECT_TIMEOUT = 5

_SCHEMES = {"mysql", "mariadb", "mysql+mysqldb", "mariadb+mysqldb"}
_SECRET_KEYS = frozenset({"password", "passwd"})
_INT_PARAMS = frozenset(
    {"port", "connect_timeout", "read_timeout", "write_timeout", "client_flag"}
)
_BOOL_PARAMS = frozenset({"autocommit", "local_infile", "compress", "use_unicode"})
_TLS_MODES = frozenset({"REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"})
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConnectConfig(dict[str, Any]):
    """``MySQLdb.connect`` keyword arguments whose repr never shows the password."""

    def __repr__(self) -> str:
        shown = {k: "***" if k in _SECRET_KEYS else v for k, v in self.items()}
        return f"ConnectConfig({shown!r})"

    __str__ = __repr__

    @property
    def target(self) -> str:
        """``user@host:port/database`` (or the socket path): safe for messages."""
        user = self.get("user", "")
        socket = self.get("unix_socket")
        if socket:
            where = str(socket)
        else:
            where = ",".join(address for address, _ in host_configs(self))
        database = self.get("database", self.get("db"))
        return f"{user}@{where}" + (f"/{database}" if database else "")


def required_tls(config: Mapping[str, Any]) -> str | None:
    """What in *config* demands TLS (``"ssl_mode=REQUIRED"``, ``"ssl"``), or None.

    With libmariadb, mysqlclient connects in plaintext to a server without TLS
    for ssl_mode=REQUIRED or an ``ssl`` argument (VERIFY_* do refuse): the
    pool must then check each connection itself.
    """
    mode = config.get("ssl_mode")
    if mode is not None:  # it wins over `ssl`, as in mysqlclient
        return f"ssl_mode={mode}" if str(mode).upper() in _TLS_MODES else None
    return "ssl" if config.get("ssl") else None


def host_configs(config: ConnectConfig) -> list[tuple[str, ConnectConfig]]:
    """``(host:port, its config)`` for each host *config* names, in order."""
    hosts = config.get("host", "localhost")
    default_port = int(config.get("port", 3306))
    if isinstance(hosts, str):
        return [(f"{hosts}:{default_port}", config)]
    configs = []
    for entry in hosts:
        host, port = split_host(str(entry), default_port)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        configs.append((address, ConnectConfig({**config, "host": host, "port": port})))
    return configs


def split_host(entry: str, default_port: int) -> tuple[str, int]:
    """``h1:3307`` -> (h1, 3307); ``[::1]:3307``; ``h1`` -> (h1, default)."""
    host, port = entry, default_port
    if entry.startswith("["):  # an IPv6 address
        host, _, rest = entry[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:])
    elif entry.count(":") == 1:
        host, _, text = entry.partition(":")
        port = _port(text)
    if not host:
        raise ValueError("empty host name in the host list")
    return host, port


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError("invalid port in the host list")
    return int(text)


def connect_params(cfg: Mapping[str, Any] | str, *, what: str) -> dict[str, Any]:
    """*cfg* as ``MySQLdb.connect`` arguments: a dict's copy, or a URL parsed.
    *what* names it in the TypeError for anything else."""
    if isinstance(cfg, str):
        return parse_url(cfg)
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise TypeError(
        f"{what} must be a dict of MySQLdb.connect arguments or a mysql:// URL, "
        f"not {type(cfg).__name__}"
    )


def make_config(cfg: Mapping[str, Any] | str) -> ConnectConfig:
    """Normalise *cfg* and add the defaults a user expects."""
    params = connect_params(cfg, what="cfg")
    hosts = params.get("host")
    if isinstance(hosts, (list, tuple)):
        if not hosts or not all(isinstance(host, str) for host in hosts):
            raise ValueError("cfg['host'] must be a host name or a list of them")
        params["host"] = list(hosts)
        if len(hosts) == 1:
            params["host"], params["port"] = split_host(
                hosts[0], int(params.get("port", 3306))
            )
        elif params.get("unix_socket"):
            raise ValueError("several hosts cannot be combined with unix_socket")
        else:
            for host in hosts:  # checked now, not at the first connect
                split_host(host, 3306)
    params.setdefault("charset", DEFAULT_CHARSET)
    params.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    # The pool's commit/rollback contract needs real transactions.
    params.setdefault("autocommit", False)
    return ConnectConfig(params)


def parse_url(url: str) -> dict[str, Any]:
    """``mysql://user:password@host:port/database?charset=utf8mb4&...``"""
    parts = urlsplit(url)
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        # A password with an unescaped "/", "?" or "#" splits there: the rest
        # would be read as the database or parameters, and shown in messages.
        raise ValueError(
            "invalid database URL: percent-encode special characters in the "
            "user and password with urllib.parse.quote(password, safe='')"
        )
    if parts.scheme not in _SCHEMES:
        # Never echo the URL: it may carry the password.
        raise ValueError(
            f"unsupported database URL scheme {parts.scheme!r}; "
            f"expected one of {sorted(_SCHEMES)}"
        )
    params: dict[str, Any] = {}
    # unquote, not unquote_plus: "+" is a plain character in a URL's user and
    # password (RFC 3986), and a raw "+" in a password must stay one. A space
    # is %20 (quote_plus would write "+": hence quote(..., safe="") above).
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password is not None:
        params["password"] = unquote(parts.password)
    hostinfo = parts.netloc.rpartition("@")[2]
    if "," in hostinfo:
        params["host"] = [unquote(entry) for entry in hostinfo.split(",")]
    else:
        if parts.hostname:
            params["host"] = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise ValueError("invalid port in database URL") from None
        if port is not None:
            params["port"] = port
    database = unquote(parts.path.lstrip("/"))
    if database:
        params["database"] = database
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        params[key] = _convert(key, value)
    return params


def _convert(key: str, value: str) -> Any:
    if key in _INT_PARAMS:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"URL parameter {key!r} must be an integer") from None
    if key in _BOOL_PARAMS:
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"URL parameter {key!r} must be a boolean")
    return value
