"""Opening the pool's connections, and failing fast while the server is down.

With several hosts (see _hosts), each new connection goes to a host the
:class:`HostSet` picks, is checked (writable, Galera ``Synced``) before the
pool gets it, and the pool fails fast only while no host is due.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import MySQLdb

from ._backoff import Backoff
from ._config import (
    DEFAULT_CONNECT_TIMEOUT,
    ConnectConfig,
    host_configs,
    required_tls,
)
from ._connection import PooledConnection, SessionKiller, close_quietly
from ._errors import (
    BUSY_ERRNOS,
    LOGIN_ERRNOS,
    BusyError,
    DrainedError,
    errno_of,
    is_connection_broken,
)
from ._hosts import (
    NOT_SYNCED,
    PRIMARY,
    READ_ONLY,
    Host,
    HostMonitor,
    HostSet,
    check_state,
    state_after,
)
from ._stats import Counters, HostStats
from ._telemetry import Telemetry

logger = logging.getLogger("fastapi_mysqlpool")

_LIFETIME_JITTER = 0.025  # as HikariCP: spread the retirements of a batch
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 0.5  # the pool notices a server that came back within this
_BACKOFF_JITTER = 0.2
_PASSWORD_KEYS = ("password", "passwd")


class SetupError(DrainedError):
    """A new connection could not be set up: the ``configure`` callback or
    the password callable failed. *retry*: trying again may help."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        ConnectionError.__init__(self, reason)
        self.reason = reason
        self.retry = retry


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
        target: str = PRIMARY,
        on_recovered: Callable[[], None] | None = None,
        configure: Callable[[Any], object] | None = None,
        on_first_connect: Callable[[PooledConnection], None] | None = None,
    ) -> None:
        self.config = config
        self._telemetry = telemetry
        self.max_lifetime = max_lifetime
        self.configure = configure
        #: Run once, on the first connection opened (blocking, in its thread).
        self._on_first_connect = on_first_connect
        self._required_tls = required_tls(config)
        self._lock = lock
        self._counters = counters
        self._killer = killer
        #: While the server is down or refuses us, callers fail fast until
        #: this is due (changed under the lock).
        self.backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX, jitter=_BACKOFF_JITTER)
        self._last_error: str | None = None
        configs = host_configs(config)
        #: With several hosts: the choice among them, and their monitor.
        self.hosts: HostSet | None = None
        self.monitor: HostMonitor | None = None
        if len(configs) > 1 and not config.get("unix_socket"):
            self.hosts = HostSet.of(configs, target=target)
            self.monitor = HostMonitor(
                self.hosts.hosts, self._checked, describe=describe
            )
        # Wakes the pool's refill when a host becomes fit.
        self._on_recovered = on_recovered

    def connect_timeout(self) -> int:
        return int(self.config.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT)

    def connect(
        self, connect_timeout: int | None = None, *, to: ConnectConfig | None = None
    ) -> PooledConnection:
        """Open one connection (blocking). Raises DrainedError or BusyError.
        *to*: that host's config (a connection's ``origin``), not the choice
        among the hosts; its failure is no reason for the pool to back off."""
        if to is not None:
            try:
                conn, (wait_timeout, server_host) = self._open(to, connect_timeout)
            except MySQLdb.Error as exc:
                raise _with_message(
                    DrainedError(), f"cannot connect to {to.target}: {describe(exc)}"
                ) from exc
            conn.origin = to
        elif self.hosts is not None:
            conn, (wait_timeout, server_host) = self._connect_a_host(connect_timeout)
        else:
            try:
                conn, (wait_timeout, server_host) = self._open(
                    self.config, connect_timeout
                )
            except MySQLdb.Error as exc:
                raise self._failed(exc) from exc
        config = self.config
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
            first, self._on_first_connect = self._on_first_connect, None
        if first is not None:
            first(conn)
        return conn

    def _open(
        self, config: ConnectConfig, connect_timeout: int | None
    ) -> tuple[PooledConnection, tuple[int, str | None]]:
        """A new connection, its session set up; raises MySQLdb.Error (or,
        if the password callable or ``configure`` fails, SetupError)."""
        # ConnectConfigs: a frame's locals, shown by some error trackers,
        # must not hold the password in a plain dict.
        overrides = ConnectConfig()
        if connect_timeout is not None:
            overrides["connect_timeout"] = connect_timeout
        for key in _PASSWORD_KEYS:
            if callable(config.get(key)):
                overrides[key] = self._call_password(config[key])
        if overrides:
            config = ConnectConfig({**config, **overrides})
        conn = PooledConnection(**config)
        try:
            if self.configure is not None:
                # Before setup_session: what the callback changes is then
                # part of what the pool takes as the fresh session.
                self._configure(conn)
            session = conn.setup_session()
            if self._required_tls is not None:
                _check_encrypted(conn, self._required_tls)
        except BaseException:
            close_quietly(conn)
            raise
        return conn, session

    def _call_password(self, password: Callable[[], object]) -> object:
        """A password from cfg's callable (a rotating token): neither the
        callable nor what it returns may appear in an error."""
        try:
            value = password()
        except Exception as exc:
            reason = f"the password callable raised {type(exc).__name__}: {exc}"
            raise self._failed(exc, SetupError(reason, retry=True)) from exc
        if not isinstance(value, (str, bytes)):
            reason = f"the password callable returned {type(value).__name__}"
            raise self._failed(TypeError(), SetupError(reason, retry=False))
        return value

    def _configure(self, conn: PooledConnection) -> None:
        assert self.configure is not None
        try:
            self.configure(conn)
        except Exception as exc:
            logger.warning(
                "configure() failed on a new connection to %s; it is closed",
                self.config.target,
                exc_info=exc,
            )
            # Retried only if the connection died under it: else it is a bug.
            error = SetupError(
                f"configure() failed: {describe(exc)}",
                retry=is_connection_broken(exc),
            )
            raise self._failed(exc, error) from exc
        # It may have switched autocommit: that is the mode returns come back to.
        conn.autocommit_mode = bool(conn.get_autocommit())

    # -- several hosts -------------------------------------------------------

    def _connect_a_host(
        self, connect_timeout: int | None
    ) -> tuple[PooledConnection, tuple[int, str | None]]:
        """Open a connection to the best host that proves fit; try the next
        on a failure. Raises DrainedError (or BusyError) if none."""
        hosts = self.hosts
        assert hosts is not None
        with self._lock:
            candidates = hosts.candidates(time.monotonic())
        busy: MySQLdb.Error | None = None
        for host in candidates:
            try:
                conn, session = self._open(host.config, connect_timeout)
            except MySQLdb.Error as exc:
                if errno_of(exc) in BUSY_ERRNOS:
                    busy = exc  # up, but full: no backoff
                else:
                    self._host_failed(host, state_after(exc), exc)
                continue
            try:
                state = check_state(conn)
            except MySQLdb.Error as exc:
                close_quietly(conn)
                self._host_failed(host, state_after(exc), exc)
                continue
            with self._lock:
                _, unfit = hosts.checked(host, state, None, time.monotonic())
                if host.fits(hosts.target):
                    hosts.opened(host, state, conn)
                    conn.origin = host.config
                    return conn, session
            close_quietly(conn)  # read-only, or a Galera node not Synced
            _drop(unfit)
        with self._lock:
            self._counters.errors += 1
            # The housekeeper's refill waits as long as the first host.
            self.backoff.until = hosts.next_due()
            self._last_error = hosts.describe()
        if busy is not None:
            message = f"{self.config.target} refused a connection: {describe(busy)}"
            raise _with_message(BusyError(), message) from busy
        raise _with_message(
            DrainedError(),
            f"no {hosts.target} host available among {self._last_error}",
        )

    def _host_failed(self, host: Host, state: str, exc: BaseException | None) -> None:
        """*host* failed or proved unfit: it waits out a backoff, and the
        pool's connections to it are dropped."""
        with self._lock:
            conns = self.hosts.failed(  # type: ignore[union-attr]
                host, state, describe(exc) if exc else None, time.monotonic()
            )
        _drop(conns)

    def _checked(self, host: Host, state: str, error: str | None) -> None:
        """The monitor's finding about *host*."""
        hosts = self.hosts
        assert hosts is not None
        with self._lock:
            recovered, conns = hosts.checked(host, state, error, time.monotonic())
            if recovered:
                self.backoff.succeeded()
        _drop(conns)
        if (recovered or conns) and self._on_recovered is not None:
            self._on_recovered()  # refill now, or retire the dropped ones now

    def refused_writes(self, conn: PooledConnection, exc: BaseException) -> None:
        """A statement on *conn* was refused as its host takes no writes (a
        demoted primary; a Galera node leaving the cluster)."""
        if self.hosts is None:
            return
        with self._lock:
            host = self.hosts.host_of(conn)
        errno = errno_of(exc)
        if host is not None and (errno == 1047 or self.hosts.target == PRIMARY):
            # With target="any", read-only hosts are fit: a write one refused is
            # the app's to fix, not a reason to leave the host.
            self._host_failed(host, NOT_SYNCED if errno == 1047 else READ_ONLY, exc)
            if self._on_recovered is not None:
                self._on_recovered()

    def host_stats(self) -> tuple[HostStats, ...]:
        """Each host's state (under the pool's lock); () with one host."""
        return () if self.hosts is None else self.hosts.stats()

    def start(self) -> None:
        if self.monitor is not None:
            self.monitor.start()

    def stop(self, timeout: float) -> None:
        if self.monitor is not None:
            self.monitor.stop(timeout)

    def _failed(
        self, exc: BaseException, error: SetupError | None = None
    ) -> ConnectionError:
        """Record a failed attempt; the error to raise in its place."""
        errno = errno_of(exc)
        reason = describe(exc) if error is None else error.reason
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
            error or DrainedError(), f"cannot connect to {self.config.target}: {reason}"
        )

    def unavailable_locked(self, now: float) -> ConnectionError | None:
        """The error to fail fast with while the server is down, else None."""
        if self.hosts is not None:
            if not self.hosts.all_waiting(now):
                return None
            return _with_message(
                DrainedError(),
                f"no {self.hosts.target} host available among "
                f"{self.hosts.describe()}; next attempt in "
                f"{self.hosts.next_due() - now:.2f} s",
            )
        if not self.backoff.waiting(now):
            return None
        return _with_message(
            DrainedError(),
            f"{self.config.target} is unavailable ({self._last_error}); "
            f"next attempt in {self.backoff.until - now:.2f} s",
        )


def startup_verdict(exc: ConnectionError) -> tuple[bool, str]:
    """Of a failed connect at startup: whether retrying cannot help (a
    refused login, a failing ``configure``), and the reason to tell."""
    if isinstance(exc, SetupError):
        return not exc.retry, exc.reason
    cause = exc.__cause__ or exc
    return errno_of(cause) in LOGIN_ERRNOS, describe(cause)


_E = TypeVar("_E", bound=BaseException)


def _drop(conns: list[Any]) -> None:
    """Retire *conns* (their host is unfit): idle ones are closed at the
    housekeeper's next look or when next taken, busy ones when given back."""
    for conn in conns:
        conn.expires_at = 0.0


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
