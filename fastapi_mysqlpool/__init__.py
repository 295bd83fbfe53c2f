"""Pooled, per-request MySQL/MariaDB cursors for FastAPI on mysqlclient."""

from ._async_cursor import AsyncPoolCursor
from ._background import add_pool_task
from ._context import get_pool
from ._dependencies import (
    AsyncCursor,
    AsyncDictCursor,
    Cursor,
    DictCursor,
    get_async_cursor,
    get_async_dict_cursor,
    get_cursor,
    get_dict_cursor,
)
from ._errors import (
    CursorReleasedError,
    ErrorKind,
    PoolClosed,
    PoolStartupError,
    PoolTimeout,
    QueryTimeout,
)
from ._lifespan import mysql_pool_lifespan
from ._pool import Pool
from ._responses import stream_rows
from ._stats import HostStats, PoolStats
from ._stream import RowStream

__version__ = "0.1.0"

__all__ = [
    "AsyncCursor",
    "AsyncDictCursor",
    "AsyncPoolCursor",
    "Cursor",
    "CursorReleasedError",
    "DictCursor",
    "ErrorKind",
    "HostStats",
    "Pool",
    "PoolClosed",
    "PoolStartupError",
    "PoolStats",
    "PoolTimeout",
    "QueryTimeout",
    "RowStream",
    "add_pool_task",
    "get_async_cursor",
    "get_async_dict_cursor",
    "get_cursor",
    "get_dict_cursor",
    "get_pool",
    "mysql_pool_lifespan",
    "stream_rows",
]

# Show the public names as the package's own (as httpx does).
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, type(Cursor)):
        _obj.__module__ = __name__
del _name, _obj
