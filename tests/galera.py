"""A 3-node Galera cluster on loopback, for the slow tests (galera-4, rsync).

Each node is a TemporaryServer with ports of its own (mysqld, gcomm, IST,
SST) and runs as the ``mysql`` user: the rsync state transfer cannot write
files owned by root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import MySQLdb
import pytest

from fastapi_mysqlpool.testing import TemporaryServer, _free_port

PROVIDER = "/usr/lib/galera/libgalera_smm.so"
RUN_AS = "mysql"


class GaleraNode(TemporaryServer):
    def __init__(self, name: str, cluster_address: str, **kwargs: Any) -> None:
        self.name = name
        self.gcomm_port, ist_port, sst_port = _free_port(), _free_port(), _free_port()
        options = {
            "wsrep_on": "ON",
            "wsrep_provider": PROVIDER,
            "wsrep_cluster_name": "mysqlpool-test",
            "wsrep_node_name": name,
            "wsrep_cluster_address": cluster_address,
            "wsrep_node_address": f"127.0.0.1:{self.gcomm_port}",
            "wsrep_provider_options": (
                f"gmcast.listen_addr=tcp://127.0.0.1:{self.gcomm_port};"
                f"ist.recv_addr=127.0.0.1:{ist_port};gcache.size=32M"
            ),
            "wsrep_sst_method": "rsync",
            "wsrep_sst_receive_address": f"127.0.0.1:{sst_port}",
            "binlog_format": "ROW",
            "innodb_autoinc_lock_mode": 2,
            "innodb_buffer_pool_size": "32M",
            "wsrep_slave_threads": 2,
        }
        super().__init__(options=options, startup_timeout=90, **kwargs)

    @property
    def base_dir(self) -> Path:
        base = super().base_dir
        if base.stat().st_uid != pwd.getpwnam(RUN_AS).pw_uid:
            shutil.chown(base, RUN_AS, RUN_AS)
        return base

    def _user_args(self) -> list[str]:
        return [f"--user={RUN_AS}"]

    def start(self) -> GaleraNode:
        if (self.datadir / "mysql").exists():
            for path in self.base_dir.rglob("*"):  # root may have written some
                with contextlib.suppress(OSError):
                    shutil.chown(path, RUN_AS, RUN_AS)
        super().start()
        wait_synced(self)
        return self

    def status(self, name: str) -> str:
        with contextlib.closing(self.connect(database=None)) as conn:
            cursor = conn.cursor()
            cursor.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
            row = cursor.fetchone()
            return str(row[1]) if row else ""


def wait_synced(node: TemporaryServer, timeout: float = 90) -> None:
    """Until the node says Synced (it answers before that, with 1047)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(MySQLdb.Error):
            if (
                isinstance(node, GaleraNode)
                and node.status("wsrep_local_state_comment") == "Synced"
            ):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{node} never synced:\n{node.log_tail()}")
        time.sleep(0.1)  # the node's state: nothing to wait on


def available() -> bool:
    return (
        os.path.exists(PROVIDER)
        and shutil.which("rsync") is not None
        and os.geteuid() == 0  # to hand the nodes' files to the mysql user
    )


@contextlib.contextmanager
def galera_cluster() -> Iterator[list[GaleraNode]]:
    if not available():
        pytest.skip("needs galera-4, rsync, and root (to run nodes as mysql)")
    with contextlib.ExitStack() as stack:
        first = GaleraNode("node1", "gcomm://")
        stack.enter_context(first)
        address = f"gcomm://127.0.0.1:{first.gcomm_port}"
        nodes = [first]
        for name in ("node2", "node3"):
            # One at a time: each joins by a state transfer from a donor.
            nodes.append(stack.enter_context(GaleraNode(name, address)))
        yield nodes
