"""Replicas: a pool per replica, a lag check per replica, and the routing of
read cursors among them (``replicas=`` of :func:`mysql_pool_lifespan`).

A read goes to the healthy replica with the fewest connections in use (ties:
round robin); with none healthy, to the primary (``replica_fallback``) or
nowhere (:class:`NoReplicaAvailable`, 503 code 1). Health is the lag check's
word, a thread per replica looking about once a second (see _replication),
so a request pays only for the choice; and a replica found unreachable by a
request (its connections dead, a connect refused) stops taking reads at once,
that request going to the next one.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Final

import anyio
import anyio.to_thread

from ._config import ConnectConfig, connect_params, make_config
from ._connection import PooledConnection
from ._errors import DrainedError, NoReplicaAvailable, PoolClosed
from ._options import PoolOptions, Settings, _check_count, _check_time
from ._pool import Pool
from ._replication import HEALTHY, STARTING, UNREACHABLE, StatusReader
from ._stats import ReplicaStats

logger = logging.getLogger("fastapi_mysqlpool")

#: Seconds between two looks at a replica.
CHECK_INTERVAL: Final = 1.0
#: Default ``max_replica_lag``: seconds behind the primary a replica may be.
DEFAULT_MAX_REPLICA_LAG: Final = 5.0
# What a replica's settings take from the primary's unless they say otherwise:
# everything but where the server is.
_WHERE = frozenset({"host", "port", "unix_socket"})
_ALIASES = (("db", "database"), ("passwd", "password"))


def replica_config(
    primary: ConnectConfig, cfg: Mapping[str, Any] | str
) -> ConnectConfig:
    """A replica's connection settings: *cfg* (a dict or a URL), the
    primary's user, password, database and options filling in what it
    lacks; in autocommit (its pool lends read cursors only)."""
    given = connect_params(cfg, what="each replica")
    inherited = {k: v for k, v in primary.items() if k not in _WHERE}
    for alias, name in _ALIASES:  # the replica's spelling wins
        if alias in given or name in given:
            inherited.pop(alias, None)
            inherited.pop(name, None)
    if isinstance(given.get("host"), (list, tuple)) and len(given["host"]) > 1:
        raise ValueError(
            "a replica names one host: list each replica in replicas= instead"
        )
    config = make_config({**inherited, **given})
    config["autocommit"] = True
    return config


def replica_pool_options(
    options: PoolOptions, replica_max_size: int | None, *, max_replica_lag: float
) -> PoolOptions:
    """The options of each replica's pool: the primary's, but ``max_size``
    (*replica_max_size*, else the primary's) and ``fillup`` (in the
    background: a replica down at startup does not stop the app). Checks
    *replica_max_size* and *max_replica_lag*."""
    _check_count("replica_max_size", replica_max_size, 1)
    _check_time("max_replica_lag", max_replica_lag)
    if not 0 < max_replica_lag < math.inf:
        raise ValueError(f"max_replica_lag must be > 0, got {max_replica_lag}")
    # target is the primary's choice among its hosts: a replica has one host.
    replica: PoolOptions = {**options, "fillup": False}
    replica.pop("target", None)
    if replica_max_size is not None:
        replica["max_size"] = replica_max_size
        size = options.get("size")
        if size is not None and size > replica_max_size:
            replica["size"] = replica_max_size
    Settings.of(replica)  # fails where the app is defined
    return replica


class Replica:
    """A replica: its pool, and its state as last seen (see _replication)."""

    __slots__ = ("_looked", "_reader", "lag", "pool", "state")

    def __init__(self, pool: Pool, lag_query: str | None = None) -> None:
        self.pool = pool
        self.state: str = STARTING
        self.lag: float | None = None
        self._reader = StatusReader(pool.config, lag_query)
        self._looked = threading.Event()  # the first look is done

    @property
    def target(self) -> str:
        return self.pool.target

    def __repr__(self) -> str:
        return f"<Replica {self.target} {self.state} lag={self.lag}>"

    def stats(self) -> ReplicaStats:
        return ReplicaStats(
            target=self.target, state=self.state, lag=self.lag, pool=self.pool.stats()
        )


class ReplicaSet:
    """The replicas of a primary *primary*, and the choice of one per read."""

    def __init__(
        self,
        primary: Pool,
        configs: Sequence[ConnectConfig],
        *,
        options: PoolOptions,
        max_lag: float,
        fallback: bool,
        lag_query: str | None = None,
        interval: float = CHECK_INTERVAL,
    ) -> None:
        self.primary = primary
        self.max_lag = max_lag
        self.fallback = fallback
        self.interval = interval
        self.replicas: tuple[Replica, ...] = tuple(
            Replica(Pool(config, open=False, **options), lag_query)
            for config in configs
        )
        self._next = 0  # where the next choice starts: round robin among ties
        self._lock = threading.Lock()  # state changes, each logged once
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------

    async def aopen(self) -> None:
        """Start each replica's pool (filled in the background: a replica down
        at startup does not stop the app) and lag check; wait for the first
        looks (a few seconds at most)."""
        for replica in self.replicas:
            await replica.pool.aopen()
        for replica in self.replicas:
            thread = threading.Thread(
                target=self._watch,
                args=(replica,),
                name=f"fastapi-mysqlpool-replica-{replica.target}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        for replica in self.replicas:
            await anyio.to_thread.run_sync(replica._looked.wait, 3 * self.interval + 4)

    async def aclose(self, timeout: float) -> None:
        """Stop the lag checks; close every replica's pool (borrowed
        connections get *timeout* seconds to come back)."""
        self._stop.set()
        async with anyio.create_task_group() as group:
            for replica in self.replicas:
                group.start_soon(replica.pool.aclose, timeout)
        for thread in self._threads:
            await anyio.to_thread.run_sync(thread.join)

    def set_max_size(self, max_size: int) -> None:
        for replica in self.replicas:
            replica.pool.set_max_size(max_size)

    # -- the lag check -------------------------------------------------------------

    def _watch(self, replica: Replica) -> None:
        """The lag check of *replica*: a look about every ``interval``."""
        reader = replica._reader
        try:
            while not self._stop.is_set():
                try:
                    state, lag = reader.look(self.max_lag)
                except Exception:  # never a dead check that left a state behind
                    logger.exception("replica %s: the lag check failed", replica.target)
                    reader.close()
                    state, lag, reader.reason = UNREACHABLE, None, "check failed"
                replica.lag = lag
                self.set_state(replica, state, reader.reason)
                if reader.unchecked and not replica._looked.is_set():
                    logger.warning(
                        "replica %s: cannot read its replication status (grant "
                        "the user SLAVE MONITOR / REPLICATION CLIENT): its lag "
                        "is not checked",
                        replica.target,
                    )
                replica._looked.set()
                self._stop.wait(self.interval)
        finally:
            reader.close()
            replica._looked.set()

    def set_state(self, replica: Replica, state: str, reason: str = "") -> None:
        """Record *replica*'s state; a change is logged once."""
        with self._lock:
            if state == replica.state:
                return
            replica.state = state
            self._changed.notify_all()
        if state == HEALTHY:
            logger.info("replica %s is %s: it takes reads", replica.target, state)
        else:
            logger.warning(
                "replica %s is %s%s: it takes no new reads",
                replica.target,
                state,
                f" ({reason})" if reason else "",
            )

    def wait_state(self, replica: Replica, state: str, timeout: float) -> bool:
        """Wait (blocking) until *replica* is in *state*; False after
        *timeout* seconds (for tests and tools: a condition, not a poll)."""
        with self._changed:
            return self._changed.wait_for(lambda: replica.state == state, timeout)

    # -- routing -------------------------------------------------------------------

    def _choose(self, tried: tuple[Replica, ...]) -> Replica | None:
        """The healthy replica with the fewest connections in use; ties go
        round robin."""
        replicas = self.replicas
        count = len(replicas)
        start = self._next
        self._next = (start + 1) % count
        best: Replica | None = None
        fewest = 0
        for i in range(count):
            replica = replicas[(start + i) % count]
            if replica.state != HEALTHY or replica in tried:
                continue
            in_use = replica.pool.in_use
            if best is None or in_use < fewest:
                best, fewest = replica, in_use
        return best

    async def aborrow(self) -> tuple[Pool, PooledConnection]:
        """Where a read goes, and a connection there (unchecked: see Lease)."""
        tried: tuple[Replica, ...] = ()
        while (replica := self._choose(tried)) is not None:
            try:
                return replica.pool, await _take(replica.pool)
            except PoolClosed:
                raise
            except DrainedError as exc:
                # Down since the last look (a connect refused): no new reads
                # until the lag check sees it back; this one goes elsewhere.
                self.set_state(replica, UNREACHABLE, str(exc))
                tried += (replica,)
        if not self.fallback:
            raise NoReplicaAvailable()
        primary = self.primary
        conn = primary.take_idle() or await primary.aacquire(
            primary.acquire_timeout, check=False
        )
        return primary, conn

    def replica_stats(self) -> tuple[ReplicaStats, ...]:
        return tuple(replica.stats() for replica in self.replicas)


async def _take(pool: Pool) -> PooledConnection:
    """A connection of *pool*; idle ones the server closed (a crash, a
    restart: the socket has an EOF to read, one poll) are dropped here, so a
    replica that went down fails over instead of failing the request."""
    while (conn := pool.take_idle()) is not None:
        if not conn.looks_dead():
            return conn
        pool.checkin(conn, reusable=False, failed=True)
    return await pool.aacquire(pool.acquire_timeout, check=False)
