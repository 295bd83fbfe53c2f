"""The pool's counters, kept in one object, and the snapshot it hands out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostStats:
    """One host of a pool given several (see :attr:`PoolStats.hosts`)."""

    #: ``host:port``, as configured.
    address: str
    #: As last checked: ``"up"`` (takes writes), ``"read_only"``,
    #: ``"not_synced"`` (a Galera node not Synced, or refusing queries),
    #: ``"down"`` (unreachable), ``"unknown"`` (not checked yet).
    state: str
    #: New connections go there (the primary; for ``target="any"``, every
    #: fit host).
    current: bool
    #: The pool's open connections to it.
    connections: int
    #: The last error that made it unfit (no password, no SQL).
    last_error: str | None


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool. Counters run from the pool's creation."""

    #: Open connections: idle, in use or being checked.
    size: int
    idle: int
    in_use: int
    #: Callers queued for a connection.
    waiting: int
    max_size: int
    #: Connections opened and closed.
    opened: int
    closed: int
    #: Connections whose changed session was reset (not closed) before reuse.
    resets: int
    #: Failed connection attempts and connections found dead.
    errors: int
    #: Connections handed out, and callers that gave up after ``acquire_timeout``.
    requests: int
    timeouts: int
    #: Seconds callers spent queued, in total.
    wait_time: float
    #: With several hosts: each host's state, in the configured order.
    hosts: tuple[HostStats, ...] = ()
    #: With replicas: each one's state, lag and pool (the primary's stats only).
    replicas: tuple[ReplicaStats, ...] = ()

    @property
    def current_hosts(self) -> tuple[str, ...]:
        """The hosts new connections go to (with several hosts)."""
        return tuple(host.address for host in self.hosts if host.current)


@dataclass(frozen=True)
class ReplicaStats:
    """A replica, as its lag check last saw it, and a snapshot of its pool."""

    #: ``user@host:port/database``.
    target: str
    #: ``healthy`` (takes reads), ``lagging``, ``stopped``, ``broken``,
    #: ``unreachable`` or ``starting`` (not checked yet).
    state: str
    #: Seconds behind the primary (``Seconds_Behind_Master``), None if unknown.
    lag: float | None
    pool: PoolStats


class Counters:
    """Running totals of a pool (see :class:`PoolStats`); changed under the
    pool's lock."""

    __slots__ = (
        "closed",
        "errors",
        "opened",
        "requests",
        "resets",
        "timeouts",
        "wait_time",
    )

    def __init__(self) -> None:
        self.opened = self.closed = self.resets = self.errors = 0
        self.requests = self.timeouts = 0
        self.wait_time = 0.0

    def closed_some(self, count: int = 1, *, failed: bool = False) -> None:
        """*count* connections closed; *failed*: found dead or broken."""
        self.closed += count
        if failed:
            self.errors += count

    def snapshot(
        self, *, size: int, idle: int, in_use: int, waiting: int, max_size: int
    ) -> PoolStats:
        return PoolStats(
            size=size,
            idle=idle,
            in_use=in_use,
            waiting=waiting,
            max_size=max_size,
            opened=self.opened,
            closed=self.closed,
            resets=self.resets,
            errors=self.errors,
            requests=self.requests,
            timeouts=self.timeouts,
            wait_time=self.wait_time,
        )
