"""Several hosts: which one a new connection goes to, and which are fit.

:class:`HostSet` decides (pure bookkeeping, tested without a server): with
``target="primary"`` the first host, in the configured order, that takes
writes; with ``target="any"`` the healthy host holding the fewest of the
pool's connections. A host that failed waits out a backoff before it is
tried again. :func:`state_of` says what a server's answers make it;
:class:`HostMonitor` asks every host, a few times a second, in threads of
its own, and reports to its owner (the :class:`Connector`).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import MySQLdb

from ._backoff import Backoff
from ._config import ConnectConfig
from ._errors import BUSY_ERRNOS, errno_of, refuses_writes
from ._stats import HostStats

PRIMARY: Final = "primary"
ANY: Final = "any"
TARGETS: Final = (PRIMARY, ANY)

#: Host states: takes writes; answers but takes no writes; a Galera node not
#: ``Synced`` (or refusing queries); unreachable; not checked yet.
UP: Final = "up"
READ_ONLY: Final = "read_only"
NOT_SYNCED: Final = "not_synced"
DOWN: Final = "down"
UNKNOWN: Final = "unknown"

#: A failed host is tried again after this, doubling up to HOST_BACKOFF_MAX:
#: short, so that a promoted host serves within a second.
HOST_BACKOFF_FIRST: Final = 0.05
HOST_BACKOFF_MAX: Final = 0.5
_HOST_BACKOFF_JITTER: Final = 0.2
#: Seconds between two checks of a host by the monitor.
MONITOR_INTERVAL: Final = 0.25
#: The monitor's own limits (seconds): a check must not hang on a lost host.
MONITOR_CONNECT_TIMEOUT: Final = 1
MONITOR_READ_TIMEOUT: Final = 2

_STATE_SQL = b"SELECT @@global.read_only"
_WSREP_SQL = (
    b"SHOW GLOBAL STATUS WHERE Variable_name IN "
    b"('wsrep_ready', 'wsrep_local_state_comment')"
)


class Host:
    """One of the hosts, what was last learnt of it, and the pool's
    connections to it."""

    __slots__ = ("address", "backoff", "config", "conns", "last_error", "state")

    def __init__(self, address: str, config: ConnectConfig) -> None:
        self.address = address
        self.config = config
        self.state: str = UNKNOWN
        self.last_error: str | None = None
        self.backoff = Backoff(
            HOST_BACKOFF_FIRST, HOST_BACKOFF_MAX, jitter=_HOST_BACKOFF_JITTER
        )
        #: The pool's open connections to it (weak: closing one forgets it).
        self.conns: weakref.WeakSet[Any] = weakref.WeakSet()

    def fits(self, target: str) -> bool:
        """True if it may take the pool's connections (as last checked)."""
        return self.state == UP or (target == ANY and self.state == READ_ONLY)

    def __repr__(self) -> str:
        return f"<Host {self.address} {self.state}>"


class HostSet:
    """The hosts of a pool and the choice among them. Not thread-safe: its
    owner calls it under the pool's lock."""

    def __init__(self, hosts: Sequence[Host], *, target: str) -> None:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.hosts = list(hosts)
        self.target = target
        self._turn = itertools.count()

    @classmethod
    def of(
        cls, configs: Iterable[tuple[str, ConnectConfig]], *, target: str
    ) -> HostSet:
        hosts = [Host(address, config) for address, config in configs]
        return cls(hosts, target=target)

    def candidates(self, now: float) -> list[Host]:
        """The hosts to try for a new connection, best first: those not
        waiting out a backoff; those known fit before the others."""
        due = [host for host in self.hosts if not host.backoff.waiting(now)]
        if self.target == PRIMARY:
            # The configured order: the first writable host is the primary.
            return sorted(due, key=lambda host: not host.fits(self.target))
        # Spread: the fewest connections first; ties taken in turn.
        if due:
            start = next(self._turn) % len(due)
            due = due[start:] + due[:start]
        # (Hosts not checked yet count as fit here: else the first to answer
        # would take every connection.)
        return sorted(due, key=lambda host: (self._unfit(host), len(host.conns)))

    def _unfit(self, host: Host) -> bool:
        return host.state != UNKNOWN and not host.fits(self.target)

    def next_due(self) -> float:
        """When the first host waiting out a backoff may be tried again."""
        return min(host.backoff.until for host in self.hosts)

    def failed(
        self, host: Host, state: str, error: str | None, now: float
    ) -> list[Any]:
        """*host* is *state* (not fit, or unreachable): it waits out a backoff;
        returns its connections, for the caller to drop."""
        host.state = state
        if error is not None:
            host.last_error = error
        host.backoff.failed(now)
        return list(host.conns)

    def checked(
        self, host: Host, state: str, error: str | None, now: float
    ) -> tuple[bool, list[Any]]:
        """A check found *host* in *state*: (True if it just became fit,
        the connections to drop because it is not)."""
        was_fit = host.fits(self.target)
        host.state = state
        if host.fits(self.target):
            host.backoff.succeeded()
            return not was_fit, []
        return False, self.failed(host, state, error, now)

    def opened(self, host: Host, state: str, conn: Any) -> None:
        """A connection to *host*, found in *state* (fit), was opened."""
        host.state = state
        host.backoff.succeeded()
        host.conns.add(conn)

    def host_of(self, conn: Any) -> Host | None:
        for host in self.hosts:
            if conn in host.conns:
                return host
        return None

    def all_waiting(self, now: float) -> bool:
        return all(host.backoff.waiting(now) for host in self.hosts)

    def current(self) -> list[Host]:
        """Where new connections go now: the primary (the first fit host),
        or every fit host for ``any``."""
        fit = [host for host in self.hosts if host.fits(self.target)]
        return fit[:1] if self.target == PRIMARY else fit

    def stats(self) -> tuple[HostStats, ...]:
        current = self.current()
        return tuple(
            HostStats(
                address=host.address,
                state=host.state,
                current=host in current,
                connections=len(host.conns),
                last_error=host.last_error,
            )
            for host in self.hosts
        )

    def describe(self) -> str:
        """``h1:3306 down ((2003) ...), h2:3306 read_only``: for messages."""
        return ", ".join(_described(host) for host in self.hosts)


