"""The server's connection limits, against the pool's ``max_size``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import MySQLdb

logger = logging.getLogger("fastapi_mysqlpool")

# The session value of max_user_connections is the account's own limit when it
# has one (CREATE USER ... WITH MAX_USER_CONNECTIONS n), else the global one:
# so says the MySQL manual, and MariaDB 10.11 agrees (0: no limit).
_LIMITS_SQL = b"SELECT @@max_connections, @@session.max_user_connections"


class ServerLimits:
    """Read once, from the pool's first connection; warns when ``max_size``
    alone exceeds what the server allows (once per ``max_size``)."""

    def __init__(self, target: str, max_size: Callable[[], int]) -> None:
        self.target = target
        self._max_size = max_size
        #: (max_connections, max_user_connections or None), once read.
        self.limits: tuple[int, int | None] | None = None
        self._warned_for: int | None = None
        self._lock = threading.Lock()

    def read(self, conn: Any) -> None:
        """Read them on *conn* (blocking: one round trip), then :meth:`check`."""
        try:
            conn.query(_LIMITS_SQL)
            ((max_connections, max_user),) = conn.store_result().fetch_row()
        except MySQLdb.Error as exc:  # not worth failing a connection for
            logger.debug(
                "could not read the connection limits of %s: %s", self.target, exc
            )
            return
        user_limit = int(max_user)
        with self._lock:
            self.limits = int(max_connections), user_limit if user_limit > 0 else None
        self.check()

    def check(self) -> None:
        """Log a WARNING if ``max_size`` exceeds the limits read."""
        max_size = self._max_size()
        with self._lock:
            if self.limits is None or self._warned_for == max_size:
                return
            max_connections, max_user = self.limits
            allowed = min(max_connections, max_user or max_connections)
            if max_size <= allowed:
                return
            self._warned_for = max_size
        user = "" if max_user is None else f", max_user_connections={max_user}"
        logger.warning(
            "max_size=%d exceeds what %s allows (max_connections=%d%s): under "
            "load the server refuses connections (code 2, Database Server Is "
            "Busy). Lower max_size; with several worker processes or "
            "replicas, each runs a pool of its own, so the server must allow "
            "their sum (plus one each for KILLs)",
            max_size,
            self.target,
            max_connections,
            user,
        )
