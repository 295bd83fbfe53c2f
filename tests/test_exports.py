"""The public surface: what `import fastapi_mysqlpool` offers, and nothing else."""

from __future__ import annotations

import fastapi_mysqlpool

PUBLIC = {
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
    "ReadCursor",
    "ReadDictCursor",
    "ReadOnlyError",
    "ReplicaStats",
    "NoReplicaAvailable",
    "AsyncReadCursor",
    "AsyncReadDictCursor",
    "get_read_cursor",
    "get_read_dict_cursor",
    "get_async_read_cursor",
    "get_async_read_dict_cursor",
    "add_pool_task",
    "get_async_cursor",
    "get_async_dict_cursor",
    "get_cursor",
    "get_dict_cursor",
    "get_pool",
    "mysql_pool_lifespan",
    "stream_rows",
}


def test_exported_names() -> None:
    assert set(fastapi_mysqlpool.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(fastapi_mysqlpool, name), name


def test_public_objects_belong_to_the_package() -> None:
    aliases = {"Cursor", "DictCursor", "AsyncCursor", "AsyncDictCursor"}
    aliases |= {
        "ReadCursor",
        "ReadDictCursor",
        "AsyncReadCursor",
        "AsyncReadDictCursor",
    }
    for name in PUBLIC - aliases:
        assert getattr(fastapi_mysqlpool, name).__module__ == "fastapi_mysqlpool"


def test_version_is_a_string() -> None:
    assert fastapi_mysqlpool.__version__.count(".") == 2
