"""Opening the pool's connections, and failing fast while the server is down."""

from __future__ import annotations

import math
import random
import threading
import time
from typing import TypeVar

import MySQLdb

from ._backoff import Backoff
from ._config import DEFAULT_CONNECT_TIMEOUT, ConnectConfig, required_tls
from ._connection import PooledConnection, SessionKiller, close_quietly
from ._errors import BUSY_ERRNOS, BusyError, DrainedError, errno_of
from ._stats import Counters
from ._telemetry import Telemetry

_LIFETIME_JITTER = 0.025  # as HikariCP: spread the retirements of a batch
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 0.5  # the pool notices a server that came back within this
_BACKOFF_JITTER = 0.2


class Connector:
    """Opens connections to *config*'s server and sets them up for the pool;
    after a failure, callers fail fast (:meth:`unavailable_locked`) until
    :attr:`backoff` is due."""

    def __init__(
        self,
        config: ConnectConfig,
        *,
        max_lifetime: float | None,
        lock: threading.Lock,
        counters: Counters,
        killer: SessionKiller,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.config = config
        self._telemetry = telemetry
        self.max_lifetime = max_lifetime
        self._required_tls = required_tls(config)
        self._lock = lock
        self._counters = counters
        self._killer = killer
        #: While the server is down or refuses us, callers fail fast until
        #: this is due (changed under the lock).
        self.backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX, jitter=_BACKOFF_JITTER)
        self._last_error: str | None = None

    def connect_timeout(self) -> int:
        return int(self.config.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT)

    def connect(self, connect_timeout: int | None = None) -> PooledConnection:
        """Open one connection (blocking). Raises DrainedError or BusyError."""
        config = self.config
        if connect_timeout is not None:
            # A ConnectConfig: a frame's locals, shown by some error trackers,
            # must not hold the password in a plain dict.
            config = ConnectConfig({**config, "connect_timeout": connect_timeout})
        try:
            conn = PooledConnection(**config)
            try:
                wait_timeout, server_host = conn.setup_session()
                if self._required_tls is not None:
                    _check_encrypted(conn, self._required_tls)
            except BaseException:
                close_quietly(conn)
                raise
        except MySQLdb.Error as exc:
            raise self._failed(exc) from exc
        now = time.monotonic()
        conn.returned_at = conn.alive_at = now
        conn.wait_timeout = float(wait_timeout)
        conn.server_host = server_host
        conn.read_timeout = config.get("read_timeout") or None  # 0: no limit
        conn.killer = self._killer
        if self._telemetry is not None:
            self._telemetry.bind(conn, config)
        # Compressed packets have another header: _wire cannot read them.
        conn.plain_wire = not config.get("compress")
        lifetime = self.max_lifetime
        conn.expires_at = (
            math.inf
            if lifetime is None
            else now + lifetime * (1 - random.uniform(0, _LIFETIME_JITTER))  # noqa: S311
        )
        with self._lock:
            self._counters.opened += 1
            self.backoff.succeeded()
            self._last_error = None
        return conn

    def _failed(self, exc: MySQLdb.Error) -> ConnectionError:
        """Record a failed attempt; the error to raise in its place."""
        errno = errno_of(exc)
        reason = describe(exc)
        with self._lock:
            self._counters.errors += 1
            self._last_error = reason
            if errno not in BUSY_ERRNOS:
                # Down or refusing us: back off so callers fail fast instead of
                # all waiting on a server that cannot answer.
                self.backoff.failed(time.monotonic())
        if errno in BUSY_ERRNOS:
            return _with_message(
                BusyError(), f"{self.config.target} refused a connection: {reason}"
            )
        return _with_message(
            DrainedError(), f"cannot connect to {self.config.target}: {reason}"
        )

    def unavailable_locked(self, now: float) -> ConnectionError | None:
        """The error to fail fast with while the server is down, else None."""
        if not self.backoff.waiting(now):
            return None
        return _with_message(
            DrainedError(),
            f"{self.config.target} is unavailable ({self._last_error}); "
            f"next attempt in {self.backoff.until - now:.2f} s",
        )


_E = TypeVar("_E", bound=BaseException)


def _with_message(exc: _E, message: str) -> _E:
    # mysqlclient-pool's errors take no message; ours name the server.
    exc.args = (message,)
    return exc


def describe(exc: BaseException) -> str:
    """``(2003) Can't connect...``: a MySQL error without its Python wrapping."""
    errno = errno_of(exc)
    if errno is not None and len(exc.args) > 1:
        return f"({errno}) {exc.args[1]}"
    return str(exc) or type(exc).__name__


def _check_encrypted(conn: PooledConnection, required: str) -> None:
    """Refuse a connection that *required* (what in cfg asked for TLS) wanted
    encrypted but is not: libmariadb lets ssl_mode=REQUIRED and ``ssl`` fall
    back to plaintext. The server's word, one round trip per new connection."""
    conn.query(b"SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    rows = conn.store_result().fetch_row()
    if not rows or not rows[0][1]:
        # 2026, CR_SSL_CONNECTION_ERROR, as libmariadb's own VERIFY_CA refusal.
        raise MySQLdb.OperationalError(
            2026,
            f"TLS was required ({required}) but the server did not negotiate "
            "it: the connection is not encrypted",
        )