def _described(host: Host) -> str:
    if host.state == DOWN and host.last_error:
        return f"{host.address} down ({host.last_error})"
    return f"{host.address} {host.state}"


def state_of(read_only: object, wsrep: dict[str, str]) -> str:
    """What a server is, from ``@@global.read_only`` and its wsrep status.
    (MariaDB without Galera lists ``wsrep_ready`` OFF, but no local state.)"""
    if "wsrep_local_state_comment" in wsrep and (
        wsrep.get("wsrep_ready", "").upper() != "ON"
        or wsrep.get("wsrep_local_state_comment") != "Synced"
    ):
        return NOT_SYNCED
    return READ_ONLY if str(read_only) not in ("0", "OFF") else UP


def check_state(conn: Any) -> str:
    """Ask the server on *conn* what it is (two round trips); raises
    MySQLdb.Error if it cannot answer."""
    conn.query(_STATE_SQL)
    ((read_only,),) = conn.store_result().fetch_row()
    conn.query(_WSREP_SQL)
    rows = conn.store_result().fetch_row(0)
    wsrep = {_text(name).lower(): _text(value) for name, value in rows}
    return state_of(_text(read_only), wsrep)


def state_after(exc: BaseException) -> str:
    """The state a host is in after a check failed with *exc*."""
    return NOT_SYNCED if refuses_writes(exc) else DOWN


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class HostMonitor:
    """Checks each host every :data:`MONITOR_INTERVAL` seconds, over a
    connection of its own (a thread per host: a lost host must not delay the
    others' checks), and reports each finding to *report*."""

    def __init__(
        self,
        hosts: Sequence[Host],
        report: Callable[[Host, str, str | None], None],
        *,
        describe: Callable[[BaseException], str],
    ) -> None:
        self._hosts = hosts
        self._report = report
        self._describe = describe
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self._threads:
            return
        for host in self._hosts:
            thread = threading.Thread(
                target=self._watch,
                args=(host,),
                name=f"fastapi-mysqlpool-monitor-{host.address}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _watch(self, host: Host) -> None:
        # A ConnectConfig: its repr (in a frame's locals) hides the password.
        config = ConnectConfig(
            {
                **host.config,
                "autocommit": True,
                "connect_timeout": MONITOR_CONNECT_TIMEOUT,
                "read_timeout": MONITOR_READ_TIMEOUT,
                "write_timeout": MONITOR_READ_TIMEOUT,
            }
        )
        conn: Any = None
        try:
            while not self._stop.is_set():
                try:
                    if conn is None:
                        conn = MySQLdb.connect(**config)
                    state, error = check_state(conn), None
                except MySQLdb.Error as exc:
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                        conn = None
                    if errno_of(exc) in BUSY_ERRNOS:  # no news: it is up
                        state, error = UNKNOWN, None
                    else:
                        state, error = state_after(exc), self._describe(exc)
                if state != UNKNOWN and not self._stop.is_set():
                    self._report(host, state, error)
                self._stop.wait(MONITOR_INTERVAL)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
