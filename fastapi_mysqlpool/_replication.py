"""A replica's replication state, as ``SHOW REPLICA STATUS`` tells it.

Read over a monitoring connection of its own (not one of the pool's, so a
busy pool never delays the check, and the check never takes a slot), at
most ``STATUS_TIMEOUT`` seconds per look. Or, with ``replica_lag_query``, a
query of the user's that returns the lag in seconds (a heartbeat table, such
as pt-heartbeat's, which needs no privilege beyond reading it): then a
replication that stopped shows as a lag that grows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Final

import MySQLdb
import MySQLdb.cursors

from ._config import ConnectConfig
from ._errors import errno_of

#: The states of a replica; only a healthy one takes reads.
STARTING: Final = "starting"
HEALTHY: Final = "healthy"
LAGGING: Final = "lagging"
STOPPED: Final = "stopped"
BROKEN: Final = "broken"
UNREACHABLE: Final = "unreachable"

#: Seconds a look at a replica may take (connect, or answer).
STATUS_TIMEOUT: Final = 2

# MariaDB >= 10.5 and MySQL >= 8.0.22 know SHOW REPLICA STATUS; older ones
# answer it with a syntax error (1064): then SHOW SLAVE STATUS.
_STATUS_SQL = ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS")
_ER_PARSE_ERROR = 1064
#: ER_SPECIFIC_ACCESS_DENIED_ERROR: the user lacks REPLICATION CLIENT (MySQL),
#: SLAVE MONITOR / REPLICA MONITOR (MariaDB >= 10.5).
ER_SPECIFIC_ACCESS_DENIED = 1227


def _field(row: Mapping[str, Any], *names: str) -> Any:
    # MariaDB keeps the Slave_* names; MySQL 8.0.22+ says Replica_*, Source.
    for name in names:
        if name in row:
            return row[name]
    return None


def judge(row: Mapping[str, Any] | None, max_lag: float) -> tuple[str, float | None]:
    """The state and lag (seconds, None if unknown) of a status *row* (None:
    the server replicates from nothing)."""
    if row is None:
        return STOPPED, None
    io = _field(row, "Slave_IO_Running", "Replica_IO_Running")
    sql = _field(row, "Slave_SQL_Running", "Replica_SQL_Running")
    behind = _field(row, "Seconds_Behind_Master", "Seconds_Behind_Source")
    lag = None if behind is None else float(behind)
    if io != "Yes" or sql != "Yes":
        errors = (_field(row, "Last_SQL_Errno"), _field(row, "Last_IO_Errno"))
        return (BROKEN if any(errors) else STOPPED), lag
    if lag is None or lag > max_lag:
        return LAGGING, lag
    return HEALTHY, lag


class StatusReader:
    """Looks at one replica's replication state (blocking: for its thread)."""

    def __init__(self, config: ConnectConfig, lag_query: str | None = None) -> None:
        self.lag_query = lag_query
        self.config = ConnectConfig(
            {
                **config,
                "connect_timeout": STATUS_TIMEOUT,
                "read_timeout": STATUS_TIMEOUT,
                "write_timeout": STATUS_TIMEOUT,
                "autocommit": True,
            }
        )
        self._conn: Any = None
        self._sql = 0
        #: Why the last look failed (an error's number and text, never the
        #: config), for the log.
        self.reason = ""
        #: The user may not read the status: reachable counts as healthy.
        self.unchecked = False

    def look(self, max_lag: float) -> tuple[str, float | None]:
        """The replica's state and lag now."""
        try:
            if self._conn is None:
                self._conn = MySQLdb.connect(**self.config)
            if self.lag_query is not None:
                return self._heartbeat(self.lag_query, max_lag)
            row = self._status()
        except MySQLdb.Error as exc:
            self.close()
            self.reason = f"({errno_of(exc)}) {exc.args[-1]}" if exc.args else ""
            return UNREACHABLE, None
        if isinstance(row, bool):  # no right to read it
            self.unchecked = True
            return HEALTHY, None
        state, lag = judge(row, max_lag)
        self.reason = f"{lag:g} s behind" if state == LAGGING and lag else ""
        return state, lag

    def _heartbeat(self, query: str, max_lag: float) -> tuple[str, float | None]:
        cursor = self._conn.cursor()
        cursor.execute(query)
        row = cursor.fetchone()
        lag = None if row is None or row[0] is None else float(row[0])
        if lag is None or lag > max_lag:
            self.reason = "no heartbeat" if lag is None else f"{lag:g} s behind"
            return LAGGING, lag
        self.reason = ""
        return HEALTHY, lag

    def _status(self) -> Mapping[str, Any] | bool | None:
        cursor = self._conn.cursor(MySQLdb.cursors.DictCursor)
        while True:
            try:
                cursor.execute(_STATUS_SQL[self._sql])
            except MySQLdb.Error as exc:
                errno = errno_of(exc)
                if errno == _ER_PARSE_ERROR and self._sql == 0:
                    self._sql = 1
                    continue
                if errno == ER_SPECIFIC_ACCESS_DENIED:
                    return False
                raise
            rows = cursor.fetchall()
            return rows[0] if rows else None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
