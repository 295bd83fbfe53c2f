"""fastapi_mysqlpool.testing.TemporaryServer: a throwaway server of one's own."""

from __future__ import annotations

import contextlib

import MySQLdb
import pytest

from fastapi_mysqlpool.testing import TemporaryServer


@pytest.mark.slow
def test_a_private_server_that_can_be_stopped_killed_and_restarted() -> None:
    with TemporaryServer(database="shop", options={"max_connections": 42}) as server:
        assert server.running
        assert server.url == f"mysql://root@127.0.0.1:{server.port}/shop"
        assert server.base_dir.exists()
        assert len(server.socket) < 108  # fits a unix socket path
        with contextlib.closing(server.connect()) as conn:
            conn.query(b"SELECT DATABASE(), @@max_connections, @@port")
            assert conn.store_result().fetch_row() == (("shop", 42, server.port),)
        with contextlib.closing(MySQLdb.connect(**server.config)) as conn:
            conn.query(b"CREATE TABLE kept (id INT)")

        server.stop()
        assert not server.running
        with pytest.raises(MySQLdb.OperationalError):
            server.connect(connect_timeout=1)
        server.start()
        server.kill()  # a crash: data committed before it survives
        server.start()
        with contextlib.closing(server.connect()) as conn:
            conn.query(b"SHOW TABLES")
            assert conn.store_result().fetch_row() == (("kept",),)
        assert "ready for connections" in server.log_tail(100)
    assert not server.running
    assert not server.base_dir.exists()
