"""Pooled, per-request MySQL/MariaDB cursors for FastAPI on mysqlclient."""

from ._async_cursor import AsyncPoolCursor
from ._background import add_pool_task
from ._context import get_pool
from ._dependencies import (
    AsyncCursor,
    AsyncDictCursor,
    AsyncReadCursor,
    AsyncReadDictCursor,
    Cursor,
    DictCursor,
    ReadCursor,
    ReadDictCursor,
    get_async_cursor,
    get_async_dict_cursor,
    get_async_read_cursor,
    get_async_read_dict_cursor,
    get_cursor,
    get_dict_cursor,
    get_read_cursor,
    get_read_dict_cursor,
)
from ._errors import (
    CursorReleasedError,
    ErrorKind,
    NoReplicaAvailable,
    PoolClosed,
    PoolStartupError,
    PoolTimeout,
    QueryTimeout,
    ReadOnlyError,
)
from ._lifespan import mysql_pool_lifespan
from ._pool import Pool
from ._responses import stream_rows
from ._stats import HostStats, PoolStats, ReplicaStats
from ._stream import RowStream

__version__ = "0.1.0"

__all__ = [
    "AsyncCursor",
    "AsyncDictCursor",
    "AsyncPoolCursor",
    "AsyncReadCursor",
    "AsyncReadDictCursor",
    "Cursor",
    "CursorReleasedError",
    "DictCursor",
    "ErrorKind",
    "HostStats",
    "NoReplicaAvailable",
    "Pool",
    "PoolClosed",
    "PoolStartupError",
    "PoolStats",
    "PoolTimeout",
    "QueryTimeout",
    "ReadCursor",
    "ReadDictCursor",
    "ReadOnlyError",
    "ReplicaStats",
    "RowStream",
    "add_pool_task",
    "get_async_cursor",
    "get_async_dict_cursor",
    "get_async_read_cursor",
    "get_async_read_dict_cursor",
    "get_cursor",
    "get_dict_cursor",
    "get_pool",
    "get_read_cursor",
    "get_read_dict_cursor",
    "mysql_pool_lifespan",
    "stream_rows",
]

# Show the public names as the package's own (as httpx does).
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, type(Cursor)):
        _obj.__module__ = __name__
del _name, _obj
